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
 * request; idle, a row waits at most maxDelayMs before its fsync starts. The cycle itself (waiters,
 * linger, appends in flight, drain) is ingest/group-commit.ts, shared with the DLQ's appender.
 */
import type { ShardLog } from '../log/log.js';
import { IngestBatchBuilder, type IngestRow } from './batch-builder.js';
import { GroupCommit } from './group-commit.js';
import type { GroupCommitOptions } from './options.js';

type OnDurable = (shard: number, offset: number, payload: Uint8Array, rows: number) => void;

export class ShardAppender {
  private readonly builder: IngestBatchBuilder;
  private readonly commits: GroupCommit;

  constructor(
    readonly shard: number,
    log: ShardLog,
    options: GroupCommitOptions,
    onDurable: OnDurable | undefined,
  ) {
    const builder = (this.builder = new IngestBatchBuilder(options.maxRows));
    this.commits = new GroupCommit(log, options.maxDelayMs, {
      size: () => builder.length,
      take: () => {
        try {
          return builder.toIPC();
        } finally {
          builder.reset();
        }
      },
      durable: onDurable && ((offset, payload, rows) => onDurable(shard, offset, payload, rows)),
    });
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
      parts.push(this.commits.wait());
      if (b.full) this.commits.cut();
    }
    if (this.builder.length > 0) this.commits.schedule();
    return parts.length === 1 ? parts[0]!.then((o) => [o]) : Promise.all(parts);
  }

  /** Cuts what is queued and waits for every append to settle. */
  drain(): Promise<void> {
    return this.commits.drain();
  }
}
