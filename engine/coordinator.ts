/**
 * The coordinator (main thread): owns the shard logs, the pool, the checkpoint schedule, the
 * global watermark and the merge of per-shard window partials into gold.
 *
 *   ingest ──onDurable(shard, offset, bytes)──▶ submit ──▶ pool (shard pinned) ──▶ BatchResult
 *   timer (flush interval) ──▶ checkpoint every shard ──▶ merge complete windows into gold
 *                                                     ──▶ truncate logs below checkpoints
 *                                                     ──▶ flush the DLQ log to dlq/
 *
 * Gold windows: each shard publishes its partial of window W under `_sluice/partials/…/W/s{n}`
 * as part of its own two-phase commit. Once all S partials exist, the coordinator merges them
 * into one deterministic file (`part-w{W}.parquet`), publishes it, then deletes the partials.
 * A crash anywhere in between re-runs the merge with the same inputs and the same output bytes.
 *
 * Failures are handled, never fatal to the process (engine/failure-episodes.ts):
 *   a shard's checkpoint or a coordinator step (merge, DLQ flush, frontier, reconcile) fails with a
 *     retryable error (disk full, object store, LMDB) → retried with exponential backoff, one log
 *     line per episode, /readyz names it, /metrics counts it; the shard keeps processing and its
 *     uncommitted events count as backlog, so ingest answers 503 before memory swells;
 *   a shard fails in a way that cannot be retried (a bug) → that shard stops (its log keeps
 *     every acknowledged record for a restart), /readyz and /metrics say so, the others go on;
 *   a log write fails (disk full) → ingest answers 503, the log is reopened once there is room
 *     (engine/resilient-log.ts), no restart.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { open as openLmdb, type Database, type RootDatabase } from 'lmdb';
import { externalError, internalError, userError } from '../common/errors.js';
import { formatDuration } from '../common/duration.js';
import { tableFromIPC, type RecordBatch } from 'apache-arrow';
import { ipcRowCount, readFlatIpc } from '../common/ipc-read.js';
import type { Logger } from 'pino';
import { partKey } from '../common/lake-layout.js';
import type { ShardLog } from '../log/log.js';
import type { LogRecord } from '../log/log.js';
import type { SegmentLog } from '../log/segment-log.js';
import { waitForMaintenance } from '../storage/maintenance-mark.js';
import type { ObjectStore } from '../storage/object-store.js';
import { openObjectStore } from '../storage/open-store.js';
import { encodeParquet, encodeParquetMerged, splitForEncode } from '../storage/parquet.js';
import { TwoPhaseCommitter, type PendingCommit } from '../storage/two-phase.js';
import { mergeWindowPartials } from './gold-merge.js';
import { goldWindowKey, readFrontier, reconcileLate, writeFrontier } from './reconcile.js';
import type { EngineOptions } from './options.js';
import { claimLake } from './lake-owner.js';
import { claimShards, sessionGapMismatch } from './data-layout.js';
import { FailureEpisodes } from './failure-episodes.js';
import { ShardPool, ShardTaskError } from './pool.js';
import { compactInWorker } from './compaction.js';
import { openLocalLogs, type LocalLogs } from './local-logs.js';
import { PARTIALS_PREFIX } from './shard-runtime.js';
import { engineMetrics } from './telemetry.js';
import { ErasureStore } from '../storage/erasure-store.js';
import { erasureWorkPending, runErasures, type ErasureHost } from './erasure-job.js';
import { compactErasedState, sealErasedLogs } from './erasure-offline.js';
import type { BatchResult, CheckpointResult, OpenResult, ShardRuntimeOptions, ShardWatermark } from './types.js';
import { checkFence, isFenced, type LeaseFence } from './lease-fence.js';
import { goldMerged, readDlqState, readLakeFrontier, readShardFrontier, writeDlqState, writeShardFrontier } from './cluster-lake.js';

/** Runs one step of a checkpoint round and records its duration (sluice_engine_checkpoint_step_seconds). */
async function timedStep(step: string, run: () => Promise<unknown>): Promise<void> {
  const started = performance.now();
  try {
    await run();
  } finally {
    engineMetrics.checkpointStepSeconds.observe({ step }, (performance.now() - started) / 1000);
  }
}

interface ShardState {
  /** Ranges sent to the worker but not yet processed (0 or 1: a shard's ranges go one at a time). */
  inFlight: number;
  /** Events acknowledged (made durable by ingest) and not yet processed. */
  pendingEvents: number;
  /** Every record below this offset is durable in the shard's log (as ingest reported it). */
  durableNext: number;
  /**
   * Durable records kept in memory for the next ranges (consecutive offsets), up to
   * maxQueuedBytesPerShard; while `spilled`, new records are left in the log and read back from it.
   * Each with its events (rows), which bound a range (maxRangeEvents).
   */
  queue: Array<{ offset: number; payload: Uint8Array; rows: number }>;
  queuedBytes: number;
  spilled: boolean;
  /**
   * Sparse logs: offsets of the records this process appended (`submit`), ascending, until a read
   * has passed them. A read must yield each one; one it passes over is fetched by its offset
   * (`readAt`) — see `fillGaps`.
   */
  appended: number[];
  /** A pump (read a range, run it) is running. */
  pumping: boolean;
  lastProcessed: number;
  checkpointed: number;
  watermark: ShardWatermark;
  /** Where the idle advance last moved this shard's frontier (−∞: never); it may be ahead of its own watermark. */
  advancedMs: number;
  /** Processing time of the last batch with rows. */
  lastActivityMs: number;
  bufferedBytes: number;
  /** Event time up to which this shard's window partials are committed (hourly; daily ones). */
  emittedWatermarkMs: number;
  emittedDailyMs: number;
  /** Next log offset to hand to the worker (records the log brings back after a reopen start here). */
  submittedNext: number;
  /** Events processed since the shard's last successful checkpoint (held in worker memory). */
  uncommittedEvents: number;
  /** Stopped by a failure that cannot be retried: records stay in the log for a restart. */
  stopped: boolean;
  /** At maxUncommittedBytesPerShard: takes no range until a checkpoint commits what it holds. */
  held: boolean;
  /** Set while the shard's log read failed and its pump waits for the retry (backoff of `reads`). */
  readRetry: NodeJS.Timeout | undefined;
  /** Set while the shard lingers for more records before its next range (rangeLingerMs); `lingered`: it did, take what is there. */
  linger: NodeJS.Timeout | undefined;
  lingered: boolean;
  /** This coordinator runs the shard (always, except on an engine node that does not hold its lease). */
  owned: boolean;
  /**
   * Engine node: bumped when the shard is abandoned or (re)added. A pump, batch or checkpoint
   * begun under an earlier ownership drops its result instead of moving this one's offsets: a
   * lease lost and retaken restarts from the lake's checkpoint, and a range the old runtime read
   * must not be handed to the new one.
   */
  epoch: number;
}

let instances = 0;

/** Records waiting that end a linger whatever their events (a replay from the log knows no event counts). */
const LINGER_MAX_RECORDS = 64;

/** A compaction thread runs this much nicer than the shard workers (at most 19). */
const COMPACTION_NICE_ABOVE_WORKERS = 5;

/** What `/v1/live` answers. Totals count since this engine started (a restart begins them at 0 again). */
export interface LiveSnapshot {
  time: string;
  /** Events processed per second, lately. */
  eventsPerSecond: number;
  /** Events processed that went to silver: processedTotal − duplicatesTotal (not ingest's acks: those are `sluice_ingest_events_total` in /metrics). */
  acceptedTotal: number;
  /** Events the shards processed (read from the logs), and of those the ones covered by a successful checkpoint (in the lake). */
  processedTotal: number;
  committedTotal: number;
  duplicatesTotal: number;
  tooLateTotal: number;
  globalWatermark: string | null;
  watermarkLagSeconds: number | null;
  backlogEvents: number;
  lastCheckpointAgeSeconds: number | null;
  currentHour: { windowStart: string; events: number; activeUsers: number; sessions: number; notificationCtr: number | null } | null;
  /** Today (the latest open daily window): sessions starting today that have closed, and the share of them with one event. */
  currentDay: { windowStart: string; sessionsClosed: number; bounceRate: number | null } | null;
  openSessions: number;
}

/**
 * What the engine needs of a log it consumes: its durable mark, reading from an offset, truncating
 * below what it committed. In-process, the local log itself (engine/local-logs.ts); in the engine
 * process, a reader of the files plus the marks ingest reports (engine/remote-log.ts).
 */
export interface ConsumedLog {
  /** False: offsets have gaps (log/log.ts); a range's records are then read from the log, never from `submit`'s queue. */
  readonly denseOffsets?: boolean;
  readonly durableNextOffset: number;
  read(fromOffset: number): AsyncIterable<LogRecord>;
  /** Sparse logs: the record at exactly `offset`, or undefined if there is none (see `fillGaps`). */
  readAt?(offset: number): Promise<LogRecord | undefined>;
  truncateBefore(offset: number): Promise<void>;
  close(): Promise<void>;
}

/**
 * An engine node's part (engine/cluster-node.ts): the shards this coordinator runs and the
 * lake-wide steps it may take, each under a lease (engine/lease.ts) whose fence every publish
 * checks. The committed frontiers and the DLQ's progress then live in the lake
 * (engine/cluster-lake.ts), not in this coordinator's memory or LMDB.
 */
export interface ClusterRole {
  /** Shards run from the start; `addShard` / `removeShard` change the set. */
  owned: readonly number[];
  /** Fence of shard s's lease. */
  fence(shard: number): LeaseFence | undefined;
  /** Fence of lease `dlq` (DLQ flush) or `gold` (gold merge, frontier, reconciliation, compaction) while this node holds it. */
  role(name: 'dlq' | 'gold'): LeaseFence | undefined;
  /**
   * A commit under the role's lease was fenced (the lease went overdue before the node saw it
   * lost, or another node took it): `role(name)` is undefined from now on, and the lease is left
   * to expire — its next owner, this node too, resumes from what the lake holds.
   */
  giveUp(name: 'dlq' | 'gold'): void;
}

export interface EngineLogs {
  shards: ConsumedLog[];
  dlq: ConsumedLog;
  /** Engine node: run only the owned shards (absent: every shard, one process). */
  cluster?: ClusterRole;
  /** Failure episodes of the logs (local logs only; the engine process has none). */
  episodes?: FailureEpisodes;
  /**
   * Seals a segment log's active segment (shard −1: the DLQ log) and resolves with the first offset
   * after it (erasure). Absent for logs that are not segment logs (JetStream: truncation is exact).
   */
  roll?(shard: number): Promise<number>;
}

export class Coordinator {
  readonly options: EngineOptions;
  readonly logs: ConsumedLog[];
  readonly dlqLog: ConsumedLog;
  /** The local logs ingest appends to, when the coordinator opened them (in-process engine). */
  readonly local: LocalLogs | undefined;
  private readonly rollLog: EngineLogs['roll'];
  private readonly pool: ShardPool;
  private readonly store: ObjectStore;
  private readonly env: RootDatabase;
  private readonly meta: Database;
  private readonly shards: ShardState[];
  private readonly log: Logger;
  private readonly cluster: ClusterRole | undefined;
  private runtimeOptions: ShardRuntimeOptions | undefined;
  private timer: NodeJS.Timeout | undefined;
  private liveTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  /** Checkpoint targets (`shard-N`, `coordinator`) whose last attempt failed. */
  private readonly checkpoints: FailureEpisodes;
  private readonly logEpisodes: FailureEpisodes | undefined;
  /** Shards whose log read failed (JetStream: the stream unavailable for longer than a read retries): retried with backoff. */
  private readonly reads: FailureEpisodes;
  private checkpointing: Promise<void> | undefined;
  /** The running gold merge (merges are serialized). */
  private merging: Promise<unknown> = Promise.resolve();
  private queuedCheckpoint: Promise<void> | undefined;
  private closed = false;
  /** Shutdown after the drain bound: no shard takes another range; the rest of the backlog stays in the log. */
  private stopPumps = false;
  /** All shards are open (checkpoints may run). */
  private opened = false;
  private fatal: Error | undefined;
  private lastCheckpointAt = 0;
  private lastReconcileAt = 0;
  private lastCompactAt = Date.now();
  /** The background compaction run while one runs (see `compact`). */
  private compacting: Promise<void> | undefined;
  /** Aborted by close(): a running compaction stops after its current partition. */
  private readonly compactAbort = new AbortController();
  /** Erasure requests of the data directory (engine/erasure-job.ts runs them after a checkpoint round). */
  private erasures: ErasureStore | undefined;
  private totals = { accepted: 0, processed: 0, committed: 0, duplicates: 0, tooLate: 0 };
  private rate = { windowStart: Date.now(), count: 0, perSecond: 0, lastAt: 0 };
  private liveCache: { at: number; hour: LiveSnapshot['currentHour']; day: LiveSnapshot['currentDay']; openSessions: number } = { at: 0, hour: null, day: null, openSessions: 0 };

  private constructor(
    options: EngineOptions,
    logs: EngineLogs,
    local: LocalLogs | undefined,
    pool: ShardPool,
    store: ObjectStore,
    env: RootDatabase,
    log: Logger,
    checkpoints: FailureEpisodes,
  ) {
    this.options = options;
    this.checkpoints = checkpoints;
    this.reads = new FailureEpisodes({
      log,
      what: 'log read',
      readinessPrefix: `${checkpoints.prefix}reads:`,
      baseMs: options.retryBaseMs,
      maxMs: options.retryMaxMs,
      onAttemptFailed: (target, code) => engineMetrics.logReadFailures.inc({ target, code }),
      onStateChanged: () => undefined,
    });
    this.logEpisodes = logs.episodes;
    this.logs = logs.shards;
    this.dlqLog = logs.dlq;
    this.rollLog = logs.roll;
    this.local = local;
    this.pool = pool;
    this.store = store;
    this.env = env;
    this.meta = env.openDB({ name: 'coordinator', encoding: 'msgpack' });
    this.log = log;
    this.cluster = logs.cluster;
    this.shards = logs.shards.map((_, s) => ({
      inFlight: 0,
      pendingEvents: 0,
      durableNext: 0,
      queue: [],
      queuedBytes: 0,
      spilled: false,
      appended: [],
      pumping: false,
      lastProcessed: -1,
      checkpointed: -1,
      watermark: { kind: 'idle' } as ShardWatermark,
      advancedMs: Number.NEGATIVE_INFINITY,
      lastActivityMs: Date.now(),
      bufferedBytes: 0,
      emittedWatermarkMs: Number.NEGATIVE_INFINITY,
      emittedDailyMs: Number.NEGATIVE_INFINITY,
      submittedNext: 0,
      uncommittedEvents: 0,
      stopped: false,
      epoch: 0,
      readRetry: undefined,
      linger: undefined,
      lingered: false,
      held: false,
      owned: logs.cluster === undefined || logs.cluster.owned.includes(s),
    }));
  }

  /**
   * Opens shards (and, unless `given`, the local logs), recovers every shard (publishing or
   * discarding staged files), replays each log from its checkpoint, finishes interrupted gold
   * merges and DLQ flushes, and starts the checkpoint timer. Ingest may start once this resolves.
   */
  static async start(options: EngineOptions, log: Logger, given?: EngineLogs): Promise<Coordinator> {
    await mkdir(options.dataDir, { recursive: true });
    await claimShards(options.dataDir, options.shards);
    const prefix = `engine#${++instances}:`;
    const checkpoints = new FailureEpisodes({
      log,
      what: 'checkpoint',
      readinessPrefix: prefix,
      baseMs: options.retryBaseMs,
      maxMs: options.retryMaxMs,
      onAttemptFailed: (target, code) => engineMetrics.checkpointFailures.inc({ target, code }),
      onStateChanged: (target, consecutive, stopped) => {
        engineMetrics.checkpointConsecutiveFailures.set({ target }, consecutive);
        if (stopped && target.startsWith('shard-')) engineMetrics.shardStopped.set({ shard: target.slice(6) }, 1);
      },
    });
    // The coordinator exists only after the logs; a reopened local shard log reaches it through this.
    let coordinator: Coordinator | undefined;
    const store = await openObjectStore(options.lake, { s3Endpoint: options.s3Endpoint });
    try {
      // Segment logs (offsets from 0 in each data directory) name the lake's files: one data directory per lake.
      if (given === undefined || (given.roll !== undefined && given.cluster === undefined)) await claimLake(store, options.dataDir, options.lake);
      // The session gap is the lake's and the data directory's, like the shard count: the shards
      // hold daily windows back until sessions close under the gap they run with, and gold merges
      // and reconciles by the gap in the lake's frontier — a start with another gap merged one
      // shard's partial of a held day alone and overwrote that day's gold.
      const previous = await readFrontier(store);
      if (previous !== undefined && previous.sessionGapMs !== options.sessionGapMs) throw sessionGapMismatch(`lake ${options.lake}`, previous.sessionGapMs, options.sessionGapMs);
      // The lake is written again from here on: `sluice compact` and `reconcile` refuse from now
      // (a fresh frontier, not marked stopped) — and one that began before waits for none of this
      // start: the start waits for it (storage/maintenance-mark.ts). Engine nodes leave the frontier
      // to the gold owner, which rewrites it every round.
      if (previous !== undefined && (previous.stoppedAtMs !== undefined || given?.cluster === undefined)) await writeFrontier(store, { ...previous, stoppedAtMs: undefined });
      await waitForMaintenance(store, log);
      await claimShards(options.dataDir, options.shards, options.sessionGapMs);
    } catch (err) {
      await store.close();
      throw err;
    }
    // Erasure steps that need the files closed: seal logs (when this process opens them), compact shard state.
    const erasures = await ErasureStore.open(options.dataDir);
    if (given === undefined) await sealErasedLogs(options.dataDir, erasures);
    await compactErasedState(options.dataDir, erasures);
    const local = given === undefined ? await openLocalLogs(options, log, prefix, (shard, fresh) => coordinator?.submitReappeared(shard, fresh) ?? Promise.resolve()) : undefined;
    const logs: EngineLogs = given ?? { shards: local!.logs, dlq: local!.dlqLog, episodes: local!.episodes, roll: (s) => (s < 0 ? local!.dlqLog : local!.logs[s]!).segmentLog.roll() };
    const env = openLmdb({ path: join(options.dataDir, 'coordinator.mdb'), compression: false });
    const pool = new ShardPool(options.workers);
    const c = new Coordinator(options, logs, local, pool, store, env, log, checkpoints);
    coordinator = c;
    c.erasures = erasures;
    engineMetrics.ready.set(1);
    // Checkpoints run during replay too, so a long replay commits progressively.
    c.timer = setInterval(() => c.tick(), options.flushIntervalMs);
    c.timer.unref();
    try {
      await c.recover();
    } catch (err) {
      clearInterval(c.timer);
      throw err;
    }
    c.liveTimer = setInterval(() => void c.refreshLive().catch(() => undefined), 1000);
    c.liveTimer.unref();
    return c;
  }

  private async recover(): Promise<void> {
    const runtimeOptions: ShardRuntimeOptions = {
      shards: this.options.shards,
      dataDir: this.options.dataDir,
      lake: this.options.lake,
      s3Endpoint: this.options.s3Endpoint,
      allowedLatenessMs: this.options.allowedLatenessMs,
      sessionGapMs: this.options.sessionGapMs,
      dedupTtlMs: this.options.dedupTtlMs,
      compression: this.options.compression,
      targetFileBytes: this.options.targetFileBytes,
      metricEventTypes: this.options.metricEventTypes,
      workerNice: this.options.workerNice,
      maxRowsPerParquetCall: this.options.maxRowsPerParquetCall,
      dedupHotCapacity: this.options.dedupHotCapacity,
      maxBytesPerParquetCall: this.options.maxBytesPerParquetCall,
      encodeChunkRows: this.options.encodeChunkRows,
      encodeChunkBytes: this.options.encodeChunkBytes,
      denseOffsets: this.logs.every((l) => l.denseOffsets !== false),
      stateInObjectStore: this.options.stateInObjectStore,
    };
    this.runtimeOptions = runtimeOptions;
    const opened = await Promise.all(this.shards.flatMap((st, s) => (st.owned ? [this.pool.open(s, this.shardOptions(s))] : [])));
    for (const o of opened) this.opened_(o);
    this.opened = true;
    // Replay what was acknowledged but not yet checkpointed: the pumps read it from the logs.
    for (const o of opened) this.shards[o.shard]!.durableNext = this.logs[o.shard]!.durableNextOffset;
    const replayed = this.shards.reduce((n, st) => n + Math.max(0, st.durableNext - st.submittedNext), 0);
    for (let s = 0; s < this.shards.length; s++) this.pump(s);
    await this.drain(Number.MAX_SAFE_INTEGER);
    if (replayed > 0) this.log.info({ records: replayed }, 'replayed log records after the last checkpoint');
    await this.mergeCompleteWindows();
    await this.flushDlq();
  }

  private shardOptions(shard: number): ShardRuntimeOptions {
    const fence = this.cluster?.fence(shard);
    return fence === undefined ? this.runtimeOptions! : { ...this.runtimeOptions!, fence };
  }

  /** A shard's state after its runtime opened (recovered). */
  private opened_(o: OpenResult): void {
    const st = this.shards[o.shard]!;
    st.checkpointed = o.checkpointOffset;
    st.lastProcessed = o.checkpointOffset;
    st.submittedNext = o.checkpointOffset + 1;
    st.emittedWatermarkMs = o.emittedWatermarkMs;
    st.emittedDailyMs = o.emittedDailyMs;
    // A restart after a graceful stop replays nothing: without this the shards knew no watermark
    // until new events came, and the idle advance never released the windows they held.
    st.watermark = o.watermark;
    if (o.recoveredPublished + o.recoveredDiscarded > 0) {
      this.log.info({ shard: o.shard, published: o.recoveredPublished, discarded: o.recoveredDiscarded }, 'recovered staged files');
    }
  }

  /**
   * Engine node: starts running `shard` (its lease and fence are in place): opens its runtime —
   * which restores its state — and consumes its log from the checkpoint. Resolves once opened.
   */
  async addShard(shard: number): Promise<void> {
    const st = this.shards[shard]!;
    if (st.owned || this.closed) return;
    clearTimeout(st.readRetry);
    clearTimeout(st.linger);
    Object.assign(st, { epoch: st.epoch + 1, pumping: false, readRetry: undefined, linger: undefined, lingered: false, inFlight: 0, pendingEvents: 0, queue: [], queuedBytes: 0, appended: [], spilled: true, watermark: { kind: 'idle' }, advancedMs: Number.NEGATIVE_INFINITY, lastActivityMs: Date.now(), bufferedBytes: 0, uncommittedEvents: 0, held: false });
    this.opened_(await this.pool.open(shard, this.shardOptions(shard)));
    st.owned = true;
    st.durableNext = Math.max(st.submittedNext, this.logs[shard]!.durableNextOffset);
    this.pump(shard);
  }

  /**
   * Engine node: stops running `shard` gracefully — waits for its range in flight, commits a
   * final checkpoint and closes its runtime; then its lease may be released. Throws when the
   * final checkpoint fails (keep the lease and retry).
   */
  async removeShard(shard: number): Promise<void> {
    const st = this.shards[shard]!;
    if (!st.owned) return;
    st.owned = false; // no new ranges, not in the next checkpoint rounds
    try {
      await this.checkpointing?.catch(() => undefined);
      while (st.pumping || st.inFlight > 0) await new Promise((r) => setTimeout(r, 5));
      if (!st.stopped) await this.pool.close(shard);
    } catch (err) {
      st.owned = true;
      this.pump(shard);
      throw err;
    }
    st.queue = [];
    st.queuedBytes = 0;
    st.appended = [];
    st.watermark = { kind: 'idle' };
    st.advancedMs = Number.NEGATIVE_INFINITY;
    this.checkpoints.succeeded(`shard-${shard}`);
  }

  /**
   * Engine node: the shard's lease is lost — stop feeding it at once and commit nothing more (its
   * runtime stays open and idle until the process restarts; its fence refuses any publish).
   */
  abandonShard(shard: number): void {
    const st = this.shards[shard]!;
    st.owned = false;
    // A pump or batch still running belongs to the old epoch now and touches none of these.
    st.epoch++;
    st.pumping = false;
    st.inFlight = 0;
    clearTimeout(st.readRetry);
    st.readRetry = undefined;
    clearTimeout(st.linger);
    st.linger = undefined;
    st.queue = [];
    st.queuedBytes = 0;
    st.appended = [];
  }

  /** Shards this coordinator runs now. */
  get ownedShards(): number[] {
    return this.shards.flatMap((st, s) => (st.owned ? [s] : []));
  }

  /** Per owned shard: the durable mark and the next offset to process (consumer lag = the difference), what it holds uncommitted. */
  progress(): Array<{ shard: number; durableNext: number; submittedNext: number; checkpointed: number; uncommittedBytes: number; held: boolean }> {
    return this.shards.flatMap((st, s) =>
      st.owned ? [{ shard: s, durableNext: st.durableNext, submittedNext: st.submittedNext, checkpointed: st.checkpointed, uncommittedBytes: st.bufferedBytes, held: st.held }] : [],
    );
  }

  /**
   * Called by ingest after a record is durable; ownership of `payload` passes here. The record
   * waits in memory for the shard's next range (or, past maxQueuedBytesPerShard, in the log).
   */
  submit(shard: number, offset: number, payload: Uint8Array, rows: number): void {
    if (this.fatal) return;
    const st = this.shards[shard]!;
    if (offset + 1 > st.durableNext) st.durableNext = offset + 1;
    st.pendingEvents += rows;
    const tail = st.queue.length > 0 ? st.queue[st.queue.length - 1]!.offset + 1 : st.submittedNext;
    // A sparse log may hold other writers' records between this process's: those are read from the log.
    const dense = this.logs[shard]!.denseOffsets !== false;
    if (!dense && offset >= st.submittedNext && (st.appended.length === 0 || offset > st.appended[st.appended.length - 1]!)) st.appended.push(offset);
    if (!st.spilled && offset === tail && dense && st.queuedBytes + payload.byteLength <= this.options.maxQueuedBytesPerShard) {
      st.queue.push({ offset, payload, rows });
      st.queuedBytes += payload.byteLength;
    } else st.spilled = true;
    this.pump(shard);
  }

  /**
   * The engine process's counterpart of `submit`: ingest reports how far a shard's log is durable
   * (`next`) and how many events that added; the pump reads the records from the log files.
   */
  durable(shard: number, next: number, rows: number): void {
    if (this.fatal) return;
    const st = this.shards[shard]!;
    if (next > st.durableNext) st.durableNext = next;
    st.pendingEvents += rows;
    st.spilled = true;
    this.pump(shard);
  }

  /**
   * After a failed log was reopened (engine/resilient-log.ts), before appends resume: the records
   * the failed write left on disk (never acknowledged) are in the reopened log, after what the
   * shard has taken; the pump reads them from there once the new log is in place.
   */
  async submitReappeared(shard: number, fresh: SegmentLog): Promise<void> {
    const st = this.shards[shard]!;
    if (st.stopped || this.fatal || !this.opened) return;
    const reappeared = fresh.durableNextOffset - Math.max(st.durableNext, st.submittedNext);
    if (fresh.durableNextOffset > st.durableNext) st.durableNext = fresh.durableNextOffset;
    st.spilled = true;
    setTimeout(() => this.pump(shard), 0).unref();
    if (reappeared > 0) this.log.warn({ shard, records: reappeared }, 'a reopened log brought back records of failed (unacknowledged) appends; processing them (duplicates are removed downstream)');
  }

  /** Starts the shard's pump unless it runs: ranges of durable records to the worker, one at a time. */
  private pump(shard: number): void {
    const st = this.shards[shard]!;
    if (st.pumping || st.held || this.stopPumps || st.readRetry !== undefined || st.stopped || !st.owned || this.fatal || !this.opened) return;
    if (st.submittedNext >= st.durableNext && st.queue.length === 0) return;
    if (this.lingering(shard)) return;
    st.pumping = true;
    const epoch = st.epoch;
    void this.runPump(shard, epoch)
      .then(() => this.reads.succeeded(`shard-${shard}`))
      .catch((err: unknown) => {
        if (st.epoch !== epoch) return; // the shard changed hands meanwhile: nothing of this pump counts
        if (!(err instanceof LogReadFailed) || this.closed) return this.fail(err instanceof LogReadFailed ? err.cause : err);
        // The log is unavailable for now (a failover longer than the read's own retries): read again later, nothing is skipped.
        const delay = this.reads.failed(`shard-${shard}`, err.cause);
        st.readRetry = setTimeout(() => {
          st.readRetry = undefined;
          this.pump(shard);
        }, delay);
        st.readRetry.unref();
      })
      .finally(() => {
        if (st.epoch !== epoch) return;
        st.pumping = false;
        // Records that became durable after the last range was read.
        if (st.submittedNext < st.durableNext && !st.stopped) this.pump(shard);
      });
  }

  /**
   * True while the shard waits (at most rangeLingerMs, then its pump starts) for more records
   * before its next range: while few are waiting, not while closing (the drain takes everything).
   */
  private lingering(shard: number): boolean {
    const st = this.shards[shard]!;
    const few = st.pendingEvents < this.options.rangeMinEvents && st.durableNext - st.submittedNext < LINGER_MAX_RECORDS;
    if (this.options.rangeLingerMs === 0 || this.closed || !few || st.lingered) {
      clearTimeout(st.linger);
      st.linger = undefined;
      st.lingered = false;
      return false;
    }
    if (st.linger === undefined) {
      st.linger = setTimeout(() => {
        st.linger = undefined;
        st.lingered = true;
        this.pump(shard);
      }, this.options.rangeLingerMs);
      st.linger.unref();
    }
    return true;
  }

  private async runPump(shard: number, epoch: number): Promise<void> {
    const st = this.shards[shard]!;
    while (!st.stopped && st.owned && st.epoch === epoch && !this.fatal && !this.stopPumps) {
      if (st.bufferedBytes >= this.options.maxUncommittedBytesPerShard) {
        // Memory is bounded by configuration: the rest waits in the log until a checkpoint commits this.
        st.held = true;
        engineMetrics.shardHeld.inc();
        if (!this.checkpoints.waiting(`shard-${shard}`)) void this.checkpointNow().catch((err) => this.fail(err));
        return;
      }
      const range = await this.nextRange(shard);
      if (range.length === 0 || st.epoch !== epoch) return;
      st.submittedNext = range[range.length - 1]!.offset + 1;
      st.inFlight++;
      try {
        const result = await this.pool.batch(shard, range);
        if (st.epoch === epoch) this.onBatch(result);
      } catch (err) {
        if (!(err instanceof ShardTaskError && err.stopped)) throw err;
        if (st.epoch === epoch) this.stopShard(shard, err);
      } finally {
        if (st.epoch === epoch) st.inFlight--;
      }
    }
  }

  /**
   * The shard's next range: consecutive records from `submittedNext`, from memory when the queue
   * has them, else read from the log (records left there while spilled, or replayed after a
   * restart); up to maxRangeRecords / maxRangeBytes / maxRangeEvents (at least one record).
   */
  private async nextRange(shard: number): Promise<Array<{ offset: number; payload: Uint8Array }>> {
    const st = this.shards[shard]!;
    const { maxRangeRecords, maxRangeBytes, maxRangeEvents } = this.options;
    const out: Array<{ offset: number; payload: Uint8Array }> = [];
    let bytes = 0;
    let events = 0;
    while (st.queue.length > 0 && st.queue[0]!.offset < st.submittedNext) st.queuedBytes -= st.queue.shift()!.payload.byteLength;
    while (st.queue.length > 0 && st.queue[0]!.offset === st.submittedNext + out.length && out.length < maxRangeRecords && (out.length === 0 || (bytes < maxRangeBytes && events < maxRangeEvents))) {
      const r = st.queue.shift()!;
      st.queuedBytes -= r.payload.byteLength;
      bytes += r.payload.byteLength;
      events += r.rows;
      out.push(r);
    }
    if (out.length > 0 || st.submittedNext >= st.durableNext) return out;
    const dense = this.logs[shard]!.denseOffsets !== false;
    /** The read ended by itself: it saw every record below the mark it started with. */
    let exhausted = true;
    const markAtStart = st.durableNext;
    try {
      for await (const r of this.logs[shard]!.read(st.submittedNext)) {
        if (dense ? r.offset !== st.submittedNext + out.length : r.offset < (out.at(-1)?.offset ?? st.submittedNext - 1) + 1) {
          exhausted = false;
          break;
        }
        out.push(r);
        bytes += r.payload.byteLength;
        // A record whose headers cannot be read counts no events: the worker quarantines it.
        events += ipcRowCount(r.payload) ?? 0;
        if (out.length >= maxRangeRecords || bytes >= maxRangeBytes || events >= maxRangeEvents || r.offset + 1 >= st.durableNext) {
          exhausted = r.offset + 1 >= markAtStart;
          break;
        }
      }
    } catch (err) {
      // What was read is processed; the failure comes back at the next read. A read that failed
      // must not count as "saw everything up to the mark" (below): that would skip records.
      if (out.length === 0) throw new LogReadFailed(err);
      exhausted = false;
    }
    if (!dense && st.appended.length > 0) await this.fillGaps(shard, out, exhausted ? Math.max(markAtStart - 1, out.at(-1)?.offset ?? -1) : out.at(-1)!.offset);
    if (out.length === 0 && !dense) {
      // A sparse log's read that ends has seen everything below its durable mark (>= ours): no whole
      // record there (e.g. only the first chunks of one still being written, which will come later).
      st.submittedNext = Math.max(st.submittedNext, st.durableNext);
      return out;
    }
    if (out.length === 0) {
      // Reported durable, yet not in the log: a broken invariant (a bug), not the data. The shard stops.
      this.stopShard(shard, internalError('offset_gap', `shard ${shard}: the log holds no record at offset ${st.submittedNext}, but records up to ${st.durableNext - 1} were reported durable`));
      return out;
    }
    // Caught up with what is durable: new records can wait in memory again.
    if (st.submittedNext + out.length >= st.durableNext && st.queue.length === 0) st.spilled = false;
    return out;
  }

  /**
   * Sparse logs: every record this process appended (its offset came back in the append's
   * acknowledgement) with an offset in [submittedNext, upTo] must be in `out`, since the read
   * covered that span. One the read passed over is fetched by its offset and put in its place.
   * A read of a replicated log is served by one replica's copy; if that copy misses a record the
   * quorum acknowledged, the read alone would skip it for good — an acknowledged event never in
   * silver. One the log cannot produce either is reported (error log, metric): the log lost it.
   * A fetch that fails is no verdict: the range ends below that record, which is read again next.
   */
  private async fillGaps(shard: number, out: Array<{ offset: number; payload: Uint8Array }>, upTo: number): Promise<void> {
    const st = this.shards[shard]!;
    const log = this.logs[shard]!;
    let k = 0;
    while (k < st.appended.length && st.appended[k]! < st.submittedNext) k++;
    const seen = new Set(out.map((r) => r.offset));
    const missing: number[] = [];
    for (; k < st.appended.length && st.appended[k]! <= upTo; k++) if (!seen.has(st.appended[k]!)) missing.push(st.appended[k]!);
    for (const offset of missing) {
      let r: LogRecord | undefined;
      try {
        r = await log.readAt?.(offset);
      } catch (err) {
        this.log.warn({ shard, offset, err }, 'fetching a record the read passed over failed; reading again from it');
        const below = out.filter((x) => x.offset < offset);
        out.splice(0, out.length, ...below);
        st.appended.splice(0, st.appended.indexOf(offset));
        if (out.length === 0) throw new LogReadFailed(err);
        return;
      }
      if (r !== undefined && r.offset === offset) {
        engineMetrics.logReadGaps.inc({ recovered: 'true' });
        this.log.warn({ shard, offset }, 'a read of the shard log passed over a record this process appended (acknowledged); fetched it by its offset');
        let at = out.length;
        while (at > 0 && out[at - 1]!.offset > offset) at--;
        out.splice(at, 0, r);
        continue;
      }
      engineMetrics.logReadGaps.inc({ recovered: 'false' });
      this.log.error({ shard, offset, code: 'log_record_lost' }, 'an acknowledged record is missing from the shard log (its append was acknowledged at this offset; reads and a fetch by offset do not find it): its events are not in the lake');
    }
    st.appended.splice(0, k);
  }

  private onBatch(r: BatchResult): void {
    const st = this.shards[r.shard]!;
    st.lastProcessed = Math.max(st.lastProcessed, r.offset);
    st.watermark = r.watermark;
    st.bufferedBytes = r.bufferedBytes;
    if (r.rows > 0) st.lastActivityMs = Date.now();
    this.totals.accepted += r.silverRows;
    this.totals.processed += r.rows;
    this.totals.duplicates += r.duplicates;
    this.totals.tooLate += r.tooLate;
    st.uncommittedEvents += r.rows;
    st.pendingEvents = Math.max(0, st.pendingEvents - r.rows);
    engineMetrics.rangeRecords.observe(r.records);
    this.countRate(r.rows);
    engineMetrics.processed.inc(r.rows);
    engineMetrics.duplicates.inc(r.duplicates);
    engineMetrics.tooLate.inc(r.tooLate);
    for (const q of r.quarantined) {
      engineMetrics.quarantined.inc({ code: q.code });
      this.log.error({ shard: r.shard, offset: q.offset, code: q.code, bytes: q.bytes }, q.message);
    }
    if (r.bufferedBytes >= this.options.targetFileBytes && !this.checkpointing && !this.checkpoints.waiting(`shard-${r.shard}`)) {
      void this.checkpointNow().catch((err) => this.fail(err));
    }
  }

  /** A failure that cannot be retried: this shard stops (reported), the others go on. */
  private stopShard(shard: number, err: unknown): void {
    const st = this.shards[shard]!;
    // Engine node: a shard given up (lease lost) fails on its fenced runtime — expected; it may be retaken.
    if (st.stopped || (this.cluster && !st.owned)) return;
    if (this.cluster && isFenced(err)) {
      // The fence refused a commit before the lease loss reached this node's renewals (a NATS
      // outage: the lease went overdue first). Not a bug: the shard is given up here, as a lost
      // lease is, and whoever takes the lease next — this node too — restores it from the lake.
      this.log.warn({ shard, code: 'fenced', err }, 'a commit of this shard was fenced; the shard is given up until its lease is taken again');
      this.abandonShard(shard);
      return;
    }
    st.stopped = true;
    this.checkpoints.stop(`shard-${shard}`, err);
    engineMetrics.ready.set(0);
  }

  private countRate(rows: number): void {
    const now = Date.now();
    if (now - this.rate.windowStart >= 1000) {
      this.rate.perSecond = (this.rate.count * 1000) / (now - this.rate.windowStart);
      this.rate.windowStart = now;
      this.rate.count = 0;
    }
    this.rate.count += rows;
    if (rows > 0) this.rate.lastAt = now;
  }

  /**
   * Per shard, the offset of the last record it processed, or null where that says nothing about
   * this engine keeping up (a shard it does not own, or one stopped by a failure: refusing events
   * cannot help those). Ingest's lag bound (ingest.maxLagMs) compares it with when each record
   * was acknowledged.
   */
  processedOffsets(): Array<number | null> {
    return this.shards.map((st) => (st.owned && !st.stopped ? st.lastProcessed : null));
  }

  /** Events acknowledged but not yet processed by the shards (ingest's backpressure signal). */
  backlog(): number {
    let n = 0;
    for (let s = 0; s < this.shards.length; s++) {
      const st = this.shards[s]!;
      if (!st.owned) continue;
      n += st.pendingEvents;
      // While its checkpoints fail, a shard holds every event since its last one in memory.
      if (this.checkpoints.isFailing(`shard-${s}`)) n += st.uncommittedEvents;
    }
    return n;
  }

  /**
   * Min over the owned shards' watermarks — each its own, or where the idle advance moved it if
   * that is ahead; shards with neither are left out. Undefined until some shard has one.
   */
  globalWatermark(): number | undefined {
    let wm: number | undefined;
    for (const st of this.shards) {
      if (!st.owned) continue;
      const own = Math.max(st.watermark.kind === 'event-time' ? st.watermark.timeMs : Number.NEGATIVE_INFINITY, st.advancedMs);
      if (own === Number.NEGATIVE_INFINITY) continue;
      wm = wm === undefined ? own : Math.min(wm, own);
    }
    return wm;
  }

  /**
   * Checkpoints every shard (each its own two-phase commit), then merges windows whose partials
   * are complete, flushes the DLQ and truncates the logs. A call made while a checkpoint runs
   * queues one more run after it (so it covers everything processed before the call); calls
   * made while one is queued share it.
   */
  checkpointNow(force = false): Promise<void> {
    if (this.fatal) return Promise.reject(this.fatal);
    if (this.queuedCheckpoint) return this.queuedCheckpoint;
    const previous = this.checkpointing ?? Promise.resolve();
    const run = previous
      .catch(() => undefined)
      .then(() => {
        this.queuedCheckpoint = undefined;
        return this.runCheckpoint(force);
      });
    this.queuedCheckpoint = run;
    const tracked = run.finally(() => {
      if (this.checkpointing === tracked) this.checkpointing = undefined;
    });
    this.checkpointing = tracked;
    return run;
  }

  /** Timer tick: start a checkpoint unless one is already running. */
  private tick(): void {
    if (this.checkpointing || !this.opened) return;
    void this.checkpointNow().catch((err) => this.fail(err));
  }

  /**
   * One checkpoint round. Each shard and the coordinator's own steps succeed or fail on their own
   * (a failure is recorded, not thrown); a target still in its backoff is skipped unless `force`.
   */
  private async runCheckpoint(force = false): Promise<void> {
    const started = performance.now();
    await this.advanceIdleShards();
    const due = this.shards.map((st, s) => st.owned && !st.stopped && (force || !this.checkpoints.waiting(`shard-${s}`)));
    await Promise.all(
      this.shards.map(async (st, s) => {
        if (!due[s]) return;
        const target = `shard-${s}`;
        const epoch = st.epoch;
        let r: CheckpointResult;
        const shardStarted = performance.now();
        try {
          r = await this.pool.checkpoint(s);
          engineMetrics.checkpointStepSeconds.observe({ step: 'shard' }, (performance.now() - shardStarted) / 1000);
          if (r.durationMs > 0) engineMetrics.checkpointStepSeconds.observe({ step: 'shard_commit' }, r.durationMs / 1000);
        } catch (err) {
          // Engine node: a shard given up meanwhile (lease lost) was refused by its own fence — expected, not a stop.
          if (!st.owned || st.epoch !== epoch) return;
          if (err instanceof ShardTaskError && err.stopped) this.stopShard(s, err);
          else this.checkpoints.failed(target, err);
          return;
        }
        // Given up (and maybe retaken) meanwhile: the new ownership restored its own offsets from the lake.
        if (st.epoch !== epoch) return;
        this.checkpoints.succeeded(target);
        engineMetrics.dedupHotBytes.set({ shard: String(s) }, r.dedupHot.bytes);
        engineMetrics.dedupHotIds.set({ shard: String(s) }, r.dedupHot.ids);
        // A checkpoint commits everything the shard held (its tasks run one after another).
        st.bufferedBytes = 0;
        if (st.held) {
          st.held = false;
          this.pump(s);
        }
        st.emittedWatermarkMs = r.emittedWatermarkMs;
        st.emittedDailyMs = r.emittedDailyMs;
        this.totals.committed += st.uncommittedEvents;
        st.uncommittedEvents = 0;
        // Engine node: the gold owner (maybe another node) learns this shard's committed frontier from the lake.
        if (this.cluster) await writeShardFrontier(this.store, s, { offset: r.offset, emittedMs: r.emittedWatermarkMs, emittedDailyMs: r.emittedDailyMs, watermarkMs: st.watermark.kind === 'event-time' ? st.watermark.timeMs : Number.NEGATIVE_INFINITY, idle: this.idle(st, Date.now()) }).catch((err: unknown) => this.log.warn({ err, shard: s }, 'writing the shard frontier failed; retried at the next checkpoint'));
        if (r.offset > st.checkpointed && st.epoch === epoch) {
          st.checkpointed = r.offset;
          // Only disk space is at stake: a failed truncation is redone by the next checkpoint.
          await this.logs[s]!.truncateBefore(r.offset + 1).catch((err: unknown) => this.log.warn({ err, shard: s }, 'log truncation failed; retried at the next checkpoint'));
        }
      }),
    );
    if (force || !this.checkpoints.waiting('coordinator')) {
      try {
        await this.runCoordinatorSteps();
        this.checkpoints.succeeded('coordinator');
      } catch (err) {
        this.checkpoints.failed('coordinator', err);
      }
    }
    await this.runErasureJobs();
    engineMetrics.checkpointFailing.set(this.checkpoints.failingCount());
    engineMetrics.ready.set(this.checkpoints.size + this.reads.size + (this.logEpisodes?.size ?? 0) === 0 ? 1 : 0);
    if (this.checkpoints.failingCount() === 0) this.lastCheckpointAt = Date.now();
    this.scheduleRetry();
    engineMetrics.checkpointSeconds.observe((performance.now() - started) / 1000);
    const gwm = this.globalWatermark();
    if (gwm !== undefined) engineMetrics.watermarkLag.set(Math.max(0, (Date.now() - gwm) / 1000));
  }

  /** Gold merge, DLQ flush, frontier, and (on their interval) reconciliation and compaction. */
  private async runCoordinatorSteps(): Promise<void> {
    await timedStep('gold_merge', () => this.mergeCompleteWindows());
    await timedStep('dlq_flush', () => this.flushDlq());
    // Engine node: the lake-wide steps belong to the `gold` lease's owner.
    if (this.cluster && this.cluster.role('gold') === undefined) return;
    await this.publishFrontier();
    const now = Date.now();
    // Not beside a compaction: reconciliation reads silver by listing it, and a compaction moves
    // rows between files meanwhile (a listing could see them twice, or not at all). Next round.
    if (this.options.reconcileIntervalMs > 0 && now - this.lastReconcileAt >= this.options.reconcileIntervalMs && this.compacting === undefined) {
      await this.reconcile();
      this.lastReconcileAt = now;
    }
    // Compaction starts one interval after the engine did (not while it recovers and replays), then every interval.
    if (this.compacting === undefined && this.options.compactAfterMs > 0 && this.options.reconcileIntervalMs > 0 && now - this.lastCompactAt >= this.options.reconcileIntervalMs) {
      // Not while an erasure is open: its job expects nothing else to rewrite the lake (runErasureJobs).
      if (this.erasures && !this.cluster && (await this.erasures.open()).length > 0) return;
      this.lastCompactAt = now;
      this.compacting = this.compact().finally(() => {
        this.compacting = undefined;
      });
    }
  }

  /** Folds committed too-late events into their gold windows (engine/reconcile.ts). */
  private async reconcile(): Promise<void> {
    const r = await reconcileLate(this.store, { compression: this.options.compression });
    if (r.lateFilesRemoved > 0) this.log.info(r, 'reconciled late events into gold');
  }

  /**
   * One background compaction run, beside the checkpoint rounds rather than inside one: under
   * load it took 11–42 s, and a round that waited for it committed nothing meanwhile (ingest
   * answered 503 on the uncommitted log; bench/results/soak-2026-12-02.md). Flushes only add
   * files, which a run that listed the partition before them leaves alone. Never rejects: a
   * failure is recorded as the target `compaction` (readiness, one log line) and retried at the
   * next interval.
   */
  private async compact(): Promise<void> {
    try {
      // Open partitions too (the current hour would otherwise collect a file per shard per flush until it closes).
      // In a worker thread (engine/compaction.ts): on this thread its synchronous Parquet work stopped range dispatch for the whole run.
      const job = { olderThanMs: this.options.compactAfterMs, openPartitions: true, compression: this.options.compression, smallFileBytes: this.options.targetFileBytes / 2, parquet: { maxBytesPerCall: this.options.maxBytesPerParquetCall } };
      // Below the shard workers: under a 2× overload a run beside them lengthened their checkpoints past the flush interval (5.1–5.8 s).
      const nice = Math.min(19, this.options.workerNice + COMPACTION_NICE_ABOVE_WORKERS);
      const c = await compactInWorker({ lake: this.options.lake, s3Endpoint: this.options.s3Endpoint, nice, options: job }, this.compactAbort.signal);
      if (c.files > 0) this.log.info(c, 'compacted small files');
      this.checkpoints.succeeded('compaction');
    } catch (err) {
      this.checkpoints.failed('compaction', err);
    }
  }

  /**
   * Erasure jobs, between checkpoints (nothing else writes the lake meanwhile), for at most
   * `erasureBudgetMs` a round; a failure is retried next round.
   */
  private async runErasureJobs(): Promise<void> {
    // Erasure requests are per data directory: not run by engine nodes (docs/SCALE-OUT.md).
    if (!this.erasures || this.fatal || this.cluster) return;
    // The usual round has nothing to erase, and must not wait for a background compaction: it did,
    // so every checkpoint round that overlapped a compaction lasted as long as the compaction
    // (rounds of 10–30 s and more at 2,500 ev/s, bench/results/soak-2026-12-03.md).
    const erasures = this.erasures;
    if (!(await erasureWorkPending(erasures))) return;
    await timedStep('erasure', () => this.runPendingErasures(erasures));
  }

  private async runPendingErasures(erasures: ErasureStore): Promise<void> {
    // A compaction started before the request was accepted finishes first (none starts while one is open).
    if (this.compacting) await this.compacting;
    // Bounded per round: the next checkpoint waits for the jobs (docs/ERASURE.md, "Bound").
    const until = performance.now() + (this.options.erasureBudgetMs ?? this.options.flushIntervalMs);
    const host: ErasureHost = {
      store: this.store,
      dataDir: this.options.dataDir,
      log: this.log,
      compression: this.options.compression,
      sessionGapMs: this.options.sessionGapMs,
      metricEventTypes: this.options.metricEventTypes,
      checkpointed: (s) => this.shards[s]!.checkpointed,
      dlqFlushed: () => (this.meta.get('dlq-offset') as number | undefined) ?? -1,
      purge: async (s, users) => (await this.pool.purgeUsers(s, users)).openSessions,
      compactState: (s) => this.pool.compactState(s),
      rollLog: this.rollLog,
      frontier: () => ({ hourly: Math.min(...this.shards.map((st) => st.emittedWatermarkMs)), daily: Math.min(...this.shards.map((st) => st.emittedDailyMs)) }),
      truncateLogs: async () => {
        for (let s = 0; s < this.shards.length; s++) if (this.shards[s]!.checkpointed >= 0) await this.logs[s]!.truncateBefore(this.shards[s]!.checkpointed + 1);
        const dlq = (this.meta.get('dlq-offset') as number | undefined) ?? -1;
        if (dlq >= 0) await this.dlqLog.truncateBefore(dlq + 1);
      },
      yieldNow: () => performance.now() >= until,
    };
    try {
      await runErasures(host, erasures);
    } catch (err) {
      this.log.warn({ err }, 'erasure step failed; retried after the next checkpoint');
    }
  }

  /** While some target is failing, runs another checkpoint round when the earliest backoff ends (besides the regular timer). */
  private scheduleRetry(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const next = this.checkpoints.nextAttemptMs();
    if (next === undefined || this.closed) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.tick();
    }, Math.max(1, next - Date.now()));
    this.retryTimer.unref();
  }

  /**
   * Shards without input for idleTimeout do not hold back gold: move them to the global watermark.
   * A shard is idle when it has processed every durable record of its log and none came for
   * idleTimeout. One that is quiet only because it cannot keep up (its log unreadable, held by a
   * failing checkpoint, its range in flight) is busy, not idle: records wait in its log, and moving
   * its watermark would close its windows without them and make every one of them too late. A busy
   * shard's watermark holds the idle ones back like an active shard's does.
   *
   * When every shard is idle, none will move its watermark by itself, and the slowest would hold
   * back for ever the windows the others closed (after a graceful stop, at the end of a backfill,
   * at night): they all move to the highest watermark among them, as Flink's watermark valve
   * flushes the maximum across its channels once all of them are idle. An event that comes later
   * for a shard moved this way, behind the watermark it was given, is late (kept in the late
   * table, reconciled into gold), as it would be had that shard's own traffic gone on.
   *
   * On an engine node the other nodes' shards count too, as their owners last wrote them to the
   * lake (their watermark and whether they were idle, at their last checkpoint).
   */
  private async advanceIdleShards(): Promise<void> {
    const now = Date.now();
    let active: number | undefined;
    let highest: number | undefined;
    const count = (watermarkMs: number, idle: boolean): void => {
      highest = highest === undefined ? watermarkMs : Math.max(highest, watermarkMs);
      if (!idle) active = active === undefined ? watermarkMs : Math.min(active, watermarkMs);
    };
    for (const st of this.shards) if (st.owned && st.watermark.kind === 'event-time') count(st.watermark.timeMs, this.idle(st, now));
    if (this.cluster) {
      const others = await Promise.all(this.shards.map((st, s) => (st.owned ? undefined : readShardFrontier(this.store, s).catch(() => undefined))));
      for (const f of others) if (f?.watermarkMs !== undefined && Number.isFinite(f.watermarkMs)) count(f.watermarkMs, f.idle === true);
    }
    active ??= highest;
    if (active === undefined) return;
    await Promise.all(
      this.shards.map(async (st, s) => {
        const behind = Math.max(st.watermark.kind === 'event-time' ? st.watermark.timeMs : Number.NEGATIVE_INFINITY, st.advancedMs) < active!;
        if (!this.idle(st, now) || !behind || st.stopped || !st.owned) return;
        try {
          await this.pool.advance(s, active!);
          st.advancedMs = Math.max(st.advancedMs, active!);
        } catch (err) {
          if (!(err instanceof ShardTaskError && err.stopped)) throw err;
          this.stopShard(s, err);
        }
      }),
    );
  }

  /**
   * Merges every window that all shards have emitted (their committed emitted watermark — for
   * daily windows, their daily one — is past the window's emission point) into gold. A shard with
   * no data in a window has no partial for it. Idempotent: same partials, same file.
   */
  mergeCompleteWindows(): Promise<number> {
    // One merge at a time (the checkpoint timer and recovery both merge): two would read partials the other deletes.
    const run = this.merging.catch(() => undefined).then(() => this.underRole('gold', () => this.mergeOnce(), 0));
    this.merging = run;
    return run;
  }

  /**
   * Exactly once per window, across crashes: publish the gold file, record the window as merged
   * (coordinator LMDB), delete its partials, clear the record. A window recorded as merged is never
   * merged again — its leftover partials (a crash while deleting them) are only deleted — so a
   * re-merge from the partials some shards still have can never overwrite complete gold (or
   * gold that reconciliation rewrote since).
   */
  /** Every shard's committed frontier: in memory, or on an engine node from the lake (every node's shards). */
  private async frontiers(): Promise<{ hourly: number; daily: number }> {
    if (this.cluster) return readLakeFrontier(this.store, this.shards.length);
    return { hourly: Math.min(...this.shards.map((st) => st.emittedWatermarkMs)), daily: Math.min(...this.shards.map((st) => st.emittedDailyMs)) };
  }

  private async mergeOnce(): Promise<number> {
    const gold = this.cluster?.role('gold');
    if (this.cluster && gold === undefined) return 0;
    const frontiers = await this.frontiers();
    const objects = await this.store.list(`${PARTIALS_PREFIX}/`);
    const windows = new Map<string, string[]>();
    for (const o of objects) {
      const m = /partials\/(hourly|daily)\/(\d+)\/s(\d+)\.json$/.exec(o.key);
      if (!m) continue;
      const k = `${m[1]}/${m[2]}`;
      let keys = windows.get(k);
      if (!keys) windows.set(k, (keys = []));
      keys.push(o.key);
    }
    let merged = 0;
    for (const [k, keys] of windows) {
      const [granularity, start] = k.split('/') as ['hourly' | 'daily', string];
      const done = `gold-merged:${k}`;
      // Engine node: the window's commit record is the marker (a previous gold owner may have merged it).
      const mergedBefore = this.cluster ? await goldMerged(this.store, `gold-${granularity}-${start}`) : this.meta.get(done) === true;
      if (!mergedBefore) {
        if (frontiers[granularity] < windowEmissionPoint(granularity, Number(start), this.options.sessionGapMs)) continue;
        const partials = await Promise.all(
          keys.map(async (key) => {
            const body = await this.store.get(key);
            if (body === undefined) throw internalError('partial_vanished', `window partial ${key} disappeared while window ${k} was merged`);
            return JSON.parse(new TextDecoder().decode(body)) as unknown;
          }),
        );
        const batch = mergeWindowPartials(granularity, partials);
        const windowStart = Number(start);
        const committer = new TwoPhaseCommitter(this.store, gold === undefined ? {} : { guard: () => checkFence(this.store, gold) });
        const pending = await committer.stage(
          [{ key: goldWindowKey(granularity, windowStart), body: encodeParquet([batch], { compression: this.options.compression }), rows: batch.numRows }],
          { id: `gold-${granularity}-${windowStart}`, kind: 'flush' },
        );
        await committer.publish(pending);
        this.env.transactionSync(() => this.meta.putSync(done, true));
        merged++;
      }
      for (const key of keys) await this.store.delete(key);
      this.env.transactionSync(() => this.meta.removeSync(done));
    }
    return merged;
  }

  /**
   * Moves dead letters from the DLQ log into dlq/ Parquet (two-phase, offset in the coordinator's
   * LMDB). A recorded flush whose publish failed is finished first; a flush that failed before it
   * was recorded discards its temps and is redone (with whatever the log holds by then).
   */
  private flushDlq(): Promise<void> {
    // One after the other: recovery's flush and a checkpoint round's (started while recovery drained
    // the logs) ran together, two reads of the DLQ log interleaving on one reader. Each call gets a
    // flush of its own, started after the one before it ended (so it covers what was durable when called).
    const run = this.dlqFlushes.then(() => this.underRole('dlq', () => this.flushDlqOnce(), undefined));
    this.dlqFlushes = run.catch(() => undefined);
    return run;
  }

  private dlqFlushes: Promise<unknown> = Promise.resolve();

  /**
   * Engine node: runs a step that commits under the `gold` or `dlq` lease. A commit the fence
   * refused is not a failure to retry: the role is given up (as a shard is, stopShard), and
   * `fallback` is the step's result.
   */
  private async underRole<T>(name: 'dlq' | 'gold', step: () => Promise<T>, fallback: T): Promise<T> {
    try {
      return await step();
    } catch (err) {
      if (!(this.cluster && isFenced(err))) throw err;
      this.log.warn({ lease: name, code: 'fenced', err }, `a commit under the ${name} lease was fenced; this node gives ${name} up until its lease is taken again`);
      this.cluster.giveUp(name);
      return fallback;
    }
  }

  private async flushDlqOnce(): Promise<void> {
    const fence = this.cluster?.role('dlq');
    if (this.cluster && fence === undefined) return;
    const committer = new TwoPhaseCommitter(this.store, fence === undefined ? {} : { guard: () => checkFence(this.store, fence) });
    // Engine node: offset and recorded flush in the lake (a new `dlq` owner finishes it); else in the LMDB.
    const state = this.cluster ? await readDlqState(this.store) : undefined;
    const save = async (offset: number, pending: PendingCommit | null): Promise<void> => {
      if (this.cluster) return writeDlqState(this.store, { offset, pending });
      // Synchronous LMDB writes only: a failed async commit rejects lmdb-js's unawaited `commitError` too (an unhandled rejection).
      this.env.transactionSync(() => {
        this.meta.putSync('dlq-pending', pending);
        this.meta.putSync('dlq-offset', offset);
      });
    };
    const recorded = state ? state.pending : ((this.meta.get('dlq-pending') as PendingCommit | null | undefined) ?? null);
    let flushed = state ? state.offset : ((this.meta.get('dlq-offset') as number | undefined) ?? -1);
    if (recorded) {
      await committer.publish(recorded);
      await save(flushed, null);
    }
    const from = flushed + 1;
    const batches: RecordBatch[] = [];
    let last = from - 1;
    for await (const record of this.dlqLog.read(from)) {
      for (const b of (readFlatIpc(record.payload) ?? tableFromIPC(record.payload)).batches) batches.push(b);
      last = record.offset;
    }
    if (last < from) return;
    const byHour = new Map<number, RecordBatch[]>();
    for (const b of batches) {
      const t = Number((b.getChild('received_at')!.data[0]!.values as BigInt64Array)[0]);
      const hour = Math.floor(t / 3_600_000) * 3_600_000;
      let list = byHour.get(hour);
      if (!list) byHour.set(hour, (list = []));
      list.push(b);
    }
    const files: Array<{ key: string; body: Uint8Array; rows: number }> = [];
    const parquet = { compression: this.options.compression, maxRowsPerCall: this.options.maxRowsPerParquetCall, maxBytesPerCall: this.options.maxBytesPerParquetCall };
    for (const [hour, list] of byHour) {
      const chunks = splitForEncode(list, parquet);
      chunks.forEach((chunk, i) => {
        const key = partKey('dlq', hour, `part-dlq-${from}-${last}${chunks.length === 1 ? '' : `-${i}`}.parquet`);
        files.push({ key, body: encodeParquetMerged(chunk, parquet), rows: chunk.reduce((n, b) => n + b.numRows, 0) });
      });
    }
    let pending: PendingCommit;
    try {
      pending = await committer.stage(files, { id: `dlq-${from}-${last}`, kind: 'flush', offsets: { first: from, last } });
      await save(last, pending);
      flushed = last;
    } catch (err) {
      await this.store.discardStaged(new Set(), (k) => k.includes('/part-dlq-')).catch(() => undefined);
      throw err;
    }
    await committer.publish(pending);
    await save(flushed, null);
    await this.dlqLog.truncateBefore(last + 1);
  }

  /** Refreshes the shards' open-window counts for the live view (called about once a second). */
  private async refreshLive(): Promise<void> {
    const lives = await Promise.all(this.shards.flatMap((st, s) => (st.stopped || !st.owned ? [] : [this.pool.live(s)])));
    const byHour = new Map<number, { events: number; activeUsers: number; sessions: number; views: number; opens: number }>();
    const byDay = new Map<number, { closed: number; bounces: number }>();
    let openSessions = 0;
    for (const l of lives) {
      openSessions += l.openSessions;
      for (const d of l.daily) {
        const acc = byDay.get(d.windowStart) ?? { closed: 0, bounces: 0 };
        acc.closed += d.sessionsClosed;
        acc.bounces += d.bounces;
        byDay.set(d.windowStart, acc);
      }
      for (const h of l.hourly) {
        const acc = byHour.get(h.windowStart) ?? { events: 0, activeUsers: 0, sessions: 0, views: 0, opens: 0 };
        acc.events += h.events;
        acc.activeUsers += h.activeUsers;
        acc.sessions += h.sessions;
        acc.views += h.notificationViews;
        acc.opens += h.notificationOpens;
        byHour.set(h.windowStart, acc);
      }
    }
    const latest = byHour.size > 0 ? Math.max(...byHour.keys()) : undefined;
    const h = latest === undefined ? undefined : byHour.get(latest);
    const latestDay = byDay.size > 0 ? Math.max(...byDay.keys()) : undefined;
    const d = latestDay === undefined ? undefined : byDay.get(latestDay);
    this.liveCache = {
      at: Date.now(),
      openSessions,
      day: d && latestDay !== undefined ? { windowStart: new Date(latestDay).toISOString(), sessionsClosed: d.closed, bounceRate: d.closed > 0 ? d.bounces / d.closed : null } : null,
      hour:
        h && latest !== undefined
          ? {
              windowStart: new Date(latest).toISOString(),
              events: h.events,
              activeUsers: h.activeUsers,
              sessions: h.sessions,
              notificationCtr: h.views > 0 ? h.opens / h.views : null,
            }
          : null,
    };
  }

  /** Live metrics for /v1/live: counters are current; open-window counts are at most ~1 s old. */
  live(): LiveSnapshot {
    const now = Date.now();
    const gwm = this.globalWatermark();
    return {
      time: new Date(now).toISOString(),
      // The rate of the last whole second with events; none processed for two seconds: 0 (it stayed at the last busy second's rate).
      eventsPerSecond: now - this.rate.lastAt >= 2000 ? 0 : this.rate.perSecond,
      acceptedTotal: this.totals.accepted,
      processedTotal: this.totals.processed,
      committedTotal: this.totals.committed,
      duplicatesTotal: this.totals.duplicates,
      tooLateTotal: this.totals.tooLate,
      globalWatermark: gwm === undefined ? null : new Date(gwm).toISOString(),
      watermarkLagSeconds: gwm === undefined ? null : (now - gwm) / 1000,
      backlogEvents: this.backlog(),
      lastCheckpointAgeSeconds: this.lastCheckpointAt === 0 ? null : (now - this.lastCheckpointAt) / 1000,
      currentHour: this.liveCache.hour,
      currentDay: this.liveCache.day,
      openSessions: this.liveCache.openSessions,
    };
  }

  /** Resolves when every durable record has been processed (or its shard stopped). */
  async drain(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const busy = (st: ShardState): boolean => this.busy(st);
    while (this.shards.some(busy)) {
      if (this.fatal) throw this.fatal;
      if (Date.now() > deadline) throw new Error('timed out draining shard queues');
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /**
   * No input for the idle timeout, and nothing left to process (see advanceIdleShards) — or a
   * graceful stop of a single node has drained it: no input comes any more, so the final
   * checkpoint moves every shard to the highest watermark and gold gets the windows the others
   * closed (a backfill ended with SIGTERM left them out of gold until the next start had idled).
   * On an engine node another node takes its shards over instead.
   */
  private idle(st: ShardState, now: number): boolean {
    if (this.closed && this.cluster === undefined && !this.fatal) return !this.busy(st);
    return now - st.lastActivityMs >= this.options.idleTimeoutMs && !this.busy(st);
  }

  /** A running shard with work left: a range in flight or records durable but not yet taken. */
  private busy(st: ShardState): boolean {
    return st.owned && !st.stopped && (st.inFlight > 0 || st.pumping || st.submittedNext < st.durableNext);
  }

  /**
   * Shutdown's drain, bounded by shutdownDrainMs: what is not processed by then stays in the log
   * (durable) for the next start, and what was processed is committed by the final checkpoint. So
   * a SIGTERM with a large backlog ends in bounded time, losing nothing.
   */
  private async drainForShutdown(): Promise<void> {
    const busy = (st: ShardState): boolean => this.busy(st);
    const deadline = Date.now() + this.options.shutdownDrainMs;
    while (this.shards.some(busy) && Date.now() < deadline) {
      if (this.fatal) throw this.fatal;
      await new Promise((r) => setTimeout(r, 5));
    }
    if (!this.shards.some(busy)) return;
    this.stopPumps = true;
    while (this.shards.some((st) => st.pumping || st.inFlight > 0)) {
      if (this.fatal) throw this.fatal;
      await new Promise((r) => setTimeout(r, 5));
    }
    const left = this.shards.reduce((n, st) => n + (st.owned && !st.stopped ? Math.max(0, st.pendingEvents) : 0), 0);
    this.log.warn({ events: left, drainMs: this.options.shutdownDrainMs }, 'shutdown: the backlog was not processed within the drain bound; committing what was, the rest stays in the log for the next start');
  }

  /**
   * Drains (up to shutdownDrainMs), checkpoints and merges everything, closes shards, pool, logs and stores. When the
   * final checkpoint still fails (after a few attempts), everything is closed anyway and this
   * throws: acknowledged events stay in the logs and are committed at the next start.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    if (this.liveTimer) clearInterval(this.liveTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.compactAbort.abort();
    this.shards.forEach((st, s) => {
      if (st.readRetry === undefined && st.linger === undefined) return;
      clearTimeout(st.readRetry);
      st.readRetry = undefined;
      this.pump(s); // the drain below reads what is left, once more (no lingering once closed)
    });
    let failure: unknown;
    try {
      if (!this.fatal) {
        await this.drainForShutdown();
        for (let attempt = 0; attempt < 3; attempt++) {
          if (attempt > 0) await new Promise((r) => setTimeout(r, this.options.retryBaseMs * 2 ** (attempt - 1)));
          await this.checkpointNow(true);
          if (this.checkpoints.failingCount() === 0) break;
        }
        if (this.checkpoints.failingCount() > 0) {
          failure = externalError('final_checkpoint_failed', `the final checkpoint failed (${this.checkpoints.describe().join('; ')}); acknowledged events stay in the log and are committed at the next start`);
        }
        await Promise.all(
          this.shards.map((st, s) =>
            st.stopped || !st.owned
              ? undefined
              : this.pool.close(s).catch((err: unknown) => {
                  // Engine node: a lease that went overdue before this node saw it lost — given up, not failed (its next owner commits the rest).
                  if (this.cluster && isFenced(err)) this.stopShard(s, err);
                  else failure ??= err;
                }),
          ),
        );
        if (failure === undefined) {
          await this.mergeCompleteWindows();
          await this.finalReconcile();
          await this.markLakeStopped();
        }
      }
    } catch (err) {
      failure ??= err;
    } finally {
      await this.compacting;
      await this.pool.destroy();
      for (const l of this.logs) await l.close();
      await this.dlqLog.close();
      await this.store.close();
      await this.env.close();
      this.checkpoints.clear();
      this.reads.clear();
      this.logEpisodes?.clear();
    }
    if (failure !== undefined) throw failure;
  }

  /**
   * After a graceful stop gold holds every committed event: once every shard has committed its
   * last files and the windows are merged, the frontier is written and late events are folded in,
   * whenever the last periodic run was. (It used to ride on the final checkpoint round, which a
   * round already in flight could run first — its reconciliation then saw none of the late files
   * the final round committed, and the interval skipped the final one; gold stayed short.)
   */
  private async finalReconcile(): Promise<void> {
    if (this.options.reconcileIntervalMs <= 0) return;
    if (this.cluster && this.cluster.role('gold') === undefined) return;
    await this.compacting;
    await this.publishFrontier();
    await this.reconcile();
  }

  /**
   * Says in the lake's frontier that this engine stopped writing it (a single node's graceful
   * stop; the last thing it writes). Engine nodes of a cluster do not: another node takes over.
   */
  private async markLakeStopped(): Promise<void> {
    if (this.cluster) return;
    await this.compacting;
    await this.publishFrontier(Date.now());
  }

  /** Writes every shard's committed frontier to the lake, where reconciliation reads it (`stoppedAtMs`: see Frontier). */
  private async publishFrontier(stoppedAtMs?: number): Promise<void> {
    const frontier = await this.frontiers();
    await writeFrontier(this.store, {
      emittedMs: frontier.hourly,
      emittedDailyMs: frontier.daily,
      sessionGapMs: this.options.sessionGapMs,
      allowedLatenessMs: this.options.allowedLatenessMs,
      ...(stoppedAtMs !== undefined ? { stoppedAtMs } : {}),
    });
  }

  private fail(err: unknown): void {
    if (this.fatal) return;
    this.fatal = err instanceof Error ? err : new Error(String(err));
    engineMetrics.ready.set(0);
    this.log.error({ err: this.fatal }, 'engine failed; restart to recover from the last checkpoint');
  }

  /**
   * Why the engine is not ready, or undefined when it is: a fatal error (a worker thread died), a
   * stopped shard, a failing checkpoint or a failed log. GET /readyz names each condition.
   */
  get failure(): Error | undefined {
    if (this.fatal) return this.fatal;
    const conditions = [...this.checkpoints.describe(), ...this.reads.describe(), ...(this.logEpisodes?.describe() ?? [])];
    return conditions.length === 0 ? undefined : externalError('engine_not_ready', conditions.join('; '));
  }

  /** Shards stopped by a failure that cannot be retried. */
  get stoppedShards(): number[] {
    return this.shards.flatMap((st, s) => (st.stopped ? [s] : []));
  }

  /** The local shard logs (for ingest), when the coordinator opened them. */
  get shardLogs(): readonly ShardLog[] {
    return this.local?.logs ?? [];
  }
}

/**
 * The watermark at which a shard emits a window: hourly at the hour's end; daily at the day's end
 * plus the session gap, so sessions still open at midnight have closed (matches the aggregate operator).
 */
export function windowEmissionPoint(granularity: 'hourly' | 'daily', windowStart: number, sessionGapMs: number): number {
  return granularity === 'hourly' ? windowStart + 3_600_000 : windowStart + 86_400_000 + sessionGapMs;
}

/** A shard's log read failed (the log is unavailable): the pump retries with backoff instead of failing the engine. */
class LogReadFailed extends Error {
  constructor(override readonly cause: unknown) {
    super(`log read failed: ${(cause as Error)?.message ?? String(cause)}`);
    this.name = 'LogReadFailed';
  }
}
