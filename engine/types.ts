/**
 * Every message between the coordinator (main thread) and the shard workers, in one place.
 * Tasks are discriminated on `kind`; results are small plain objects. Batch bytes cross threads
 * as a transferred ArrayBuffer, never as structured-cloned objects.
 *
 *   main thread                                   worker (piscina, shard pinned)
 *   ───────────                                   ──────────────────────────────
 *   open ───────────────────────────────────────▶ recover 2PC, restore state
 *        ◀─────────────────────────────────────── { checkpointOffset }
 *   batch{offsets, ipc bytes (transferred)} ────▶ per record: dedup → watermark → sessionize → aggregate → buffer
 *   (a range of consecutive log records per task: the coordinator pulls from the shard's log from
 *    its checkpoint on, in ranges that grow with the lag)
 *        ◀─────────────────────────────────────── { rows, duplicates, tooLate, watermark }
 *   advance{watermarkMs} (idle shards only) ────▶ emit closed windows/sessions
 *   checkpoint ─────────────────────────────────▶ encode → stage → LMDB txn → publish
 *        ◀─────────────────────────────────────── { offset, closed windows }
 *   (any task)  ◀───────────────────────────────── TaskFailure { error, stopped } instead of a result
 *   close ──────────────────────────────────────▶ final checkpoint, close LMDB
 */
import type { LeaseFence } from './lease-fence.js';
import type { StateSnapshotOptions } from './state-snapshot.js';
import type { SerializedError } from '../common/errors.js';
import type { EngineOptions } from './options.js';

/** Options a shard runtime needs (a serializable subset of EngineOptions). */
/** What a shard runtime knows of its log: `denseOffsets` false when offsets have gaps (log/log.ts; then no `offset_gap` check). */
export interface ShardLogShape {
  denseOffsets?: boolean;
}

export type ShardRuntimeOptions = ShardLogShape & Pick<
  EngineOptions,
  | 'shards'
  | 'dataDir'
  | 'lake'
  | 's3Endpoint'
  | 'allowedLatenessMs'
  | 'sessionGapMs'
  | 'dedupTtlMs'
  | 'compression'
  | 'targetFileBytes'
  | 'metricEventTypes'
  | 'workerNice'
  | 'maxRowsPerParquetCall'
  | 'maxBytesPerParquetCall'
  | 'encodeChunkRows'
  | 'encodeChunkBytes'
> & {
  /** On an engine node: the shard's lease, checked right before every publish (engine/lease-fence.ts). */
  fence?: LeaseFence;
  /**
   * Ship the shard's LMDB state to the object store with every checkpoint and restore it from
   * there when the local copy is missing or behind (engine/state-snapshot.ts; an engine node
   * sets it for failover). `true`: default base cadence. Default off.
   */
  stateInObjectStore?: boolean | StateSnapshotOptions;
  /** Entries the dedup hot table keeps before cold buckets are merged and searched in LMDB (tests). Default 4 M. */
  dedupHotCapacity?: number;
};

export type ShardTask =
  | { kind: 'open'; shard: number; options: ShardRuntimeOptions }
  | {
      kind: 'batch';
      shard: number;
      /** Consecutive log offsets, ascending, one per payload. */
      offsets: number[];
      /** Arrow IPC stream bytes of each record (one ingestSchema batch); transferred, owned by the worker after posting. */
      payloads: ArrayBuffer[];
    }
  | { kind: 'advance'; shard: number; watermarkMs: number }
  | { kind: 'checkpoint'; shard: number }
  | { kind: 'live'; shard: number }
  | { kind: 'close'; shard: number }
  /** Erasure: forget these users' open sessions (memory and LMDB). */
  | { kind: 'purge-users'; shard: number; users: string[] }
  /** Erasure: checkpoint, close, compact the shard's LMDB file (no freed page keeps purged bytes), reopen. */
  | { kind: 'compact-state'; shard: number };

/** A shard's event-time progress: its watermark, or idle when it has seen nothing to go on. */
export type ShardWatermark = { kind: 'event-time'; timeMs: number } | { kind: 'idle' };

export interface OpenResult {
  shard: number;
  /** Last log offset whose effects are committed; -1 when the shard has never checkpointed. */
  checkpointOffset: number;
  /** Staged files the recovery published (recorded) and discarded (unrecorded). */
  recoveredPublished: number;
  recoveredDiscarded: number;
  /** Event time up to which the shard has committed its window partials (−Infinity if none). */
  emittedWatermarkMs: number;
  /** The same for daily windows, which may wait for their day's sessions (ShardPipeline `dailyFrontier`). */
  emittedDailyMs: number;
  /** The watermark of the restored state (its newest event time less the lateness): what the idle advance needs before any new record comes. */
  watermark: ShardWatermark;
}

export interface BatchResult {
  shard: number;
  /** Last log offset of the task's range. */
  offset: number;
  /** Log records in the range. */
  records: number;
  rows: number;
  /** Valid unique rows sent to silver (including too-late ones). */
  silverRows: number;
  duplicates: number;
  tooLate: number;
  watermark: ShardWatermark;
  /** Bytes of Arrow data buffered for the next checkpoint (the coordinator checkpoints early past the target). */
  bufferedBytes: number;
  /**
   * Log records of this task that could not be processed (undecodable, unexpected schema, or the
   * pipeline threw): each went to the DLQ (dlq/, committed with the shard's next checkpoint) and
   * the shard went on with the next record. Empty normally.
   */
  quarantined: QuarantinedRecord[];
}

/** A log record the shard put into the DLQ instead of processing (poison quarantine). */
export interface QuarantinedRecord {
  offset: number;
  /** Error code, e.g. `undecodable_record`, `unexpected_schema`. */
  code: string;
  message: string;
  bytes: number;
}

/**
 * What a worker answers instead of a result when a task failed: the error as plain data (a
 * thrown Error would lose `domain`, `retry` and `code` crossing the thread). `stopped`: the
 * shard refuses further tasks (a non-retryable failure); otherwise the task may be retried
 * (a checkpoint that failed on the disk, the object store or LMDB keeps its buffers and its
 * staged-but-unpublished commit, and finishes on the next attempt).
 */
export interface TaskFailure {
  taskFailed: true;
  shard: number;
  error: SerializedError;
  stopped: boolean;
}

export interface CheckpointResult {
  shard: number;
  /** Last log offset covered; -1 when nothing was ever processed. */
  offset: number;
  /** Files published by this checkpoint. */
  files: number;
  /** Start times (ms) of hourly / daily windows this shard emitted partials for in this checkpoint. */
  hourlyWindows: number[];
  dailyWindows: number[];
  /** Event time up to which window partials are now committed (−Infinity if none); daily ones. */
  emittedWatermarkMs: number;
  emittedDailyMs: number;
  durationMs: number;
  /** The dedup hot table after the checkpoint: ids held and bytes (memory that grows to a cap by design). */
  dedupHot: { ids: number; bytes: number };
}

/** Counts of the shard's still-open current windows, for the live view. */
export interface LiveResult {
  shard: number;
  watermark: ShardWatermark;
  /** Per open hourly window start → totals over all dimensions ('ALL' row). */
  hourly: Array<{ windowStart: number; events: number; activeUsers: number; sessions: number; notificationViews: number; notificationOpens: number }>;
  /** Per open daily window: sessions starting that day that have closed, and of them bounces (one event). */
  daily: Array<{ windowStart: number; sessionsClosed: number; bounces: number }>;
  openSessions: number;
}

/** What a `purge-users` task removed. */
export interface PurgeResult {
  shard: number;
  /** Open sessions dropped (their user's id strings are gone from the shard's state). */
  openSessions: number;
}

export type ShardResult = OpenResult | BatchResult | CheckpointResult | LiveResult | PurgeResult | TaskFailure | undefined;
