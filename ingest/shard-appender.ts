/**
 * Group commit at the batch level: the events of one shard from every concurrent request
 * become ONE Arrow record per window, appended to the shard's log once.
 *
 *   add(rows) ──▶ open batch ──cut──▶ toIPC ──▶ log.append ──fsync──▶ onDurable ──▶ waiters resolve
 *                                                       (requests ack after ALL their shards resolve)
 *   cut when: maxRows reached │ maxDelayMs after the first row while the log is idle (linger; 0 =
 *             end of the event-loop turn) │ the append in flight completes (the log was busy anyway)
 *
 * While an fsync runs, new rows accumulate and go out together when it completes — under load
 * batches grow with the disk's latency and encoding/fsync costs are paid per batch, not per
 * request; idle, a row waits at most maxDelayMs before its fsync starts.
 */
import type { ShardLog } from '../log/log.js';
import { IngestBatchBuilder, type IngestRow } from './batch-builder.js';
import type { GroupCommitOptions } from './options.js';

type OnDurable = (shard: number, offset: number, payload: Uint8Array, rows: number) => void;

interface Waiter {
  resolve: (offset: number) => void;
  reject: (err: unknown) => void;
}

export class ShardAppender {
  private readonly builder: IngestBatchBuilder;
  private waiters: Waiter[] = [];
  private immediate: NodeJS.Immediate | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** Appends in flight, oldest first. */
  private readonly inFlight = new Set<Promise<void>>();

  constructor(
    readonly shard: number,
    private readonly log: ShardLog,
    private readonly options: GroupCommitOptions,
    private readonly onDurable: OnDurable | undefined,
  ) {
    this.builder = new IngestBatchBuilder(options.maxRows);
  }

  /** Rows waiting in the open batch. */
  get openRows(): number {
    return this.builder.length;
  }

  /**
   * Queues rows; resolves with the offsets of the log records that hold them (one per batch
   * they landed in), once durable. Rejects when an append fails: none of them is acknowledged.
   */
  add(rows: readonly IngestRow[]): Promise<number[]> {
    const parts: Array<Promise<number>> = [];
    let i = 0;
    while (i < rows.length) {
      const b = this.builder;
      while (i < rows.length && !b.full) b.push(rows[i++]!);
      parts.push(new Promise<number>((resolve, reject) => this.waiters.push({ resolve, reject })));
      if (b.full) this.cut();
    }
    if (this.builder.length > 0) this.schedule();
    return parts.length === 1 ? parts[0]!.then((o) => [o]) : Promise.all(parts);
  }

  private schedule(): void {
    // While an append is in flight the log is busy anyway: the batch is cut when it completes.
    if (this.inFlight.size > 0) return;
    if (this.options.maxDelayMs === 0) this.immediate ??= setImmediate(() => ((this.immediate = undefined), this.inFlight.size === 0 && this.cut()));
    else this.timer ??= setTimeout(() => ((this.timer = undefined), this.inFlight.size === 0 && this.cut()), this.options.maxDelayMs);
  }

  /** Encodes the open batch and appends it; its waiters resolve when the record is durable. */
  private cut(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const rows = this.builder.length;
    if (rows === 0) return;
    const waiters = this.waiters;
    this.waiters = [];
    let payload: Uint8Array;
    try {
      payload = this.builder.toIPC();
    } catch (err) {
      for (const w of waiters) w.reject(err);
      return;
    } finally {
      this.builder.reset();
    }
    const done = this.log.append(payload).then(
      (offset) => {
        try {
          this.onDurable?.(this.shard, offset, payload, rows);
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
      if (this.inFlight.size === 0 && this.builder.length > 0) this.cut();
    });
  }

  /** Cuts what is queued and waits for every append to settle. */
  async drain(): Promise<void> {
    this.cut();
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }
}
