/**
 * Engine options: defaults and the validator, next to each other (STYLE §8). Only the CLI reads
 * flags and the environment; it composes one `EngineOptions` and hands it here.
 */
import { availableParallelism } from 'node:os';
import { userError } from '../common/errors.js';

export interface EngineOptions {
  /**
   * Number of shards S (shard = murmur3(user_id) mod S). Default: the cores (one shard per engine
   * worker: 2 shards cost 8–11 % less server CPU per event than 4 on 2 cores at 50 % load, with the
   * same max — bench/results/shards-2026-12-04.md). Fixed for the life of a data directory
   * (engine/data-layout.ts: a directory keeps the count it was first started with).
   */
  shards: number;
  /** Worker threads in the pool; shard s runs on worker s mod workers. Default: cores. */
  workers: number;
  /** Local data directory: logs, LMDB checkpoints. */
  dataDir: string;
  /** Lake root: a directory or `s3://bucket/prefix`. */
  lake: string;
  /** Endpoint of an S3-compatible store (path-style), if not AWS. */
  s3Endpoint?: string;
  /** Checkpoint / flush interval in ms: every acknowledged event is committed in silver within about this long. Default 10 s. */
  flushIntervalMs: number;
  /** Target Parquet file size in bytes; a shard checkpoints early when its buffers exceed it. Default 128 MiB. */
  targetFileBytes: number;
  /** Event-time watermark = max event time − allowed lateness. Default 2 h. */
  allowedLatenessMs: number;
  /** Per-user inactivity gap that closes a session. Default 30 min. */
  sessionGapMs: number;
  /** How long an event id is remembered for deduplication. Default 24 h. */
  dedupTtlMs: number;
  /** A shard with no input for this long (processing time) stops holding back the global watermark. Default 30 s. */
  idleTimeoutMs: number;
  /** Parquet compression. Default zstd. */
  compression: 'zstd' | 'snappy' | 'none';
  /** Extra event-type → metric mappings on top of the documented defaults. */
  metricEventTypes?: Partial<Record<'installs' | 'screen_views' | 'notification_views' | 'notification_opens', string[]>>;
  /** Run reconciliation of late events into gold (and background compaction) every this many ms (0 = only on demand). Default 60 s. */
  reconcileIntervalMs: number;
  /**
   * Background compaction (every reconcileIntervalMs) merges the small files of every partition,
   * the open ones included, but only files that together outweigh the big one they would be
   * merged into (storage/compact.ts `convergent`), so a trickle costs O(log n) rewrites per row.
   * 0 = off; any other value = on (its former meaning, "partitions that ended this long ago", no
   * longer applies). Default on.
   */
  compactAfterMs: number;
  /**
   * Scheduling niceness (0–19) of the engine's worker threads. Acks wait on the main thread
   * (ingest, log), while shard processing is asynchronous and bounded by backpressure, so by
   * default the workers yield the CPU to it: on 2 cores this cut p99 ack latency at 10 K Segment
   * events/s from ~390 to ~90 ms. 0 = same priority as the main thread. Default 10. A minimum:
   * a thread already nicer (Sluice itself started under `nice`) keeps its own niceness.
   */
  workerNice: number;
  /**
   * Most rows one Parquet encode call gets (parquet-wasm's heap grows to the biggest call): a
   * shard's buffered rows of a partition are split into several files `…-0`, `…-1` past it.
   * Default 1 000 000.
   */
  maxRowsPerParquetCall: number;
  /** Most in-memory Arrow bytes one Parquet encode call gets (wide rows); split like rows. Default 256 MiB. */
  maxBytesPerParquetCall: number;
  /**
   * Incremental encoding: a shard encodes a partition's buffered rows as soon as they reach this
   * many rows or Arrow bytes (a chunk file committed by the next checkpoint), so a checkpoint
   * encodes only the rest and its duration stays bounded at any load. Defaults 262 144 rows, 8 MiB
   * (bench/results/encode-chunk-2026-12-05.md: against 32 MiB, checkpoints 30–45 % shorter, ack →
   * silver at max 15–30 % sooner, peak RSS ≈ 20 % lower, for 2–9 % more server CPU per event).
   */
  encodeChunkRows: number;
  encodeChunkBytes: number;
  /**
   * Backoff of retried engine work (a failed checkpoint: Parquet encode, object store
   * put/stage/publish, LMDB commit; a failed log reopened): the n-th consecutive failure waits
   * min(retryMaxMs, retryBaseMs × 2^(n−1)) ms before the next attempt. Defaults 250 ms and 30 s.
   */
  retryBaseMs: number;
  retryMaxMs: number;
  /**
   * A shard consumes its log in ranges of consecutive records, one worker task per range: a range
   * is whatever has become durable since the last one (so ranges grow with the lag), up to this
   * many records, bytes or events (rows, read from each record's Arrow headers). Defaults 2 000
   * records, 16 MiB, 16 384 events. The event bound keeps a task short whatever a record holds:
   * an Arrow producer's records hold thousands of events, and 16 MiB of them was a task of
   * ≈ 50 K events, seconds long on a busy machine, which every checkpoint, live view and erasure
   * of the shard had to wait behind. A task's fixed cost (≈ 0.5–1 ms) is < 1 % of 16 K events.
   */
  maxRangeRecords: number;
  maxRangeBytes: number;
  maxRangeEvents: number;
  /**
   * Linger, like Flink's buffer timeout or Kafka's fetch.max.wait.ms: a range costs the engine a
   * fixed ≈ 0.5–1 ms whatever it holds (a worker task, a log read, Arrow decoding, one more batch
   * to coalesce), and under light load records arrive one by one, so each was a range of its own
   * (1.5 records per range at 8 K Segment events/s: bench/results/profile-2026-12-03-quiet.md).
   * A shard with fewer than `rangeMinEvents` events (and fewer than 64 records) waiting waits up
   * to this long for more before it takes a range. It delays a record's processing by at most
   * this, against a flush interval of seconds. 0 = take every record at once. Default 200 ms
   * (against 50 ms: 13–14 records a range instead of 5–6, the server −8 % CPU per event at 8 K
   * Segment events/s: bench/results/linger-2026-12-03b.md).
   */
  rangeLingerMs: number;
  /** Events waiting that end the linger at once. Default 1 000. */
  rangeMinEvents: number;
  /**
   * Durable records a shard keeps in memory for its next ranges; past it, the backlog waits in
   * the log on disk and is read back from there (memory stays bounded whatever the lag). Default 32 MiB.
   */
  maxQueuedBytesPerShard: number;
  /**
   * Processed rows a shard holds in memory until a checkpoint commits them (its buffers and
   * encoded chunks). At this bound the shard stops taking ranges and asks for a checkpoint; the
   * backlog waits in the log on disk meanwhile (ingest answers 503 once that is full), so a slow or
   * failing checkpoint (object store down, a long gold merge) cannot grow memory with the traffic.
   * Default 2 × targetFileBytes (a checkpoint starts at targetFileBytes).
   */
  maxUncommittedBytesPerShard: number;
  /**
   * At shutdown (SIGTERM), how long the engine goes on processing the backlog before it commits
   * what it processed and leaves the rest in the log for the next start. Default 60 s.
   */
  shutdownDrainMs: number;
  /**
   * Entries of each shard's in-memory dedup table (recent event ids; older ones are looked up in
   * LMDB): 24–48 bytes each. Default 4 M (see `engineMemoryLimits` for what a memory budget sets).
   */
  dedupHotCapacity: number;
  /**
   * Ship each shard's LMDB state (operator state, dedup index) to the lake with every checkpoint,
   * a delta of what it changed plus a periodic full base, and restore a shard's state from there
   * when its local copy is missing or behind (engine/state-snapshot.ts). What lets another node
   * take a shard over; costs one extra object per checkpoint. Default false (one node).
   */
  stateInObjectStore: boolean;
  /**
   * How long erasure jobs may run after a checkpoint round before they stop at their next step
   * (a file rewritten, a gold window corrected, a phase ended) and go on after the next round:
   * the next checkpoint waits for them, so one long job no longer holds every commit back for its
   * whole run (at 5 s flushes three jobs kept the last checkpoint 73 s old). Default: the flush
   * interval. 0: one step per round.
   */
  erasureBudgetMs?: number;
}

export function defaultEngineOptions(): EngineOptions {
  const cores = Math.max(1, availableParallelism());
  return {
    shards: cores,
    workers: cores,
    dataDir: './data',
    lake: './lake',
    flushIntervalMs: 10_000,
    targetFileBytes: 128 * 1024 * 1024,
    allowedLatenessMs: 2 * 3_600_000,
    sessionGapMs: 30 * 60_000,
    dedupTtlMs: 24 * 3_600_000,
    idleTimeoutMs: 30_000,
    compression: 'zstd',
    reconcileIntervalMs: 60_000,
    compactAfterMs: 3_600_000,
    workerNice: 10,
    maxRowsPerParquetCall: 1_000_000,
    maxBytesPerParquetCall: 256 * 1024 * 1024,
    encodeChunkRows: 262_144,
    encodeChunkBytes: 8 * 1024 * 1024,
    retryBaseMs: 250,
    retryMaxMs: 30_000,
    maxRangeRecords: 2_000,
    maxRangeBytes: 16 * 1024 * 1024,
    maxRangeEvents: 16_384,
    rangeLingerMs: 200,
    rangeMinEvents: 1_000,
    maxQueuedBytesPerShard: 32 * 1024 * 1024,
    maxUncommittedBytesPerShard: 2 * 128 * 1024 * 1024,
    shutdownDrainMs: 60_000,
    dedupHotCapacity: 4_000_000,
    stateInObjectStore: false,
  };
}

const positiveInt = (v: number): boolean => Number.isInteger(v) && v > 0;

/** Fills defaults and checks every field; throws a user error naming the option and what it must be. */
export function validateEngineOptions(partial: Partial<EngineOptions>): EngineOptions {
  const given = stripUndefined(partial);
  const o: EngineOptions = { ...defaultEngineOptions(), ...given };
  if (given.maxUncommittedBytesPerShard === undefined) o.maxUncommittedBytesPerShard = 2 * o.targetFileBytes;
  if (!positiveInt(o.shards) || o.shards > 4096) throw userError('invalid_option', `shards must be an integer in 1..4096, got ${o.shards}`);
  if (!positiveInt(o.workers) || o.workers > 256) throw userError('invalid_option', `workers must be an integer in 1..256, got ${o.workers}`);
  if (o.workers > o.shards) o.workers = o.shards;
  if (!(o.flushIntervalMs >= 50)) throw userError('invalid_option', `flushIntervalMs must be at least 50 ms, got ${o.flushIntervalMs}`);
  if (!(o.targetFileBytes >= 64 * 1024)) throw userError('invalid_option', `targetFileBytes must be at least 64 KiB, got ${o.targetFileBytes}`);
  if (!(o.allowedLatenessMs >= 0)) throw userError('invalid_option', `allowedLatenessMs must be ≥ 0, got ${o.allowedLatenessMs}`);
  if (!(o.sessionGapMs > 0)) throw userError('invalid_option', `sessionGapMs must be > 0, got ${o.sessionGapMs}`);
  if (!(o.dedupTtlMs >= 60_000)) throw userError('invalid_option', `dedupTtlMs must be at least 1 minute, got ${o.dedupTtlMs}`);
  if (!Number.isInteger(o.workerNice) || o.workerNice < 0 || o.workerNice > 19) throw userError('invalid_option', `workerNice must be an integer in 0..19, got ${o.workerNice}`);
  if (!(o.idleTimeoutMs > 0)) throw userError('invalid_option', `idleTimeoutMs must be > 0, got ${o.idleTimeoutMs}`);
  if (!['zstd', 'snappy', 'none'].includes(o.compression)) throw userError('invalid_option', `compression must be zstd, snappy or none, got ${o.compression}`);
  if (!(o.reconcileIntervalMs >= 0)) throw userError('invalid_option', `reconcileIntervalMs must be ≥ 0, got ${o.reconcileIntervalMs}`);
  if (!(o.compactAfterMs >= 0)) throw userError('invalid_option', `compactAfterMs must be ≥ 0, got ${o.compactAfterMs}`);
  if (!positiveInt(o.maxRowsPerParquetCall)) throw userError('invalid_option', `maxRowsPerParquetCall must be a positive integer, got ${o.maxRowsPerParquetCall}`);
  if (!(Number.isFinite(o.maxBytesPerParquetCall) && o.maxBytesPerParquetCall >= 1024)) throw userError('invalid_option', `maxBytesPerParquetCall must be at least 1 KiB, got ${o.maxBytesPerParquetCall}`);
  if (!(Number.isFinite(o.retryBaseMs) && o.retryBaseMs >= 1)) throw userError('invalid_option', `retryBaseMs must be at least 1 ms, got ${o.retryBaseMs}`);
  if (!(Number.isFinite(o.retryMaxMs) && o.retryMaxMs >= o.retryBaseMs)) throw userError('invalid_option', `retryMaxMs must be ≥ retryBaseMs (${o.retryBaseMs} ms), got ${o.retryMaxMs}`);
  if (!positiveInt(o.encodeChunkRows)) throw userError('invalid_option', `encodeChunkRows must be a positive integer, got ${o.encodeChunkRows}`);
  if (!(Number.isFinite(o.encodeChunkBytes) && o.encodeChunkBytes >= 1024)) throw userError('invalid_option', `encodeChunkBytes must be at least 1 KiB, got ${o.encodeChunkBytes}`);
  if (!positiveInt(o.maxRangeRecords)) throw userError('invalid_option', `maxRangeRecords must be a positive integer, got ${o.maxRangeRecords}`);
  if (!positiveInt(o.maxRangeEvents)) throw userError('invalid_option', `maxRangeEvents must be a positive integer, got ${o.maxRangeEvents}`);
  if (!(Number.isFinite(o.maxRangeBytes) && o.maxRangeBytes >= 1024)) throw userError('invalid_option', `maxRangeBytes must be at least 1 KiB, got ${o.maxRangeBytes}`);
  if (!(Number.isFinite(o.rangeLingerMs) && o.rangeLingerMs >= 0 && o.rangeLingerMs <= 10_000)) throw userError('invalid_option', `rangeLingerMs must be between 0 and 10 000 ms, got ${o.rangeLingerMs}`);
  if (!positiveInt(o.rangeMinEvents)) throw userError('invalid_option', `rangeMinEvents must be a positive integer, got ${o.rangeMinEvents}`);
  if (!(Number.isFinite(o.maxQueuedBytesPerShard) && o.maxQueuedBytesPerShard >= 0)) throw userError('invalid_option', `maxQueuedBytesPerShard must be ≥ 0, got ${o.maxQueuedBytesPerShard}`);
  if (!(Number.isFinite(o.maxUncommittedBytesPerShard) && o.maxUncommittedBytesPerShard >= 64 * 1024)) {
    throw userError('invalid_option', `maxUncommittedBytesPerShard must be at least 64 KiB, got ${o.maxUncommittedBytesPerShard}`);
  }
  if (!(Number.isInteger(o.dedupHotCapacity) && o.dedupHotCapacity >= 1000)) throw userError('invalid_option', `dedupHotCapacity must be an integer ≥ 1000, got ${o.dedupHotCapacity}`);
  if (!(Number.isFinite(o.shutdownDrainMs) && o.shutdownDrainMs >= 0)) throw userError('invalid_option', `shutdownDrainMs must be ≥ 0 ms, got ${o.shutdownDrainMs}`);
  if (typeof o.stateInObjectStore !== 'boolean') throw userError('invalid_option', `stateInObjectStore must be true or false, got ${String(o.stateInObjectStore)}`);
  if (o.erasureBudgetMs !== undefined && !(Number.isFinite(o.erasureBudgetMs) && o.erasureBudgetMs >= 0)) throw userError('invalid_option', `erasureBudgetMs must be ≥ 0 ms, got ${o.erasureBudgetMs}`);
  return o;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Worst-case bytes of one dedup hot-table entry: 12 bytes a slot, load factor 0.25–0.5. */
const DEDUP_ENTRY_BYTES = 48;

/** Floor of the derived encode bounds: below about 1 MiB a chunk is a handful of rows and each file costs more in footers than it holds. */
const MIN_ENCODE_BYTES = 1024 * 1024;

/**
 * The engine's per-shard memory bounds for a memory budget (`--max-memory`, ingest and engine
 * together): half of the budget is shared out to the shards, and each shard's half of that goes
 * to rows held until a checkpoint (maxUncommittedBytesPerShard, at most 2 × targetFileBytes),
 * the other half to its dedup hot table (at most 4 M entries). The other half of the budget is
 * left for what does not scale with shards: V8 heaps, Parquet encoders, ingest. With the 75 %-of-RAM
 * default on a machine of a few GiB or more, these are the defaults; a small budget shrinks them.
 *
 * The Parquet encode sizes follow the same per-shard share (`perShard` = budget ÷ 2 ÷ shards),
 * because parquet-wasm's heap (one per worker thread, one on the main thread) grows to the
 * biggest call it ever got and never shrinks, so the biggest call, not the traffic, must be
 * what configuration sets:
 * - encodeChunkBytes = perShard ÷ 16 (⅛ of maxUncommittedBytesPerShard), within [1 MiB, 8 MiB]:
 *   a shard buffers several partitions at once (silver, bronze, sessions, late events, …), each up
 *   to a chunk before it is encoded, and all of that must fit under its uncommitted bound;
 * - maxBytesPerParquetCall = perShard ÷ 8 (2 × encodeChunkBytes below the ceilings), within
 *   [1 MiB, 256 MiB]: a chunk overshoots encodeChunkBytes by at most the last record's rows, so it
 *   still is one call, and a checkpoint's or compaction's bigger buffers are split into calls of
 *   this size.
 * The ceilings are the defaults (8 MiB, 256 MiB), reached from 128 MiB (chunk) and 2 GiB (call) per
 * shard, i.e. a budget of 1 GiB / 16 GiB with 4 shards. `--max-memory 1GiB` with 4 shards gives
 * 8 MiB chunks and 16 MiB calls; 256MiB gives 2 MiB chunks and 4 MiB calls.
 */
export function engineMemoryLimits(
  budgetBytes: number,
  shards: number,
  targetFileBytes: number,
): Pick<EngineOptions, 'maxUncommittedBytesPerShard' | 'dedupHotCapacity' | 'encodeChunkBytes' | 'maxBytesPerParquetCall'> {
  const perShard = budgetBytes / 2 / Math.max(1, shards);
  const defaults = defaultEngineOptions();
  const within = (v: number, lo: number, hi: number): number => Math.max(lo, Math.min(hi, Math.floor(v)));
  return {
    maxUncommittedBytesPerShard: Math.max(64 * 1024, Math.min(2 * targetFileBytes, Math.floor(perShard / 2))),
    dedupHotCapacity: Math.max(100_000, Math.min(4_000_000, Math.floor(perShard / 2 / DEDUP_ENTRY_BYTES))),
    encodeChunkBytes: within(perShard / 16, MIN_ENCODE_BYTES, defaults.encodeChunkBytes),
    maxBytesPerParquetCall: within(perShard / 8, MIN_ENCODE_BYTES, defaults.maxBytesPerParquetCall),
  };
}
