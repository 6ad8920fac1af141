/**
 * The durable log contract: the spine, and the only thing ingest and the engine share (design:
 * "The log is an interface from the start"). Ingest appends and acknowledges after the append
 * resolved; the engine reads ranges from its checkpointed offset and truncates below what every
 * consumer committed. One `ShardLog` per shard; the local implementation is `segment-log.ts`
 * (fsync'd segment files, `segment-reader.ts` reads them from another process); a replicated
 * stream (NATS JetStream) implements the same contract for scale-out.
 *
 * Offsets are per shard, dense and monotonic: the first record ever appended gets 0, the next 1,
 * and so on, across restarts and truncations.
 */
export interface LogRecord {
  readonly offset: number;
  /** The record's bytes (an Arrow IPC stream of one `ingestSchema` batch). Owned by the caller. */
  readonly payload: Uint8Array;
}

export interface ShardLog {
  readonly shard: number;
  /** Offset the next appended record will get. */
  readonly nextOffset: number;
  /** Bytes appended whose fsync has not completed yet (for backpressure). */
  readonly pendingBytes: number;
  /** The durable mark: every record with a lower offset is durable and readable. */
  readonly durableNextOffset: number;
  /**
   * Appends one record. Resolves with its offset only after the record is durable (its bytes
   * and framing fsync'd); rejects if the write or fsync failed, in which case the record must be
   * treated as not written (never acknowledged). Concurrent appends are group-committed.
   */
  append(payload: Uint8Array): Promise<number>;
  /** Yields durable records with `offset >= fromOffset`, in offset order. */
  read(fromOffset: number): AsyncIterable<LogRecord>;
  /** Drops whole segments whose records are all below `offset` (every consumer is past them). */
  truncateBefore(offset: number): Promise<void>;
  /** Waits for in-flight appends, then closes files. */
  close(): Promise<void>;
}
