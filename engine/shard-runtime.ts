/**
 * One shard's runtime inside a worker: it owns the shard's LMDB environment, its operator
 * pipeline, its output buffers and its two-phase commits.
 *
 * Exactly once (design: "Exactly-once, the suggested way"):
 *
 *   batch(offset) ──▶ pipeline ──▶ buffers (bronze, silver, late, sessions, window partials)
 *   checkpoint:
 *     1. encode every buffer to Parquet, names part-s{shard}-{first}-{last} (deterministic)
 *     2. stage the files (invisible to readers)                       ── crash: temps discarded
 *     3. ONE LMDB transaction: dedup ids + operator state + offset + pending files
 *     4. publish the staged files, write the commit record            ── crash: recovery re-publishes
 *     5. clear `pending`
 *   recovery (open): publish recorded pending files, discard other staged temps of this shard,
 *   restore state, and let the coordinator replay the log from offset + 1.
 *
 * A failed checkpoint is retried by calling `checkpoint()` again (the coordinator backs off):
 *
 *   fails in 1–3 (encode, stage, LMDB txn) ── nothing recorded: buffers kept, own temps discarded;
 *                                             the retry encodes everything buffered by then
 *   fails in 4–5 (publish, clear pending)  ── recorded: `unpublished` holds the commit; the retry
 *                                             first finishes exactly that commit, never re-encodes
 *
 * File names: `part-s{shard}-{first}-{last}[-w{emittedWatermark}][-{i}].parquet`. The range is
 * the log offsets the checkpoint covers (disjoint between committed checkpoints); `-w…` marks a
 * checkpoint that covers no new offset (an idle shard's watermark advance closed sessions), so
 * two of them differ; `-0`, `-1`, … split a partition's rows into several Parquet calls of at
 * most maxRowsPerParquetCall rows / maxBytesPerParquetCall bytes (`splitForEncode`,
 * deterministic for the same buffers). Only a recorded commit is ever published, under the
 * names it recorded, so a replay never publishes one row under two names.
 *
 * Poison quarantine: a log record that cannot be decoded or has another schema than ingest's
 * goes to the DLQ (a `dlq` row with the error and the record's bytes in base64, committed with
 * this shard's checkpoint like any output) and the shard goes on. Both are checked per record,
 * so a replay of the same offsets quarantines the same records; the DLQ row is committed exactly
 * once with the checkpoint that covers its offset. An error of the pipeline itself (a bug: its
 * input passed those checks) quarantines the records it was running on together (`processGroup`).
 */
import type { Database, RootDatabase } from 'lmdb';
import { join } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { DataType, Int32, Int64, makeBuilder, makeData, RecordBatch, Schema, Field, Struct, tableFromIPC } from 'apache-arrow';
import { recordBatchOf } from '../common/arrow-batch.js';
import { concatBatches } from '../common/arrow-concat.js';
import { readFlatIpc, type IpcRecord } from '../common/ipc-read.js';
import { takeRows, maskToIndices } from '../common/arrow-take.js';
import { openStateEnv } from './state-env.js';
import { classifyError, internalError, userError } from '../common/errors.js';
import { dlqSchema, ingestSchema } from '../common/schema.js';
import { partKey, partName, partitionStart, TABLES, META_PREFIX, type TableName } from '../common/lake-layout.js';
import type { ObjectStore } from '../storage/object-store.js';
import { openObjectStore } from '../storage/open-store.js';
import { decodeParquet, encodeParquet, encodeParquetMerged, splitForEncode, validateParquetOptions, type ParquetOptions } from '../storage/parquet.js';
import { TwoPhaseCommitter, type PendingCommit } from '../storage/two-phase.js';
import { ShardPipeline } from './operators/shard-pipeline.js';
import type { BatchResult, CheckpointResult, LiveResult, OpenResult, PurgeResult, QuarantinedRecord, ShardRuntimeOptions, ShardWatermark } from './types.js';
import { userKeys } from './erasure-keys.js';
import { checkFence } from './lease-fence.js';
import { publishIntentKey, ShardStateSync } from './state-snapshot.js';

/** Key prefix of a window's per-shard partial aggregates (merged into gold by the coordinator). */
export const PARTIALS_PREFIX = `${META_PREFIX}/partials`;
export const partialKey = (granularity: 'hourly' | 'daily', windowStart: number, shard: number): string =>
  `${PARTIALS_PREFIX}/${granularity}/${windowStart}/s${shard}.json`;

interface Buffered {
  batches: RecordBatch[];
  rows: number;
  bytes: number;
  /** Log offset of the first record that added rows here (names the chunk it becomes). */
  firstOffset: number;
}

/** A buffer already encoded between checkpoints (a chunk), waiting for the next checkpoint to commit it. */
interface EncodedFile {
  key: string;
  body: Uint8Array;
  rows: number;
}

const CHECKPOINT_KEYS = { offset: 'offset', state: 'state', pending: 'pending', emitted: 'emitted', emittedDaily: 'emitted-daily' } as const;

/** Most record bytes a quarantined record keeps in its DLQ row (base64 of a prefix past this). */
const QUARANTINE_RAW_BYTES = 1 << 20;

export class ShardRuntime {
  readonly shard: number;
  readonly openResult: OpenResult;
  private readonly env: RootDatabase;
  private readonly meta: Database;
  private readonly store: ObjectStore;
  private readonly committer: TwoPhaseCommitter;
  private readonly pipeline: ShardPipeline;
  private readonly options: ShardRuntimeOptions;
  /** Last offset whose effects are committed. */
  private committedOffset: number;
  /** Range of offsets processed since the last checkpoint. */
  private firstOffset: number;
  private lastOffset: number;
  private readonly buffers = new Map<string, Buffered>();
  private bufferedBytes = 0;
  /** Chunks encoded since the last checkpoint (see `encodeFullBuffers`), and their bytes. */
  private encoded: EncodedFile[] = [];
  private encodedBytes = 0;
  /** Offset of the record being processed (new buffers start at it). */
  private currentOffset = -1;
  private partials: Array<{ key: string; body: Uint8Array; granularity: 'hourly' | 'daily'; windowStart: number }> = [];
  private stats = { bronzeRows: 0, silverRows: 0, duplicates: 0, tooLate: 0 };
  /** A checkpoint recorded in LMDB whose files are not all published yet (its publish failed): the next checkpoint finishes it first. */
  private unpublished: PendingCommit | undefined;
  private readonly parquet: Required<ParquetOptions>;
  /** Watermark up to which windows and sessions were emitted (in buffers or committed). */
  private emittedWatermark: number;
  private committedEmitted: number;
  /** The same for daily windows (they may wait for their day's sessions to close). */
  private emittedDaily: number;
  private committedEmittedDaily: number;
  /** Ships each checkpoint's state delta with its commit (options.stateInObjectStore), else undefined. */
  private stateSync: ShardStateSync | undefined;

  private constructor(
    shard: number,
    options: ShardRuntimeOptions,
    env: RootDatabase,
    store: ObjectStore,
    pipeline: ShardPipeline,
    openResult: OpenResult,
  ) {
    this.shard = shard;
    this.options = options;
    this.env = env;
    this.meta = env.openDB({ name: 'checkpoint', encoding: 'msgpack' });
    this.store = store;
    this.committer = fencedCommitter(shard, store, options);
    this.pipeline = pipeline;
    this.openResult = openResult;
    this.committedOffset = openResult.checkpointOffset;
    this.firstOffset = this.committedOffset + 1;
    this.lastOffset = this.committedOffset;
    this.emittedWatermark = openResult.emittedWatermarkMs;
    this.committedEmitted = openResult.emittedWatermarkMs;
    this.emittedDaily = openResult.emittedDailyMs;
    this.committedEmittedDaily = openResult.emittedDailyMs;
    this.parquet = validateParquetOptions({ compression: options.compression, maxRowsPerCall: options.maxRowsPerParquetCall, maxBytesPerCall: options.maxBytesPerParquetCall });
  }

  static async open(shard: number, options: ShardRuntimeOptions): Promise<ShardRuntime> {
    const dir = join(options.dataDir, 'shards', String(shard));
    await mkdir(dir, { recursive: true });
    const store = await openObjectStore(options.lake, { s3Endpoint: options.s3Endpoint });
    const committer = fencedCommitter(shard, store, options);
    // State in the object store (failover): finishes a commit a previous owner left half published,
    // then restores state.mdb when it is missing or behind.
    const sync = options.stateInObjectStore ? await ShardStateSync.prepare({ shard, shardDir: dir, store, committer, options: options.stateInObjectStore === true ? {} : options.stateInObjectStore }) : undefined;
    const lmdbEnv = openStateEnv(join(dir, 'state.mdb'));
    const env = sync ? sync.attach(lmdbEnv) : lmdbEnv;
    const meta = env.openDB({ name: 'checkpoint', encoding: 'msgpack' });
    const pending = (meta.get(CHECKPOINT_KEYS.pending) as PendingCommit | null | undefined) ?? null;
    const owns = (stagingKey: string): boolean => stagingKey.includes(`/part-s${shard}-`) || stagingKey.endsWith(`/s${shard}.json`) || sync?.owns(stagingKey) === true;
    const recorded = pending && sync ? await sync.complete(pending) : pending;
    const recovered = await committer.recover(recorded ? [recorded] : [], owns);
    // Synchronous LMDB writes only: a failed async commit also rejects lmdb-js's `commitError`
    // promise, which nobody awaits (an unhandled rejection that ends the process on a full disk).
    if (pending) env.transactionSync(() => meta.putSync(CHECKPOINT_KEYS.pending, null));
    if (pending && sync) await sync.published(pending);
    const pipeline = new ShardPipeline({
      shard,
      db: env,
      allowedLatenessMs: options.allowedLatenessMs,
      sessionGapMs: options.sessionGapMs,
      dedupTtlMs: options.dedupTtlMs,
      dedupHotCapacity: options.dedupHotCapacity,
      metricEventTypes: options.metricEventTypes,
    });
    const state = meta.get(CHECKPOINT_KEYS.state) as Uint8Array | undefined;
    if (state) pipeline.restore(state);
    const offset = (meta.get(CHECKPOINT_KEYS.offset) as number | undefined) ?? -1;
    const emitted = (meta.get(CHECKPOINT_KEYS.emitted) as number | undefined) ?? Number.NEGATIVE_INFINITY;
    const runtime = new ShardRuntime(shard, options, env, store, pipeline, {
      shard,
      checkpointOffset: offset,
      recoveredPublished: recovered.published + (sync?.rolledForward ?? 0),
      recoveredDiscarded: recovered.discarded,
      emittedWatermarkMs: emitted,
      emittedDailyMs: (meta.get(CHECKPOINT_KEYS.emittedDaily) as number | undefined) ?? emitted,
      watermark: pipeline.localWatermark(),
    });
    runtime.stateSync = sync;
    return runtime;
  }

  /**
   * Processes consecutive log records (one pool task); one result for the range. Each record is
   * decoded and checked on its own (one that cannot be is quarantined alone); runs of records
   * read with one schema are concatenated and go through the operators as ONE batch
   * (`processGroup`), so what a record costs apart from its rows — a pipeline pass, buffered
   * parts for bronze and silver, their merges at the checkpoint — is paid per range, not per
   * record (at SDK traffic a record holds ≈ 25 events). The pipeline marks each record's rows as
   * processing them one by one would (ShardPipeline.processBatch `recordEnds`), so the outputs do
   * not depend on where the log was cut into ranges.
   */
  processRecords(offsets: number[], payloads: ArrayBuffer[]): BatchResult {
    const total = this.batchResult(offsets[offsets.length - 1] ?? this.lastOffset, 0, 0, 0, 0);
    total.records = offsets.length;
    const add = (r: BatchResult): void => {
      total.rows += r.rows;
      total.silverRows += r.silverRows;
      total.duplicates += r.duplicates;
      total.tooLate += r.tooLate;
      total.quarantined.push(...r.quarantined);
      total.watermark = r.watermark;
      total.bufferedBytes = r.bufferedBytes;
    };
    let group: DecodedRecord[] = [];
    const flush = (): void => {
      if (group.length > 0) add(this.processGroup(group));
      group = [];
    };
    for (let k = 0; k < offsets.length; k++) {
      const offset = offsets[k]!;
      const bytes = new Uint8Array(payloads[k]!);
      const last = group.length > 0 ? group[group.length - 1]!.offset : this.lastOffset;
      // Already covered (a replay overlapping the live stream): effects are in state or committed.
      if (offset <= last) continue;
      if (this.options.denseOffsets !== false && offset !== last + 1 && last !== -1) {
        flush();
        throw internalError('offset_gap', `shard ${this.shard} expected log offset ${last + 1}, got ${offset}`);
      }
      const decoded = decodeRecord(offset, bytes);
      if ('error' in decoded) {
        flush();
        add(this.quarantine(offset, bytes, decoded.error));
        continue;
      }
      // Concatenated batches need one schema: the lean reader hands out one Schema object while ingest's schema bytes repeat.
      if (group.length > 0 && group[0]!.table.schema !== decoded.table.schema) flush();
      group.push(decoded);
    }
    flush();
    return total;
  }

  /** One log record (see processRecords). */
  processBatch(offset: number, bytes: Uint8Array): BatchResult {
    return this.processRecords([offset], [bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? (bytes.buffer as ArrayBuffer) : bytes.slice().buffer]);
  }

  /**
   * Consecutive decoded records with one schema: their batches concatenated and run through the
   * pipeline as one (each record's rows keep their log offset in bronze). A pipeline error —
   * decoding and the schema were checked per record, so it is a bug, not bad input — quarantines
   * every record of the group: the operators ran on them together.
   */
  private processGroup(group: DecodedRecord[]): BatchResult {
    const first = group[0]!.offset;
    const last = group[group.length - 1]!.offset;
    this.currentOffset = first;
    const batches: RecordBatch[] = [];
    const recordEnds: number[] = [];
    const recordOffsets: number[] = [];
    let rows = 0;
    for (const r of group) {
      for (const b of r.table.batches) {
        if (b.numRows === 0) continue;
        batches.push(b);
        rows += b.numRows;
      }
      if (recordEnds.length === 0 || rows > recordEnds[recordEnds.length - 1]!) {
        recordEnds.push(rows);
        recordOffsets.push(r.offset);
      }
    }
    // Run the pipeline before buffering anything, so a group that throws leaves no rows behind.
    let batch: RecordBatch | undefined;
    let out: ReturnType<ShardPipeline['processBatch']> | undefined;
    try {
      if (batches.length > 0) {
        batch = batches.length === 1 ? batches[0]! : concatBatches(batches);
        out = this.pipeline.processBatch(batch, Int32Array.from(recordEnds));
      }
    } catch (err) {
      const results = group.map((r) => this.quarantine(r.offset, r.bytes, err));
      const result = results[results.length - 1]!;
      return { ...result, records: group.length, quarantined: results.flatMap((r) => r.quarantined) };
    }
    let silverRows = 0;
    let duplicates = 0;
    let tooLate = 0;
    if (batch !== undefined && out !== undefined) {
      this.addBronze(batch, recordEnds, recordOffsets);
      duplicates = out.duplicates;
      silverRows = out.silver.numRows;
      this.addByTime('events', out.silver, 'event_time');
      const late = maskToIndices(out.tooLate);
      if (late.length > 0) {
        tooLate = late.length;
        this.addByTime('late_events', takeRows(out.silver, late), 'event_time');
      }
    }
    for (const r of group) this.covered(r.offset);
    this.stats.bronzeRows += rows;
    this.stats.silverRows += silverRows;
    this.stats.duplicates += duplicates;
    this.stats.tooLate += tooLate;
    const wm = this.pipeline.localWatermark();
    if (wm.kind === 'event-time') this.emitUpTo(wm.timeMs);
    this.encodeFullBuffers(last);
    return { ...this.batchResult(last, rows, silverRows, duplicates, tooLate), records: group.length };
  }

  /** `offset` is processed (or quarantined): the next checkpoint covers it. */
  private covered(offset: number): void {
    if (this.firstOffset > offset || this.lastOffset < this.firstOffset) this.firstOffset = offset;
    this.lastOffset = offset;
  }

  /**
   * Poison quarantine: the record becomes one DLQ row (received_at = now, source `engine`, the
   * error's code and message, the record's bytes as base64) buffered for this shard's next
   * checkpoint, and its offset counts as processed.
   */
  private quarantine(offset: number, bytes: Uint8Array, err: unknown): BatchResult {
    const e = classifyError(err);
    const code = e.code;
    const kept = bytes.subarray(0, QUARANTINE_RAW_BYTES);
    const message =
      `shard ${this.shard} log offset ${offset} (${bytes.byteLength} bytes) could not be processed and was quarantined: ${e.message}` +
      (kept.byteLength < bytes.byteLength ? `; raw holds the first ${kept.byteLength} bytes` : '');
    const values: Record<string, unknown> = {
      received_at: Date.now(),
      source: 'engine',
      write_key_id: null,
      code,
      message,
      raw: Buffer.from(kept.buffer, kept.byteOffset, kept.byteLength).toString('base64'),
    };
    const children = dlqSchema.fields.map((f) => {
      const b = makeBuilder({ type: f.type, nullValues: [null, undefined] });
      b.append(values[f.name] as never);
      return b.finish().flush();
    });
    this.addByTime('dlq', new RecordBatch(dlqSchema, makeData({ type: new Struct(dlqSchema.fields), length: 1, nullCount: 0, children })), 'received_at');
    this.covered(offset);
    const record: QuarantinedRecord = { offset, code, message, bytes: bytes.byteLength };
    return { ...this.batchResult(offset, 0, 0, 0, 0), quarantined: [record] };
  }

  /** The coordinator pushes an idle shard's watermark forward so it emits its (empty) windows. */
  advance(watermarkMs: number): BatchResult {
    this.emitUpTo(watermarkMs);
    return this.batchResult(this.lastOffset, 0, 0, 0, 0);
  }

  live(): LiveResult {
    return { shard: this.shard, watermark: this.watermark(), ...this.pipeline.live() };
  }

  async checkpoint(): Promise<CheckpointResult> {
    const started = performance.now();
    if (this.unpublished) {
      await this.finishPublish(this.unpublished);
      this.unpublished = undefined;
    }
    const nothingNew =
      this.lastOffset === this.committedOffset && this.partials.length === 0 && this.buffers.size === 0 && this.encoded.length === 0 && this.emittedWatermark === this.committedEmitted && this.emittedDaily === this.committedEmittedDaily;
    if (nothingNew) {
      return { shard: this.shard, offset: this.committedOffset, files: 0, hourlyWindows: [], dailyWindows: [], emittedWatermarkMs: this.committedEmitted, emittedDailyMs: this.committedEmittedDaily, durationMs: 0, dedupHot: this.pipeline.dedupHotTable };
    }
    const first = Math.max(0, this.firstOffset);
    const last = this.lastOffset;
    // No new offset (an idle shard's advance emitted sessions or partials): the emitted watermark, which moved, keeps names and the record id unique.
    const tag = first > last ? `-w${this.emittedWatermark}` : '';
    let pending: PendingCommit;
    try {
      const files = this.encodeBuffers((suffix) => partName(this.shard, first, last, `${tag}${suffix}`));
      pending = await this.committer.stage(files, {
        id: `s${this.shard}-${first}-${last}${tag}`,
        kind: 'flush',
        shard: this.shard,
        offsets: { first, last },
        stats: { ...this.stats },
      });
      const state = this.pipeline.checkpoint();
      const write = (): void => {
        this.pipeline.onCheckpointTxn();
        this.meta.putSync(CHECKPOINT_KEYS.state, state);
        this.meta.putSync(CHECKPOINT_KEYS.offset, last);
        this.meta.putSync(CHECKPOINT_KEYS.emitted, this.emittedWatermark);
        this.meta.putSync(CHECKPOINT_KEYS.emittedDaily, this.emittedDaily);
        this.meta.putSync(CHECKPOINT_KEYS.pending, pending);
      };
      if (this.stateSync) this.stateSync.checkpointTransaction(pending.record.id, last, write);
      else this.env.transactionSync(write);
    } catch (err) {
      // Nothing recorded: the buffers stay for the retry; this attempt's temps would only wait for the next restart.
      await this.committer.recover([], (k) => this.ownsStaged(k)).catch(() => undefined);
      throw err;
    }
    // Recorded: from here on this commit is only ever finished, never redone.
    this.unpublished = pending;
    const files = pending.staged.length;
    const hourlyWindows = this.partials.filter((p) => p.granularity === 'hourly').map((p) => p.windowStart);
    const dailyWindows = this.partials.filter((p) => p.granularity === 'daily').map((p) => p.windowStart);
    this.committedOffset = last;
    this.committedEmitted = this.emittedWatermark;
    this.committedEmittedDaily = this.emittedDaily;
    this.firstOffset = last + 1;
    this.buffers.clear();
    this.bufferedBytes = 0;
    this.encoded = [];
    this.encodedBytes = 0;
    this.partials = [];
    this.stats = { bronzeRows: 0, silverRows: 0, duplicates: 0, tooLate: 0 };
    let deferred: unknown;
    try {
      // Forgets the committed dedup ids, then merges cold runs (LMDB writes that may fail on a full disk and are redone next time).
      this.pipeline.afterCheckpoint();
    } catch (err) {
      deferred = err;
    }
    await this.finishPublish(pending);
    this.unpublished = undefined;
    if (deferred !== undefined) throw deferred;
    return {
      shard: this.shard,
      offset: last,
      files,
      hourlyWindows,
      dailyWindows,
      emittedWatermarkMs: this.committedEmitted,
      emittedDailyMs: this.committedEmittedDaily,
      durationMs: performance.now() - started,
      dedupHot: this.pipeline.dedupHotTable,
    };
  }

  /** Phase two of a recorded commit: publish its files, then clear `pending` (idempotent, retried until it succeeds). */
  private async finishPublish(pending: PendingCommit): Promise<void> {
    await this.committer.publish(this.stateSync ? await this.stateSync.complete(pending) : pending);
    this.env.transactionSync(() => this.meta.putSync(CHECKPOINT_KEYS.pending, null));
    await this.stateSync?.published(pending);
  }

  private ownsStaged(stagingKey: string): boolean {
    return stagingKey.includes(`/part-s${this.shard}-`) || stagingKey.endsWith(`/s${this.shard}.json`);
  }

  /**
   * Incremental encoding: at the end of record `offset`, every buffer past encodeChunkRows rows or
   * encodeChunkBytes Arrow bytes is encoded now, as a chunk named by the offsets of the records it
   * holds (`part-s{shard}-{first}-{offset}-c[-i]`), and waits for the next checkpoint as Parquet
   * bytes (several times smaller than its Arrow buffers). So a checkpoint encodes only what came
   * since the last chunk, whatever the load. Chunks depend only on the records since the last
   * checkpoint, so a replay from it cuts the same chunks under the same names.
   */
  private encodeFullBuffers(offset: number): void {
    const { encodeChunkRows, encodeChunkBytes } = this.options;
    for (const [bufferKey, b] of this.buffers) {
      if (b.rows < encodeChunkRows && b.bytes < encodeChunkBytes) continue;
      const [table, start] = bufferKey.split('@') as [TableName, string];
      const chunks = splitForEncode(b.batches, this.parquet);
      chunks.forEach((chunk, i) => {
        const body = encodeParquetMerged(chunk, this.parquet);
        const name = partName(this.shard, b.firstOffset, offset, chunks.length === 1 ? '-c' : `-c-${i}`);
        this.encoded.push({ key: partKey(table, Number(start), name), body, rows: chunk.reduce((n, x) => n + x.numRows, 0) });
        this.encodedBytes += body.byteLength;
      });
      this.bufferedBytes -= b.bytes;
      this.buffers.delete(bufferKey);
    }
  }

  /**
   * Every buffer as Parquet files (one per partition, or `-0`, `-1`, … when its rows exceed one
   * encode call), then the window partials. Each encode call gets at most maxRowsPerParquetCall
   * rows and about maxBytesPerParquetCall Arrow bytes.
   */
  private encodeBuffers(fileName: (suffix: string) => string): EncodedFile[] {
    const files: EncodedFile[] = [...this.encoded];
    for (const [bufferKey, buffered] of this.buffers) {
      const [table, start] = bufferKey.split('@') as [TableName, string];
      const chunks = splitForEncode(buffered.batches, this.parquet);
      chunks.forEach((chunk, i) => {
        files.push({
          key: partKey(table, Number(start), fileName(chunks.length === 1 ? '' : `-${i}`)),
          // One batch per log record is buffered; merged, they encode ~30 % cheaper (common/arrow-concat).
          body: encodeParquetMerged(chunk, this.parquet),
          rows: chunk.reduce((n, b) => n + b.numRows, 0),
        });
      });
    }
    for (const p of this.partials) files.push({ key: p.key, body: p.body, rows: 0 });
    return files;
  }

  /** Engine node, lease lost: closes WITHOUT a checkpoint (the shard's next owner redoes the uncommitted work from the lake). */
  async discard(): Promise<void> {
    await this.store.close().catch(() => undefined);
    await this.env.close();
  }

  async close(): Promise<void> {
    await this.checkpoint();
    await this.store.close();
    await this.env.close();
  }

  private watermark(): ShardWatermark {
    return this.pipeline.localWatermark();
  }

  private emitUpTo(watermarkMs: number): void {
    if (!(watermarkMs > this.emittedWatermark)) return;
    this.emittedWatermark = watermarkMs;
    const closed = this.pipeline.advanceWatermark(watermarkMs);
    this.emittedDaily = this.pipeline.dailyFrontier();
    if (closed.sessions && closed.sessions.numRows > 0) this.addByTime('sessions', closed.sessions, 'session_start');
    if (closed.aliases) this.addByTime('session_aliases', closed.aliases, 'session_start');
    for (const p of closed.hourly) this.addPartial('hourly', p.windowStart, p);
    for (const p of closed.daily) this.addPartial('daily', p.windowStart, p);
  }

  private addPartial(granularity: 'hourly' | 'daily', windowStart: number, partial: unknown): void {
    const body = new TextEncoder().encode(JSON.stringify(partial));
    this.partials.push({ key: partialKey(granularity, windowStart, this.shard), body, granularity, windowStart });
  }

  /** Splits `batch` by the partition of its `timeColumn` and appends the pieces to their buffers. */
  private addByTime(table: TableName, batch: RecordBatch, timeColumn: string): void {
    if (batch.numRows === 0) return;
    const granularity = TABLES[table].granularity;
    const times = batch.getChild(timeColumn)!.data[0]!.values as BigInt64Array;
    const n = batch.numRows;
    const firstStart = partitionStart(Number(times[0]), granularity);
    let uniform = true;
    for (let i = 1; i < n && uniform; i++) uniform = partitionStart(Number(times[i]), granularity) === firstStart;
    if (uniform) {
      this.append(table, firstStart, batch);
      return;
    }
    const groups = new Map<number, number[]>();
    for (let i = 0; i < n; i++) {
      const start = partitionStart(Number(times[i]), granularity);
      let g = groups.get(start);
      if (!g) groups.set(start, (g = []));
      g.push(i);
    }
    for (const [start, idx] of groups) this.append(table, start, takeRows(batch, Int32Array.from(idx)));
  }

  private append(table: TableName, start: number, batch: RecordBatch): void {
    const key = `${table}@${start}`;
    let b = this.buffers.get(key);
    if (!b) this.buffers.set(key, (b = { batches: [], rows: 0, bytes: 0, firstOffset: this.currentOffset }));
    b.batches.push(batch);
    b.rows += batch.numRows;
    const bytes = batchBytes(batch);
    b.bytes += bytes;
    this.bufferedBytes += bytes;
  }

  /** Bronze keeps every accepted row as received, with its shard and log offset (rows before `recordEnds[k]` are record `recordOffsets[k]`'s). */
  private addBronze(batch: RecordBatch, recordEnds: number[], recordOffsets: number[]): void {
    const n = batch.numRows;
    const shardCol = makeData({ type: new Int32(), length: n, nullCount: 0, data: new Int32Array(n).fill(this.shard) });
    const offsets = new BigInt64Array(n);
    for (let k = 0, from = 0; k < recordEnds.length; from = recordEnds[k]!, k++) offsets.fill(BigInt(recordOffsets[k]!), from, recordEnds[k]!);
    const offsetCol = makeData({ type: new Int64(), length: n, nullCount: 0, data: offsets });
    const children = [...batch.data.children, shardCol, offsetCol];
    this.addByTime('bronze_events', recordBatchOf(bronzeSchema(batch.schema), n, children), 'received_at');
  }

  /** Erasure: forgets the users' open sessions, in memory and in LMDB (see ShardPipeline.removeUser). */
  purgeUsers(users: string[]): PurgeResult {
    let openSessions = 0;
    for (const key of userKeys(users)) openSessions += this.pipeline.removeUser(key, this.env);
    // The lake's state deltas and base still hold their sessions: the next checkpoint writes a base and deletes those.
    this.stateSync?.requestBase();
    // Their sessions that closed since the last checkpoint are still buffered (the job scans committed files only).
    const ids = new Set(users);
    const without = (batch: RecordBatch): RecordBatch => {
      const col = batch.getChild('user_id');
      const keep = new Uint8Array(batch.numRows);
      for (let i = 0; i < batch.numRows; i++) keep[i] = ids.has(col?.get(i) as string) ? 0 : 1;
      const idx = maskToIndices(keep);
      return idx.length === batch.numRows ? batch : takeRows(batch, idx);
    };
    for (const [k, b] of this.buffers) {
      if (!k.startsWith('sessions@')) continue;
      b.batches = b.batches.map((batch) => {
        const kept = without(batch);
        openSessions += batch.numRows - kept.numRows;
        b.rows -= batch.numRows - kept.numRows;
        return kept;
      });
      if (b.rows === 0) {
        this.buffers.delete(k);
        this.bufferedBytes -= b.bytes;
      }
    }
    // …or already encoded into a chunk (a big backlog between checkpoints): decoded, filtered, encoded again.
    const sessionsPrefix = `${TABLES.sessions.prefix}/`;
    this.encoded = this.encoded.flatMap((f) => {
      if (!f.key.startsWith(sessionsPrefix)) return [f];
      const batches = decodeParquet(f.body).batches;
      const kept = batches.map(without);
      const removed = batches.reduce((n, b) => n + b.numRows, 0) - kept.reduce((n, b) => n + b.numRows, 0);
      if (removed === 0) return [f];
      openSessions += removed;
      this.encodedBytes -= f.body.byteLength;
      if (removed === f.rows) return [];
      const body = encodeParquet(kept.filter((b) => b.numRows > 0), this.parquet);
      this.encodedBytes += body.byteLength;
      return [{ key: f.key, body, rows: f.rows - removed }];
    });
    return { shard: this.shard, openSessions };
  }

  private batchResult(offset: number, rows: number, silverRows: number, duplicates: number, tooLate: number): BatchResult {
    return { shard: this.shard, offset, records: 1, rows, silverRows, duplicates, tooLate, watermark: this.watermark(), bufferedBytes: this.bufferedBytes + this.encodedBytes, quarantined: [] };
  }
}

/**
 * The shard's committer. On an engine node every publish first checks the shard's lease fence;
 * with state in the object store (a shard another node may take over) each publish keeps its
 * intent there, so the next owner finishes a publish cut halfway (ShardStateSync.prepare).
 */
function fencedCommitter(shard: number, store: ObjectStore, options: ShardRuntimeOptions): TwoPhaseCommitter {
  const fence = options.fence;
  return new TwoPhaseCommitter(store, {
    ...(fence === undefined ? {} : { guard: () => checkFence(store, fence) }),
    ...(options.stateInObjectStore ? { intentKey: publishIntentKey(shard) } : {}),
  });
}

/** Bronze's schema per record schema (the lean IPC reader hands out one Schema while ingest's schema bytes repeat). */
const bronzeSchemas = new WeakMap<Schema, Schema>();
function bronzeSchema(schema: Schema): Schema {
  let bronze = bronzeSchemas.get(schema);
  if (bronze === undefined) {
    bronze = new Schema([...schema.fields, new Field('shard', new Int32(), false), new Field('log_offset', new Int64(), false)]);
    bronzeSchemas.set(schema, bronze);
  }
  return bronze;
}

function batchBytes(batch: RecordBatch): number {
  let bytes = 0;
  for (const child of batch.data.children) {
    bytes += child.values?.byteLength ?? 0;
    bytes += child.valueOffsets?.byteLength ?? 0;
  }
  return bytes;
}

/** A log record decoded and checked against ingest's schema. */
interface DecodedRecord {
  offset: number;
  bytes: Uint8Array;
  table: IpcRecord;
}

/** Decodes a record (the lean reader takes every record ingest writes; anything else, and a broken record's error, goes through Arrow JS) and checks its schema. */
function decodeRecord(offset: number, bytes: Uint8Array): DecodedRecord | { error: unknown } {
  let table: IpcRecord;
  try {
    table = readFlatIpc(bytes) ?? tableFromIPC(bytes);
  } catch (err) {
    return { error: userError('undecodable_record', `not an Arrow IPC stream: ${(err as Error)?.message ?? String(err)}`, err) };
  }
  try {
    checkIngestSchema(table);
  } catch (err) {
    return { error: err };
  }
  return { offset, bytes, table };
}

/**
 * Throws a user error unless `table` has ingest's columns (names, order, types; dictionary ids
 * aside): a record of another shape would break the shard's buffers and every Parquet file of
 * its checkpoint, so it is quarantined before it touches anything.
 */
function checkIngestSchema(table: IpcRecord): void {
  const got = table.schema.fields;
  const want = ingestSchema.fields;
  const same =
    got.length === want.length &&
    got.every((f, i) => {
      const w = want[i]!;
      if (f.name !== w.name || f.type.typeId !== w.type.typeId) return false;
      if (DataType.isDictionary(f.type) && DataType.isDictionary(w.type)) return f.type.dictionary.typeId === w.type.dictionary.typeId;
      if (DataType.isTimestamp(f.type) && DataType.isTimestamp(w.type)) return f.type.unit === w.type.unit;
      return true;
    });
  if (!same) {
    throw userError('unexpected_schema', `log record has columns [${got.map((f) => `${f.name}: ${String(f.type)}`).join(', ')}], not ingest's [${want.map((f) => f.name).join(', ')}]`);
  }
}
