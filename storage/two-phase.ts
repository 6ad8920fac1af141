/**
 * Two-phase commit of a set of files (Flink's two-phase file sink; Arroyo's TwoPhaseCommitter):
 *
 *   stage(files) ──▶ PendingCommit ──(caller records it durably, e.g. in its LMDB checkpoint)──▶ publish(pending)
 *        │                                                                                          │
 *   crash here: the staged temps are unrecorded → recover() discards them        crash here: recover() publishes again
 *
 * `stage` writes every file invisibly (under `_sluice/staging/`); `publish` makes each visible
 * under its final, deterministic key and then writes the commit record. Both are idempotent:
 * staging the same key again overwrites it, publishing an already published file is a no-op, and
 * the commit record has a deterministic id. So recovery publishes every recorded PendingCommit
 * again and discards the staged files no record names — no file is lost or doubled.
 */
import { createHash } from 'node:crypto';
import { commitRecordKey, writeCommitRecord, type CommitRecord } from './commit-record.js';
import type { ObjectStore, StagedObject } from './object-store.js';

/** What `stage` returns and the caller persists: plain JSON (no buffers), safe for msgpack/LMDB. */
export interface PendingCommit {
  staged: StagedObject[];
  /** The commit record to write once every file is visible (its `added` is filled by stage). */
  record: CommitRecord;
}

/** A file to commit. `body` is only read during `stage`. */
export interface StageFile {
  /** Final key, deterministic for the data it holds (e.g. `partKey(table, start, partName(shard, first, last))`). */
  key: string;
  body: Uint8Array;
  rows: number;
}

/** The record fields the caller chooses; `added` comes from the files, `time` from the clock. */
export type CommitDraft = Omit<CommitRecord, 'added' | 'removed' | 'time'> & { removed?: CommitRecord['removed'] };

export interface TwoPhaseCommitterOptions {
  /** Clock for record times, epoch ms. Default Date.now. */
  now?: () => number;
  /** How many files to stage or publish at once. Default 8. */
  concurrency?: number;
  /**
   * Runs right before every stage and every publish (recovery's included) and refuses them by
   * throwing: an engine node's fencing check (engine/lease-fence.ts). Nothing of the commit is
   * visible when it throws (and before a stage, nothing is written).
   */
  guard?: () => Promise<void>;
}

export class TwoPhaseCommitter {
  private readonly now: () => number;
  private readonly concurrency: number;
  private readonly guard: (() => Promise<void>) | undefined;

  constructor(
    private readonly store: ObjectStore,
    options: TwoPhaseCommitterOptions = {},
  ) {
    this.now = options.now ?? Date.now;
    this.concurrency = Math.max(1, options.concurrency ?? 8);
    this.guard = options.guard;
  }

  /**
   * Phase one: stores every file invisibly and returns what to record. Without a draft the
   * record is a 'flush' with an id hashed from the keys (deterministic for the same files).
   */
  async stage(files: StageFile[], draft?: CommitDraft): Promise<PendingCommit> {
    await this.guard?.();
    const staged = await mapLimit(files, this.concurrency, (f) => this.store.stage(f.key, f.body));
    const d: CommitDraft = draft ?? { id: `files-${createHash('sha1').update(files.map((f) => f.key).sort().join('\n')).digest('hex').slice(0, 16)}`, kind: 'flush' };
    return {
      staged,
      record: {
        ...d,
        time: new Date(this.now()).toISOString(),
        added: files.map((f) => ({ key: f.key, rows: f.rows, bytes: f.body.byteLength })),
        removed: d.removed ?? [],
      },
    };
  }

  /**
   * Phase two: publishes every staged file, then writes the commit record. Idempotent — also
   * when the commit completed earlier and compaction or retention has since removed its files
   * (staged and final copies both gone): the existing commit record proves it was published.
   */
  async publish(pending: PendingCommit): Promise<void> {
    await this.guard?.();
    try {
      await mapLimit(pending.staged, this.concurrency, (s) => this.store.publish(s));
    } catch (err) {
      if ((await this.store.get(commitRecordKey(pending.record.id))) !== undefined) return;
      throw err;
    }
    await writeCommitRecord(this.store, pending.record);
  }

  /**
   * Recovery: publishes every recorded commit, then discards the staged files that no recorded
   * commit names and that `owns` selects (a shard only touches its own temps, e.g.
   * `(k) => k.includes('/part-s3-')`).
   */
  async recover(recorded: PendingCommit[], owns: (stagingKey: string) => boolean = () => true): Promise<{ published: number; discarded: number }> {
    let published = 0;
    for (const p of recorded) {
      await this.publish(p);
      published += p.staged.length;
    }
    const keep = new Set(recorded.flatMap((p) => p.staged.map((s) => s.stagingKey)));
    const discarded = await this.store.discardStaged(keep, owns);
    return { published, discarded };
  }
}

/** Runs `fn` over `items` with at most `limit` in flight; results in input order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < items.length; i = next++) out[i] = await fn(items[i]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
