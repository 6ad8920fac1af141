/**
 * What the durable log holds that the engine has not committed yet: ingest's bound on the backlog
 * that waits on disk (options.maxBacklogBytes). Ingest appends faster than the engine commits
 * under overload; the events wait in the log (not in memory), but the log must not grow until the
 * disk is full, and what the engine has processed but not checkpointed is held in its memory.
 *
 *   ShardAppender ─durable(shard, offset, rows, bytes)─▶ per-shard queue of (offset, rows, bytes)
 *   engine checkpoint ─log.truncateBefore(committed + 1)─▶ committed(shard, before) pops the queue
 *
 * The engine reports a commit by truncating the shard's log below it (coordinator: after every
 * checkpoint that advanced the shard), in both engine modes; {@link reportCommits} hooks that call.
 * Records in the log when the server started (left uncommitted by an earlier run) are counted as
 * one block at the shard's durable mark, and leave the count when the engine first commits past it.
 *
 * Each record keeps when it became durable, so the same queues also tell how far the engine's
 * processing is behind the acknowledgements ({@link UncommittedLog.lagMs}: ingest.maxLagMs).
 */
import type { ShardLog } from '../log/log.js';

/** Framing of a segment-log record (crc, length, offset) on top of its payload. */
const RECORD_HEADER_BYTES = 16;

class ShardQueue {
  offsets: number[] = [];
  rows: number[] = [];
  bytes: number[] = [];
  /** performance.now() when the record became durable (monotonic: a wall-clock step must not look like lag). */
  at: number[] = [];
  head = 0;
}

export class UncommittedLog {
  private readonly queues: ShardQueue[];
  private totalBytes = 0;
  private totalEvents = 0;

  constructor(shards: number) {
    this.queues = Array.from({ length: shards }, () => new ShardQueue());
  }

  /** Bytes (framing included) of durable records the engine has not committed. */
  get bytes(): number {
    return this.totalBytes;
  }

  /** Events in them (records present at start count 0 events: only their bytes are known). */
  get events(): number {
    return this.totalEvents;
  }

  /** Records found in a shard's log at start (`bytes` on disk) whose last offset is `lastOffset`. */
  existing(shard: number, lastOffset: number, bytes: number, now = performance.now()): void {
    if (bytes > 0 && lastOffset >= 0) this.push(shard, lastOffset, 0, bytes, now);
  }

  /** A record became durable (ingest's onDurable, before its acks). */
  durable(shard: number, offset: number, rows: number, payloadBytes: number, now = performance.now()): void {
    this.push(shard, offset, rows, payloadBytes + RECORD_HEADER_BYTES, now);
  }

  /**
   * How long the oldest record the engine has not processed yet has been durable (acknowledged),
   * ms; 0 when it has processed everything. `processed[shard]`: the offset of the last record the
   * shard processed; null leaves the shard out.
   */
  lagMs(processed: ReadonlyArray<number | null>, now = performance.now()): number {
    let oldest = now;
    for (let s = 0; s < this.queues.length; s++) {
      const done = processed[s];
      if (done === null || done === undefined) continue;
      const q = this.queues[s]!;
      // The first record above `done` (offsets ascend): binary search from the head.
      let lo = q.head;
      let hi = q.offsets.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (q.offsets[mid]! <= done) lo = mid + 1;
        else hi = mid;
      }
      if (lo < q.offsets.length && q.at[lo]! < oldest) oldest = q.at[lo]!;
    }
    return now - oldest;
  }

  /** The engine committed every record of `shard` below `before`. */
  committed(shard: number, before: number): void {
    const q = this.queues[shard];
    if (q === undefined) return;
    while (q.head < q.offsets.length && q.offsets[q.head]! < before) {
      this.totalBytes -= q.bytes[q.head]!;
      this.totalEvents -= q.rows[q.head]!;
      q.head++;
    }
    // Drop the consumed prefix now and then, not at every commit.
    if (q.head > 1024 && q.head * 2 > q.offsets.length) {
      q.offsets = q.offsets.slice(q.head);
      q.rows = q.rows.slice(q.head);
      q.bytes = q.bytes.slice(q.head);
      q.at = q.at.slice(q.head);
      q.head = 0;
    }
  }

  private push(shard: number, offset: number, rows: number, bytes: number, at: number): void {
    const q = this.queues[shard];
    if (q === undefined) return;
    q.offsets.push(offset);
    q.rows.push(rows);
    q.bytes.push(bytes);
    q.at.push(at);
    this.totalBytes += bytes;
    this.totalEvents += rows;
  }
}

/**
 * Makes `log.truncateBefore(before)` (the engine's commit report) also tell `uncommitted`. The
 * log object is shared with the engine side (it calls truncateBefore), so the hook is on the
 * instance: the engine keeps its reference and its type.
 */
export function reportCommits(log: ShardLog, uncommitted: UncommittedLog): void {
  const shard = log.shard;
  const truncate = log.truncateBefore.bind(log);
  log.truncateBefore = (before: number): Promise<void> => {
    uncommitted.committed(shard, before);
    return truncate(before);
  };
}
