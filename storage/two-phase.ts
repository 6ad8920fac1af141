/**
 * Two-phase commit of a set of files (Flink's two-phase file sink; Arroyo's TwoPhaseCommitter):
 *
 *   stage(files) ──▶ PendingCommit ──(caller records it durably, e.g. in its LMDB checkpoint)──▶ publish(pending)
 *
 * `stage` writes every file invisibly; `publish` makes each visible under its final,
 * deterministic key and then writes the commit record. Both are idempotent, so recovery simply
 * publishes every recorded PendingCommit again and discards unrecorded staged files.
 */
import { writeCommitRecord, type CommitRecord } from './commit-record.js';
import type { ObjectStore, StagedObject } from './object-store.js';

export interface PendingCommit {
  staged: StagedObject[];
  /** The commit record to write once every file is visible (its `added` is filled by stage). */
  record: CommitRecord;
}

export interface StageFile {
  key: string;
  body: Uint8Array;
  rows: number;
}

export type CommitDraft = Omit<CommitRecord, 'added' | 'removed' | 'time'> & { removed?: CommitRecord['removed'] };

export class TwoPhaseCommitter {
  constructor(private readonly store: ObjectStore) {}

  async stage(files: StageFile[], draft: CommitDraft): Promise<PendingCommit> {
    const staged = await Promise.all(files.map((f) => this.store.stage(f.key, f.body)));
    return {
      staged,
      record: {
        ...draft,
        time: new Date().toISOString(),
        added: files.map((f) => ({ key: f.key, rows: f.rows, bytes: f.body.byteLength })),
        removed: draft.removed ?? [],
      },
    };
  }

  async publish(pending: PendingCommit): Promise<void> {
    await Promise.all(pending.staged.map((s) => this.store.publish(s)));
    await writeCommitRecord(this.store, pending.record);
  }

  /**
   * Recovery: publishes every recorded commit, then discards the staged files that no recorded
   * commit names and that `owns` selects (a shard only touches its own temps).
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
