/**
 * The durable log contract: the spine, and the only thing ingest and the engine share (design:
 * "The log is an interface from the start"). Ingest appends and acknowledges after the append
 * resolved; the engine reads ranges from its checkpointed offset and truncates below what every
 * consumer committed. One `ShardLog` per shard; the local implementation is `segment-log.ts`
 * (fsync'd segment files, `segment-reader.ts` reads them from another process); a replicated
 * stream (NATS JetStream) implements the same contract for scale-out.
 *
 * Offsets are per shard and strictly increasing in the order every reader sees, across restarts and
 * truncations. A log with `denseOffsets` true (or absent: the local log) numbers them 0, 1, 2, …
 * with no gap; one with `denseOffsets: false` (JetStream: the stream sequence, so several writers
 * may append to one shard at once) leaves gaps, and a consumer must then expect any higher offset
 * next, never `last + 1`.
 */
export interface LogRecord {
  readonly offset: number;
  /** The record's bytes (an Arrow IPC stream of one `ingestSchema` batch). Owned by the caller. */
  readonly payload: Uint8Array;
}

export interface ShardLog {
  readonly shard: number;
  /**
   * False when offsets have gaps (see the file comment). Absent means true. Consumers check it
   * instead of assuming `offset + 1` follows `offset`.
   */
  readonly denseOffsets?: boolean;
  /** Offset the next appended record will get (dense); a lower bound of it (sparse). */
  readonly nextOffset: number;
  /** Bytes appended whose fsync has not completed yet (for backpressure). */
  readonly pendingBytes: number;
  /**
   * The durable mark: every record with a lower offset is durable and readable, and no record
   * with a lower offset can appear later.
   */
  readonly durableNextOffset: number;
  /**
   * Appends one record. Resolves with its offset only after the record is durable (its bytes
   * and framing fsync'd); rejects if the write or fsync failed, in which case the record must be
   * treated as not written (never acknowledged). Concurrent appends are group-committed.
   */
  append(payload: Uint8Array): Promise<number>;
  /** Yields durable records with `offset >= fromOffset`, in offset order. */
  read(fromOffset: number): AsyncIterable<LogRecord>;
  /**
   * Sparse logs: the record at exactly `offset`, or undefined if there is none. A consumer that
   * knows a record's offset (from its own append) fetches it when a read passed over it.
   */
  readAt?(offset: number): Promise<LogRecord | undefined>;
  /** Drops whole segments whose records are all below `offset` (every consumer is past them). */
  truncateBefore(offset: number): Promise<void>;
  /** Waits for in-flight appends, then closes files. */
  close(): Promise<void>;
}
