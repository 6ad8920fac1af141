/**
 * A shard's operator chain: dedup → watermark → sessionize → aggregate, over one ingest batch at
 * a time, deterministic (time comes only from the data and from the watermarks it is given).
 *
 *   ingest batch ─▶ dedup (keep mask) ─▶ for each kept row: too late? sessionize, aggregate
 *               ─▶ silver batch (kept rows, session_id stamped, `raw` dropped) + too-late mask
 *   advanceWatermark(wm) ─▶ closed sessions (gold) + window partials (hourly, daily)
 */
import { makeData, RecordBatch, Schema, Struct, type Data, type Field, type Dictionary, type Timestamp, type Utf8, type Vector } from 'apache-arrow';
import type { Database, RootDatabase } from 'lmdb';
import { maskToIndices, takeRows } from '../../common/arrow-take.js';
import { recordBatchOf } from '../../common/arrow-batch.js';
import { Utf8Column } from '../../ingest/batch-builder.js';
import { sessionAliasesSchema, sessionsSchema, silverSchema } from '../../common/schema.js';
import { DEFAULT_METRIC_EVENT_TYPES, type MetricEventTypes } from '../gold-sql.js';
import type { ShardWatermark } from '../types.js';
import { epochMillis } from '../kernels/epoch-millis.js';
import { markTooLate, markTooLateByRecord } from '../kernels/event-time.js';
import { fingerprintKey, fingerprintUtf8 } from '../kernels/fingerprint.js';
import { screenName } from '../kernels/screen-name.js';
import { RecordWriter } from '../kernels/record-bytes.js';
import { unpackSessions } from '../kernels/session-record.js';
import { SESSION_ID_CHARS, SessionTable, type ClosedSession, type DimValues, type SessionSnapshot } from '../kernels/session-table.js';
import { AggregateOperator, M, type Acc, type AggregateStateDbs, type WindowPartial } from './aggregate-operator.js';
import { DedupOperator } from './dedup-operator.js';

const HOUR = 3_600_000;
const DAY = 86_400_000;
/** How long past its usual emission point a daily window may wait for its day's sessions to close. */
export const MAX_DAILY_HOLD_MS = DAY;

export interface ShardPipelineOptions {
  shard: number;
  /** The shard's LMDB environment (dedup index lives in it). */
  db: RootDatabase;
  allowedLatenessMs: number;
  sessionGapMs: number;
  dedupTtlMs: number;
  dedupHotCapacity?: number;
  metricEventTypes?: Partial<MetricEventTypes>;
}

export interface BatchOutput {
  /** Kept rows in silverSchema column order, session_id stamped. */
  silver: RecordBatch;
  /** Per silver row: 1 when the row is too late for its (already emitted) hourly window. */
  tooLate: Uint8Array;
  duplicates: number;
}

export interface WatermarkOutput {
  sessions: RecordBatch | null;
  /** Earlier ids of the closed sessions (sessionAliasesSchema), null when none had any. */
  aliases: RecordBatch | null;
  hourly: WindowPartial[];
  daily: WindowPartial[];
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** Version of the checkpointed operator state (1: one JSON document of everything). */
const STATE_FORMAT = 2;

interface PipelineMeta {
  format: number;
  maxEventTime: number | null;
  frontier: number | null;
  dailyEmittedThrough: number | null;
}

/** The whole-state JSON of format 1 (before sessions merged). */
interface LegacyState {
  maxEventTime: number | null;
  frontier: number | null;
  sessions: { open: LegacySession[]; closedEarly: LegacySession[] };
  aggregate: unknown;
}
type LegacySession = Omit<SessionSnapshot, 'firstEventId' | 'dims' | 'aliases'> & { device: string; version: string; country: string };

export class ShardPipeline {
  private readonly dedup: DedupOperator;
  private readonly sessions: SessionTable;
  private readonly aggregate: AggregateOperator;
  private readonly lateness: number;
  private readonly sessionGapMs: number;
  private readonly types: MetricEventTypes;
  /** Incremental checkpoint state in the shard's LMDB: open sessions per user, accumulators. */
  private readonly state: AggregateStateDbs & { sessions: Database };
  private maxEventTime = -Infinity;
  /** Watermark up to which windows and sessions were emitted. */
  private frontier = -Infinity;
  /** Where a changed user's open sessions are written at a checkpoint (reused; LMDB copies each value). */
  private readonly recordWriter = new RecordWriter();
  /** Fingerprints of the current batch's user ids (reused across batches). */
  private userHi = new Uint32Array(0);
  private userLo = new Uint32Array(0);

  constructor(options: ShardPipelineOptions) {
    this.dedup = new DedupOperator(options.db, { ttlMs: options.dedupTtlMs, hotCapacity: options.dedupHotCapacity });
    this.sessions = new SessionTable(options.sessionGapMs);
    this.aggregate = new AggregateOperator(options.sessionGapMs);
    this.state = {
      sessions: options.db.openDB({ name: 'state-sessions', encoding: 'msgpack' }),
      accs: options.db.openDB({ name: 'state-accs', encoding: 'msgpack' }),
      users: options.db.openDB({ name: 'state-users', encoding: 'binary' }),
    };
    this.lateness = options.allowedLatenessMs;
    this.sessionGapMs = options.sessionGapMs;
    this.types = { ...DEFAULT_METRIC_EVENT_TYPES, ...options.metricEventTypes };
  }

  /** Metric bits of each dictionary entry, computed once per batch. */
  private metricBits(dict: Vector<Utf8> | null): Uint8Array {
    const n = dict?.length ?? 0;
    const bits = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      const name = dict!.get(i) ?? '';
      if (this.types.installs.includes(name)) bits[i]! |= M.install;
      if (this.types.screen_views.includes(name)) bits[i]! |= M.screen;
      if (this.types.notification_views.includes(name)) bits[i]! |= M.notificationView;
      if (this.types.notification_opens.includes(name)) bits[i]! |= M.notificationOpen;
    }
    return bits;
  }

  /**
   * Runs the operators over `batch`. `recordEnds`: when the batch is several log records
   * concatenated (ShardRuntime coalesces a range), the row index where each record ends
   * (ascending, the last = numRows); each record's rows are then marked too late against the
   * frontier the watermark would have reached after the records before it
   * (kernels/event-time `markTooLateByRecord`). Sessions and windows closing at those
   * intermediate frontiers close at the next `advanceWatermark` instead, which changes nothing: a
   * row at or after the frontier never joins a session or window that closes at it. So a range's
   * outputs do not depend on how the log was cut into ranges.
   */
  processBatch(batch: RecordBatch, recordEnds?: Int32Array): BatchOutput {
    const n = batch.numRows;
    const col = (name: string): Data => batch.getChild(name)!.data[0]!;
    const keep = new Uint8Array(n);
    const eventIds = col('event_id') as Data<Utf8>;
    const received = epochMillis(col('received_at') as Data<Timestamp>);
    const duplicates = this.dedup.processBatch(eventIds, received, keep);
    const kept = maskToIndices(keep);

    const times = epochMillis(col('event_time') as Data<Timestamp>);
    const tooLate = new Uint8Array(kept.length);
    // Event time drives the watermark only up to each row's arrival (kernels/event-time).
    if (recordEnds === undefined || recordEnds.length <= 1) this.maxEventTime = Math.max(this.maxEventTime, markTooLate(times, kept, this.frontier, tooLate, received));
    else this.maxEventTime = markTooLateByRecord(times, kept, recordEnds, this.frontier, this.maxEventTime, this.lateness, tooLate, received).maxEventTimeMs;

    const users = col('user_id') as Data<Utf8>;
    if (this.userHi.length < n) {
      this.userHi = new Uint32Array(n * 2);
      this.userLo = new Uint32Array(n * 2);
    }
    const { userHi, userLo } = this;
    fingerprintUtf8(users, userHi, userLo);
    const typeData = col('event_type') as Data<Dictionary<Utf8>>;
    const typeIdx = typeData.values as Int32Array;
    const bits = this.metricBits(typeData.dictionary as Vector<Utf8> | null);
    const combos = this.aggregate.combosOf(col('device_type') as Data<Dictionary<Utf8>>, col('app_version') as Data<Dictionary<Utf8>>, col('country') as Data<Dictionary<Utf8>>, kept);
    const comboValues = this.aggregate.combos;
    const props = col('properties') as Data<Utf8>;

    const sessionIds = new Uint8Array(kept.length * SESSION_ID_CHARS);
    let hourStart = NaN;
    let dayStart = NaN;
    let lastCombo = -1;
    let hourAcc: Acc | undefined;
    let dayAcc: Acc | undefined;
    for (let j = 0; j < kept.length; j++) {
      // Too-late rows get no session (session_id null) and no window: reconciliation counts them.
      if (tooLate[j]) continue;
      const i = kept[j]!;
      const t = times[i]!;
      const userKey = fingerprintKey(userHi[i]!, userLo[i]!);
      const b = bits[typeIdx[i]!]!;
      const combo = combos[j]!;
      const session = this.sessions.assign(userKey, users, eventIds, i, t, b & M.screen ? screenName(props, i) : null, comboValues[combo]!);
      this.sessions.writeId(session, sessionIds, j * SESSION_ID_CHARS);
      const hour = t - (((t % HOUR) + HOUR) % HOUR);
      const day = t - (((t % DAY) + DAY) % DAY);
      if (hour !== hourStart || combo !== lastCombo) {
        hourAcc = this.aggregate.acc('hourly', hour, combo);
        hourStart = hour;
      }
      if (day !== dayStart || combo !== lastCombo) {
        dayAcc = this.aggregate.acc('daily', day, combo);
        dayStart = day;
      }
      lastCombo = combo;
      this.aggregate.addEvent(hourAcc!, dayAcc!, userKey, b);
    }
    this.aggregate.addSessionStarts(this.sessions.takeStartChanges());
    return { silver: toSilver(batch, kept, sessionIds, tooLate), tooLate, duplicates };
  }

  localWatermark(): ShardWatermark {
    return this.maxEventTime === -Infinity ? { kind: 'idle' } : { kind: 'event-time', timeMs: this.maxEventTime - this.lateness };
  }

  advanceWatermark(watermarkMs: number): WatermarkOutput {
    if (watermarkMs > this.frontier) this.frontier = watermarkMs;
    const closed = this.sessions.close(this.frontier);
    for (const s of closed) this.aggregate.addClosedSession(s.start, s.dims.id, (s.end - s.start) / 1000, s.count === 1);
    const { hourly, daily } = this.aggregate.emit(this.frontier, this.dailyHold());
    return { sessions: closed.length > 0 ? sessionsBatch(closed) : null, aliases: aliasesBatch(closed), hourly, daily };
  }

  /**
   * The first day whose daily window is held back (or Infinity): a day's avg session length and
   * bounce rate cover the sessions starting that day, so its window waits, past its usual point
   * (day end + gap), until they have all closed — at most `MAX_DAILY_HOLD_MS` longer (a session
   * still open then is left out of its day's figures; it is in gold sessions all the same).
   */
  private dailyHold(): number {
    const gap = this.sessionGapMs;
    for (const day of this.sessions.openDays()) {
      if (this.frontier < day + DAY + gap) return Infinity; // not due yet: the usual rule holds it
      if (this.frontier < day + DAY + gap + MAX_DAILY_HOLD_MS) return day;
    }
    return Infinity;
  }

  /**
   * The watermark up to which daily windows are emitted: the frontier, or just short of the first
   * held day's emission point. The coordinator merges a daily window once every shard's committed
   * daily frontier has passed its end + gap.
   */
  dailyFrontier(): number {
    const held = this.dailyHold();
    return held === Infinity ? this.frontier : Math.min(this.frontier, held + DAY + this.sessionGapMs - 1);
  }

  live(): {
    hourly: Array<{ windowStart: number; events: number; activeUsers: number; sessions: number; notificationViews: number; notificationOpens: number }>;
    daily: Array<{ windowStart: number; sessionsClosed: number; bounces: number }>;
    openSessions: number;
  } {
    return {
      daily: this.aggregate.openDailySessions(),
      // The latest open hour only: the live view shows the current hour (the coordinator sums it over shards).
      hourly: [this.aggregate.liveHourly()].filter((h) => h !== undefined),
      openSessions: this.sessions.openCount,
    };
  }

  /**
   * The small part of the operator state: the watermark inputs, as JSON (the caller stores it in
   * the checkpoint transaction). Sessions, accumulators and dedup ids are written incrementally
   * by `onCheckpointTxn`, in the same transaction.
   */
  checkpoint(): Uint8Array {
    const state: PipelineMeta = {
      format: STATE_FORMAT,
      maxEventTime: this.maxEventTime === -Infinity ? null : this.maxEventTime,
      frontier: this.frontier === -Infinity ? null : this.frontier,
      dailyEmittedThrough: this.aggregate.dailyEmittedThrough === -Infinity ? null : this.aggregate.dailyEmittedThrough,
    };
    return encoder.encode(JSON.stringify(state));
  }

  /** Restores a fresh pipeline from the last checkpoint: `bytes` from `checkpoint`, the rest from LMDB. */
  restore(bytes: Uint8Array): void {
    const s = JSON.parse(decoder.decode(bytes)) as PipelineMeta | LegacyState;
    this.maxEventTime = s.maxEventTime ?? -Infinity;
    this.frontier = s.frontier ?? -Infinity;
    const intern = (d: string, v: string, c: string): DimValues => this.aggregate.combos[this.aggregate.comboOf(d, v, c)]!;
    if ('format' in s && s.format === STATE_FORMAT) {
      this.aggregate.load(this.state);
      this.aggregate.dailyEmittedThrough = s.dailyEmittedThrough ?? -Infinity;
      const sessions: SessionSnapshot[] = [];
      for (const { key, value } of this.state.sessions.getRange()) sessions.push(...unpackSessions(key as number, value));
      this.sessions.restore(sessions, intern);
      return;
    }
    // A checkpoint of the earlier whole-state JSON: convert; the next checkpoint writes it all anew.
    const legacy = s as LegacyState;
    this.aggregate.restoreLegacy(legacy.aggregate);
    // Format 1 emitted a day's window at its end + gap, whatever sessions were open.
    if (legacy.frontier !== null) this.aggregate.dailyEmittedThrough = Math.floor((legacy.frontier - this.sessionGapMs) / DAY) * DAY - DAY;
    const old = [...legacy.sessions.open, ...legacy.sessions.closedEarly];
    this.sessions.restore(
      old.map((o) => ({ ...o, firstEventId: '', dims: [o.device, o.version, o.country], aliases: null })),
      intern,
      true,
    );
  }

  /** Inside the checkpoint's LMDB transaction: what changed since the last checkpoint. */
  onCheckpointTxn(): void {
    this.dedup.onCheckpoint();
    for (const key of this.sessions.changedUsers()) {
      const record = this.sessions.userRecord(key, this.recordWriter);
      if (record !== undefined) this.state.sessions.putSync(key, record);
      else this.state.sessions.removeSync(key);
    }
    this.aggregate.checkpoint(this.state);
  }

  /**
   * Erasure: forgets user `key`'s open sessions (memory and the shard's LMDB, in one synchronous
   * transaction, so a restart does not restore them). Returns how many were open.
   */
  removeUser(key: number, db: RootDatabase): number {
    const n = this.sessions.removeUser(key);
    db.transactionSync(() => this.state.sessions.removeSync(key));
    return n;
  }

  /** The dedup operator's in-memory id table (reported with each checkpoint). */
  get dedupHotTable(): { ids: number; bytes: number } {
    return this.dedup.hotTable;
  }

  /** After the checkpoint transaction committed. */
  afterCheckpoint(): void {
    // Memory only first; the dedup index then merges cold runs (LMDB writes that may fail and are redone).
    this.sessions.clearChanged();
    this.aggregate.afterCheckpoint();
    this.dedup.afterCheckpoint();
  }
}

const SILVER_SESSION_ID = silverSchema.fields.findIndex((f) => f.name === 'session_id');

/** Silver's schema for batches of one record schema, and where each silver column is in such a batch. */
const silverSchemas = new WeakMap<Schema, { schema: Schema; fields: Field[]; columns: number[] }>();
function silverOf(recordSchema: Schema): { schema: Schema; fields: Field[]; columns: number[] } {
  let s = silverSchemas.get(recordSchema);
  if (s === undefined) {
    // Keep the batch's own dictionary types (their ids) so encoders see consistent schemas.
    const fields = silverSchema.fields.map((f) => (f.name === 'session_id' ? f : recordSchema.fields.find((g) => g.name === f.name)!));
    const columns = silverSchema.fields.map((f) => recordSchema.fields.findIndex((g) => g.name === f.name));
    s = { schema: new Schema(fields), fields, columns };
    silverSchemas.set(recordSchema, s);
  }
  return s;
}

/**
 * Kept rows in silver column order (ingest's `raw` is not copied), with session_id replaced by the
 * stamped ids (16 bytes per kept row in `sessionIds`; null where `noSession[j]` is set).
 */
function toSilver(batch: RecordBatch, kept: Int32Array, sessionIds: Uint8Array, noSession: Uint8Array): RecordBatch {
  const { schema, fields, columns } = silverOf(batch.schema);
  const source = recordBatchOf(schema, batch.numRows, columns.map((k) => batch.data.children[k]!));
  // Without duplicates every row stays: reuse the columns (bronze holds the same buffers anyway).
  const picked = kept.length === batch.numRows ? source : takeRows(source, kept);
  const n = kept.length;
  const offsets = new Int32Array(n + 1);
  let nulls = 0;
  let validity: Uint8Array | undefined;
  let values = sessionIds;
  for (let j = 0; j < n; j++) if (noSession[j]) nulls++;
  if (nulls === 0) {
    for (let j = 0; j <= n; j++) offsets[j] = j * SESSION_ID_CHARS;
  } else {
    validity = new Uint8Array(((n + 63) >> 6) << 3);
    values = new Uint8Array((n - nulls) * SESSION_ID_CHARS);
    let end = 0;
    for (let j = 0; j < n; j++) {
      if (!noSession[j]) {
        values.set(sessionIds.subarray(j * SESSION_ID_CHARS, (j + 1) * SESSION_ID_CHARS), end);
        end += SESSION_ID_CHARS;
        validity[j >> 3]! |= 1 << (j & 7);
      }
      offsets[j + 1] = end;
    }
  }
  const ids = makeData({ type: fields[SILVER_SESSION_ID]!.type as Utf8, length: n, nullCount: nulls, nullBitmap: validity, valueOffsets: offsets, data: values });
  const children = picked.data.children.map((c, k) => (k === SILVER_SESSION_ID ? ids : c));
  return recordBatchOf(schema, n, children);
}

/** The earlier ids of closed sessions (one row per alias), or null when none had any. */
function aliasesBatch(closed: ClosedSession[]): RecordBatch | null {
  const rows = closed.filter((s) => s.aliases !== null);
  if (rows.length === 0) return null;
  const alias = new Utf8Column(rows.length, 16);
  const id = new Utf8Column(rows.length, 16);
  const user = new Utf8Column(rows.length, 16);
  const start: number[] = [];
  for (const s of rows) {
    for (const a of s.aliases!) {
      alias.push(a);
      id.push(s.id);
      user.push(s.user);
      start.push(s.start);
    }
  }
  const field = (name: string): Field => sessionAliasesSchema.fields.find((f) => f.name === name)!;
  const n = start.length;
  const columns: Record<string, Data> = {
    alias_id: alias.data(field('alias_id').type),
    session_id: id.data(field('session_id').type),
    user_id: user.data(field('user_id').type),
    session_start: makeData({ type: field('session_start').type, length: n, nullCount: 0, data: int64Of(Float64Array.from(start)) } as never),
  };
  const children = sessionAliasesSchema.fields.map((f) => columns[f.name]!);
  return new RecordBatch(sessionAliasesSchema, makeData({ type: new Struct(sessionAliasesSchema.fields), length: n, nullCount: 0, children }));
}

/** Closed sessions as one sessionsSchema batch, sorted by (start, id) for deterministic files; columns filled by hand. */
function sessionsBatch(closed: ClosedSession[]): RecordBatch {
  const sorted = [...closed].sort((a, b) => a.start - b.start || (a.id < b.id ? -1 : 1));
  const n = sorted.length;
  const text = (value: (s: ClosedSession) => string | null): Utf8Column => {
    const c = new Utf8Column(n, 16);
    for (const s of sorted) c.push(value(s));
    return c;
  };
  const start = new Float64Array(n);
  const end = new Float64Array(n);
  const duration = new Float64Array(n);
  const count = new Float64Array(n);
  const bounce = new Uint8Array(((n + 63) >> 6) << 3);
  for (let i = 0; i < n; i++) {
    const s = sorted[i]!;
    start[i] = s.start;
    end[i] = s.end;
    duration[i] = (s.end - s.start) / 1000;
    count[i] = s.count;
    if (s.count === 1) bounce[i >> 3]! |= 1 << (i & 7);
  }
  const field = (name: string): Field => sessionsSchema.fields.find((f) => f.name === name)!;
  const fixed = (name: string, data: ArrayBufferView): Data => makeData({ type: field(name).type, length: n, nullCount: 0, data } as never);
  const columns: Record<string, Data> = {
    session_id: text((s) => s.id).data(field('session_id').type, true),
    user_id: text((s) => s.user).data(field('user_id').type, true),
    session_start: fixed('session_start', int64Of(start)),
    session_end: fixed('session_end', int64Of(end)),
    duration_s: fixed('duration_s', duration),
    event_count: fixed('event_count', int64Of(count)),
    bounce: fixed('bounce', bounce),
    first_screen: text((s) => s.firstScreen).data(field('first_screen').type, true),
    last_screen: text((s) => s.lastScreen).data(field('last_screen').type, true),
    device_type: text((s) => s.dims.d).data(field('device_type').type, true),
    app_version: text((s) => s.dims.v).data(field('app_version').type, true),
    country: text((s) => s.dims.c).data(field('country').type, true),
  };
  const children = sessionsSchema.fields.map((f) => columns[f.name]!);
  return new RecordBatch(sessionsSchema, makeData({ type: new Struct(sessionsSchema.fields), length: n, nullCount: 0, children }));
}

/** Integral doubles as little-endian int64 (no BigInt per value). */
function int64Of(values: Float64Array): BigInt64Array {
  const out = new BigInt64Array(values.length);
  const halves = new Int32Array(out.buffer);
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (v < 0) out[i] = BigInt(v);
    else {
      halves[2 * i] = v % 4294967296;
      halves[2 * i + 1] = Math.floor(v / 4294967296);
    }
  }
  return out;
}
