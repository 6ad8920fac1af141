/**
 * The cut-and-append cycle of a group-committed log (ingest/shard-appender.ts for the shard
 * logs, ingest/dead-letters.ts for the DLQ log): the waiters of the open batch, the linger, the
 * appends in flight, drain. The owner fills the batch; `cut` takes it as one record and appends it.
 *
 *   wait() ─▶ open batch ──cut──▶ batch.take() ─▶ log.append ──durable──▶ batch.durable?() ─▶ waiters resolve
 *   cut when: the owner says so (full) │ maxDelayMs after schedule() while the log is idle (linger;
 *             0 = end of the event-loop turn) │ the append in flight completes (the log was busy anyway)
 */
import type { ShardLog } from '../log/log.js';

/** The batch a GroupCommit cuts: its owner fills it. */
export interface OpenBatch {
  /** Rows in the open batch. */
  size(): number;
  /** The open batch as one record's bytes (fresh, owned by the caller); empties the batch. */
  take(): Uint8Array;
  /** Called once a record is durable, before its waiters resolve. */
  durable?(offset: number, payload: Uint8Array, rows: number): void;
}

interface Waiter {
  resolve: (offset: number) => void;
  reject: (err: unknown) => void;
}

export class GroupCommit {
  private waiters: Waiter[] = [];
  private immediate: NodeJS.Immediate | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** Appends in flight, oldest first. */
  private readonly inFlight = new Set<Promise<void>>();

  constructor(
    private readonly log: ShardLog,
    private readonly maxDelayMs: number,
    private readonly batch: OpenBatch,
  ) {}

  /** Resolves with the offset of the record the open batch becomes, once it is durable; rejects if its append fails. */
  wait(): Promise<number> {
    return new Promise<number>((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** Cuts the open batch after the linger, or when the append in flight completes. */
  schedule(): void {
    // While an append is in flight the log is busy anyway: the batch is cut when it completes.
    if (this.inFlight.size > 0) return;
    if (this.maxDelayMs === 0) this.immediate ??= setImmediate(() => ((this.immediate = undefined), this.inFlight.size === 0 && this.cut()));
    else this.timer ??= setTimeout(() => ((this.timer = undefined), this.inFlight.size === 0 && this.cut()), this.maxDelayMs);
  }

  /** Takes the open batch as one record and appends it; its waiters resolve when it is durable. */
  cut(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const rows = this.batch.size();
    if (rows === 0) return;
    const waiters = this.waiters;
    this.waiters = [];
    let payload: Uint8Array;
    try {
      payload = this.batch.take();
    } catch (err) {
      for (const w of waiters) w.reject(err);
      return;
    }
    const done = this.log.append(payload).then(
      (offset) => {
        try {
          this.batch.durable?.(offset, payload, rows);
        } finally {
          for (const w of waiters) w.resolve(offset);
        }
      },
      (err: unknown) => {
        for (const w of waiters) w.reject(err);
      },
    );
    this.inFlight.add(done);
    void done.finally(() => {
      this.inFlight.delete(done);
      // Rows that piled up during the fsync go out now rather than at their deadline.
      if (this.inFlight.size === 0 && this.batch.size() > 0) this.cut();
    });
  }

  /** Cuts what is queued and waits for every append to settle. */
  async drain(): Promise<void> {
    this.cut();
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }
}
