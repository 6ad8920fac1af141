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
 *
 * Recovery needs the record of the PendingCommit, which the caller keeps on its own disk. When
 * another process may have to finish the commit (an engine node taking a dead node's shard over
 * knows nothing of its disk), `intentKey` also keeps it in the store for the publish's duration:
 *
 *   publish: guard ─▶ put intent (the PendingCommit) ─▶ publish files ─▶ commit record ─▶ delete intent
 *   the next owner: `finishIntent` — record exists: delete the intent; else publish it (roll forward)
 *
 * Without it, a publish cut halfway by a crash leaves visible files that no commit record names
 * and that the next owner, replaying the same offsets in other ranges, writes again under other
 * names: the same rows twice for every reader that lists files.
 */
import { createHash } from 'node:crypto';
import { commitRecordKey, writeCommitRecord, type CommitRecord } from './commit-record.js';
import type { ObjectStore, StagedObject } from './object-store.js';
import { mapLimit } from '../common/map-limit.js';

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
  /** Keeps each PendingCommit at this key while it is published, for `finishIntent` by another process (see the file comment). */
  intentKey?: string;
}

const intentEncoder = new TextEncoder();
const intentDecoder = new TextDecoder();

export class TwoPhaseCommitter {
  private readonly now: () => number;
  private readonly concurrency: number;
  private readonly guard: (() => Promise<void>) | undefined;
  private readonly intentKey: string | undefined;

  constructor(
    private readonly store: ObjectStore,
    options: TwoPhaseCommitterOptions = {},
  ) {
    this.now = options.now ?? Date.now;
    this.concurrency = Math.max(1, options.concurrency ?? 8);
    this.guard = options.guard;
    this.intentKey = options.intentKey;
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
    if (this.intentKey !== undefined) await this.store.put(this.intentKey, intentEncoder.encode(JSON.stringify(pending)));
    try {
      await mapLimit(pending.staged, this.concurrency, (s) => this.store.publish(s));
    } catch (err) {
      // Published earlier (compaction or retention may have removed its files since): the record proves it.
      if ((await this.store.get(commitRecordKey(pending.record.id))) === undefined) throw err;
      if (this.intentKey !== undefined) await this.store.delete(this.intentKey);
      return;
    }
    await writeCommitRecord(this.store, pending.record);
    if (this.intentKey !== undefined) await this.store.delete(this.intentKey);
  }

  /**
   * A new owner's first step (before it restores anything from the store): finishes the commit
   * whose publish a previous process began and did not end. Its intent is deleted when the commit
   * record exists or when `current` says it no longer continues what is committed (an ex-owner's
   * that lost to a newer commit); otherwise it is published, under this committer's guard.
   * Returns the number of files it published.
   */
  async finishIntent(current: (pending: PendingCommit) => Promise<boolean>): Promise<number> {
    if (this.intentKey === undefined) return 0;
    const body = await this.store.get(this.intentKey);
    if (body === undefined) return 0;
    const pending = JSON.parse(intentDecoder.decode(body)) as PendingCommit;
    if ((await this.store.get(commitRecordKey(pending.record.id))) !== undefined || !(await current(pending))) {
      await this.store.delete(this.intentKey);
      return 0;
    }
    await this.publish(pending);
    return pending.staged.length;
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
