/**
 * A shard's operator chain: dedup → watermark → sessionize → aggregate, over one ingest batch at
 * a time, deterministic (time comes only from the data and from the watermarks it is given).
 *
 *   ingest batch ─▶ dedup (keep mask) ─▶ for each kept row: too late? sessionize, aggregate
 *               ─▶ silver batch (kept rows, session_id stamped, `raw` dropped) + too-late mask
 *   advanceWatermark(wm) ─▶ closed sessions (gold) + window partials (hourly, daily)
 */
import { makeBuilder, makeData, RecordBatch, Struct, type Data, type Dictionary, type Utf8, type Vector } from 'apache-arrow';
import type { RootDatabase } from 'lmdb';
import { maskToIndices, takeRows } from '../../common/arrow-take.js';
import { sessionsSchema, silverSchema, UNKNOWN } from '../../common/schema.js';
import { DEFAULT_METRIC_EVENT_TYPES, type MetricEventTypes } from '../gold-sql.js';
import type { ShardWatermark } from '../types.js';
import { AggregateOperator, C, M, type WindowPartial } from './aggregate-operator.js';
import { DedupOperator } from './dedup-operator.js';
import { SessionOperator, type ClosedSession } from './session-operator.js';

const HOUR = 3_600_000;
const DAY = 86_400_000;

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
  hourly: WindowPartial[];
  daily: WindowPartial[];
}

const decoder = new TextDecoder();

export class ShardPipeline {
  private readonly dedup: DedupOperator;
  private readonly sessions: SessionOperator;
  private readonly aggregate: AggregateOperator;
  private readonly lateness: number;
  private readonly types: MetricEventTypes;
  private maxEventTime = -Infinity;
  /** Watermark up to which windows and sessions were emitted. */
  private frontier = -Infinity;
  /** Sessions closed early (a new session of the same user began) waiting for the next advance. */
  private closedEarly: ClosedSession[] = [];

  constructor(options: ShardPipelineOptions) {
    this.dedup = new DedupOperator(options.db, { ttlMs: options.dedupTtlMs, hotCapacity: options.dedupHotCapacity });
    this.sessions = new SessionOperator(options.sessionGapMs);
    this.aggregate = new AggregateOperator(options.sessionGapMs);
    this.lateness = options.allowedLatenessMs;
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

  processBatch(batch: RecordBatch): BatchOutput {
    const n = batch.numRows;
    const col = (name: string): Data => batch.getChild(name)!.data[0]!;
    const keep = new Uint8Array(n);
    const receivedAt = col('received_at').values as BigInt64Array;
    const duplicates = this.dedup.processBatch(col('event_id') as Data<Utf8>, receivedAt, keep);

    const times = col('event_time').values as BigInt64Array;
    const users = col('user_id') as Data<Utf8>;
    const typeData = col('event_type') as Data<Dictionary<Utf8>>;
    const typeIdx = typeData.values as Int32Array;
    const bits = this.metricBits(typeData.dictionary as Vector<Utf8> | null);
    const dimOf = (name: string): ((i: number) => string) => {
      const data = col(name) as Data<Dictionary<Utf8>>;
      const idx = data.values as Int32Array;
      const dict = data.dictionary as Vector<Utf8> | null;
      const strings = Array.from({ length: dict?.length ?? 0 }, (_, k) => dict!.get(k) ?? UNKNOWN);
      return (i) => (data.getValid(i) ? strings[idx[i]!]! : UNKNOWN);
    };
    const device = dimOf('device_type');
    const version = dimOf('app_version');
    const country = dimOf('country');
    const props = col('properties') as Data<Utf8>;

    const kept = maskToIndices(keep);
    const sessionIds: string[] = new Array(kept.length);
    const tooLate = new Uint8Array(kept.length);
    for (let j = 0; j < kept.length; j++) {
      const i = kept[j]!;
      const t = Number(times[i]);
      if (t > this.maxEventTime) this.maxEventTime = t;
      const hour = Math.floor(t / HOUR) * HOUR;
      const late = hour + HOUR <= this.frontier;
      tooLate[j] = late ? 1 : 0;
      const user = decoder.decode(users.values.subarray(users.valueOffsets[i]!, users.valueOffsets[i + 1]!));
      const b = bits[typeIdx[i]!]!;
      const screen = b & M.screen ? screenName(props, i) : null;
      const d = device(i);
      const v = version(i);
      const c = country(i);
      const { session, opened, closed } = this.sessions.assign(user, t, screen, d, v, c);
      sessionIds[j] = session.id;
      if (closed) this.closedEarly.push(closed);
      if (late) continue;
      const day = Math.floor(t / DAY) * DAY;
      const hourAcc = this.aggregate.acc('hourly', hour, d, v, c);
      const dayAcc = this.aggregate.acc('daily', day, d, v, c);
      this.aggregate.addEvent(hourAcc, dayAcc, user, b);
      if (opened) {
        hourAcc.n[C.sessions]!++;
        dayAcc.n[C.sessions]!++;
      }
    }
    return { silver: toSilver(batch, kept, sessionIds), tooLate, duplicates };
  }

  localWatermark(): ShardWatermark {
    return this.maxEventTime === -Infinity ? { kind: 'idle' } : { kind: 'event-time', timeMs: this.maxEventTime - this.lateness };
  }

  advanceWatermark(watermarkMs: number): WatermarkOutput {
    const before = this.frontier;
    if (watermarkMs > this.frontier) this.frontier = watermarkMs;
    const closed = [...this.closedEarly, ...this.sessions.close(this.frontier)];
    this.closedEarly = [];
    for (const s of closed) {
      this.aggregate.addClosedSession(s.start, s.device ?? UNKNOWN, s.version ?? UNKNOWN, s.country ?? UNKNOWN, (s.end - s.start) / 1000, s.count === 1, before);
    }
    const { hourly, daily } = this.aggregate.emit(this.frontier);
    return { sessions: closed.length > 0 ? sessionsBatch(closed) : null, hourly, daily };
  }

  live(): { hourly: Array<{ windowStart: number; events: number; activeUsers: number; sessions: number; notificationViews: number; notificationOpens: number }>; openSessions: number } {
    return {
      hourly: this.aggregate.openHourly().map((p) => {
        const r = p.rows[0]!;
        return {
          windowStart: p.windowStart,
          events: r.events,
          activeUsers: r.active_users,
          sessions: r.sessions,
          notificationViews: r.notification_views,
          notificationOpens: r.notification_opens,
        };
      }),
      openSessions: this.sessions.openCount,
    };
  }

  /** Operator state (everything but the dedup index, which onCheckpointTxn writes to LMDB). */
  checkpoint(): Uint8Array {
    const state = {
      maxEventTime: this.maxEventTime === -Infinity ? null : this.maxEventTime,
      frontier: this.frontier === -Infinity ? null : this.frontier,
      sessions: this.sessions.snapshot(),
      closedEarly: this.closedEarly,
      aggregate: this.aggregate.snapshot(),
    };
    return new TextEncoder().encode(JSON.stringify(state));
  }

  restore(bytes: Uint8Array): void {
    const s = JSON.parse(decoder.decode(bytes)) as {
      maxEventTime: number | null;
      frontier: number | null;
      sessions: ClosedSession[];
      closedEarly: ClosedSession[];
      aggregate: unknown;
    };
    this.maxEventTime = s.maxEventTime ?? -Infinity;
    this.frontier = s.frontier ?? -Infinity;
    this.sessions.restore(s.sessions);
    this.closedEarly = s.closedEarly;
    this.aggregate.restore(s.aggregate);
  }

  /** Inside the checkpoint's LMDB transaction. */
  onCheckpointTxn(): void {
    this.dedup.onCheckpoint();
  }

  /** After the checkpoint transaction committed. */
  afterCheckpoint(): void {
    this.dedup.afterCheckpoint();
  }
}

/** `properties.name` of a screen event, without parsing the whole JSON when it is absent. */
function screenName(props: Data<Utf8>, i: number): string | null {
  if (!props.getValid(i)) return null;
  const text = decoder.decode(props.values.subarray(props.valueOffsets[i]!, props.valueOffsets[i + 1]!));
  if (!text.includes('"name"')) return null;
  try {
    const name = (JSON.parse(text) as { name?: unknown }).name;
    return typeof name === 'string' ? name : null;
  } catch {
    return null;
  }
}

const encoder = new TextEncoder();

/** Kept rows in silver column order, with session_id replaced by the stamped ids. */
function toSilver(batch: RecordBatch, kept: Int32Array, sessionIds: string[]): RecordBatch {
  const picked = takeRows(batch, kept);
  const ids = utf8Data(sessionIds);
  const children = silverSchema.fields.map((f) => (f.name === 'session_id' ? ids : picked.getChild(f.name)!.data[0]!));
  // Keep the batch's own dictionary types (their ids) so encoders see consistent schemas.
  const fields = silverSchema.fields.map((f) => (f.name === 'session_id' ? f : picked.schema.fields.find((g) => g.name === f.name)!));
  const schema = new (silverSchema.constructor as typeof import('apache-arrow').Schema)(fields);
  return new RecordBatch(schema, makeData({ type: new Struct(fields), length: kept.length, nullCount: 0, children }));
}

function utf8Data(values: string[]): Data<Utf8> {
  const encoded = values.map((v) => encoder.encode(v));
  const offsets = new Int32Array(values.length + 1);
  let total = 0;
  for (let i = 0; i < encoded.length; i++) {
    total += encoded[i]!.length;
    offsets[i + 1] = total;
  }
  const bytes = new Uint8Array(total);
  for (let i = 0; i < encoded.length; i++) bytes.set(encoded[i]!, offsets[i]!);
  const type = silverSchema.fields.find((f) => f.name === 'session_id')!.type as Utf8;
  return makeData({ type, length: values.length, nullCount: 0, valueOffsets: offsets, data: bytes });
}

function sessionsBatch(closed: ClosedSession[]): RecordBatch {
  const sorted = [...closed].sort((a, b) => a.start - b.start || (a.id < b.id ? -1 : 1));
  const value = (s: ClosedSession, name: string): unknown => {
    switch (name) {
      case 'session_id':
        return s.id;
      case 'user_id':
        return s.user;
      case 'session_start':
        return s.start;
      case 'session_end':
        return s.end;
      case 'duration_s':
        return (s.end - s.start) / 1000;
      case 'event_count':
        return BigInt(s.count);
      case 'bounce':
        return s.count === 1;
      case 'first_screen':
        return s.firstScreen;
      case 'last_screen':
        return s.lastScreen;
      case 'device_type':
        return s.device;
      case 'app_version':
        return s.version;
      case 'country':
        return s.country;
      default:
        throw new Error(`unknown sessions column ${name}`);
    }
  };
  const children = sessionsSchema.fields.map((f) => {
    const b = makeBuilder({ type: f.type, nullValues: [null, undefined] });
    for (const s of sorted) b.append(value(s, f.name) as never);
    return b.finish().flush();
  });
  return new RecordBatch(sessionsSchema, makeData({ type: new Struct(sessionsSchema.fields), length: sorted.length, nullCount: 0, children }));
}
