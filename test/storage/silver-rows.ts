/**
 * Deterministic, realistic silver rows (the canonical event, `silverSchema`) for storage tests
 * and bench/storage-parquet.bench.ts: zipf-ish users, sessions of a few minutes, a dozen event
 * types, a few devices/versions/countries, small JSON properties. Built by hand from typed
 * arrays (Arrow builders are too slow for 500k rows).
 */
import { Int32 as Int32Type, Int64, makeData, makeVector, RecordBatch, Struct, Utf8, vectorFromArray, type Data, type Dictionary, type Field, type Int32, type Schema, type TimestampMillisecond } from 'apache-arrow';
import { bronzeSchema, silverSchema } from '../../common/schema.js';

/** Mulberry32: a small seeded PRNG. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const EVENT_TYPES = ['screen', 'Button Clicked', 'Application Opened', 'notification_view', 'notification_open', 'install', 'purchase', 'search', 'add_to_cart', 'share', 'login', 'logout'];
const DEVICES = ['ios', 'android', 'web', 'tablet'];
const OSES = ['iOS', 'Android', 'macOS', 'Windows', 'Linux'];
const VERSIONS = ['2.0.0', '2.0.1', '2.1.0', '2.2.0', '2.3.0', '3.0.0'];
const COUNTRIES = ['US', 'DE', 'NL', 'FR', 'GB', 'BR', 'IN', 'JP', 'ES', 'IT', 'CA', 'MX'];
const SOURCES = ['http', 'ndjson', 'arrow-ws'];
const SCREENS = ['Home', 'Search', 'Product', 'Cart', 'Checkout', 'Settings', 'Profile'];

const enc = new TextEncoder();

function utf8(values: string[]): Data<Utf8> {
  const parts = values.map((v) => enc.encode(v));
  const offsets = new Int32Array(values.length + 1);
  let total = 0;
  for (let i = 0; i < parts.length; i++) {
    total += parts[i]!.byteLength;
    offsets[i + 1] = total;
  }
  const bytes = new Uint8Array(total);
  for (let i = 0; i < parts.length; i++) bytes.set(parts[i]!, offsets[i]!);
  return makeData({ type: new Utf8(), length: values.length, nullCount: 0, valueOffsets: offsets, data: bytes });
}

function makeDictData(type: unknown, indices: Int32Array, values: string[]): Data {
  return makeData({ type: type as Dictionary<Utf8, Int32>, length: indices.length, nullCount: 0, data: indices, dictionary: makeVector(utf8(values)) });
}

export interface SilverRowsOptions {
  rows: number;
  seed?: number;
  /** Event time of the first row, epoch ms. Default 2026-05-10T00:00Z. */
  startMs?: number;
  /** Time span covered by the rows, ms. Default 1 h. */
  spanMs?: number;
  /** Rows per batch. Default 10 000. */
  batchRows?: number;
  users?: number;
}

/** Silver batches sorted by event time (as a shard emits them, roughly). */
export function silverRows(options: SilverRowsOptions): RecordBatch[] {
  const r = rng(options.seed ?? 1);
  const start = options.startMs ?? Date.UTC(2026, 4, 10);
  const span = options.spanMs ?? 3_600_000;
  const batchRows = options.batchRows ?? 10_000;
  const users = options.users ?? Math.max(10, Math.floor(options.rows / 20));
  const fields = silverSchema.fields;
  const out: RecordBatch[] = [];
  let seq = 0;
  for (let done = 0; done < options.rows; done += batchRows) {
    const n = Math.min(batchRows, options.rows - done);
    const eventId: string[] = [];
    const userId: string[] = [];
    const anon: string[] = [];
    const sessionId: string[] = [];
    const props: string[] = [];
    const eventTime = new BigInt64Array(n);
    const receivedAt = new BigInt64Array(n);
    const et = new Int32Array(n);
    const dev = new Int32Array(n);
    const os = new Int32Array(n);
    const ver = new Int32Array(n);
    const ctry = new Int32Array(n);
    const src = new Int32Array(n);
    for (let i = 0; i < n; i++, seq++) {
      // zipf-ish: u = floor(users * x^3) skews towards low ids.
      const u = Math.floor(users * r() ** 3);
      const hex = (Math.floor(r() * 0xffffffff) >>> 0).toString(16).padStart(8, '0');
      eventId.push(`${hex}-${(seq * 2654435761 >>> 0).toString(16).padStart(8, '0')}-4a1b-9c2d-${(seq + 1e11).toString(16)}`);
      userId.push(`user-${u.toString(36).padStart(6, '0')}`);
      anon.push(`anon-${(u * 7919).toString(16).padStart(10, '0')}`);
      const t = start + Math.floor(((done + i) / options.rows) * span) + Math.floor(r() * 2000);
      eventTime[i] = BigInt(t);
      receivedAt[i] = BigInt(t + 50 + Math.floor(r() * 1500));
      sessionId.push(`${userId[i]}-${Math.floor(t / 1_800_000)}`);
      const type = Math.floor(EVENT_TYPES.length * r() ** 2);
      et[i] = type;
      dev[i] = u % DEVICES.length;
      os[i] = u % OSES.length;
      ver[i] = Math.floor(VERSIONS.length * r());
      ctry[i] = (u * 31) % COUNTRIES.length;
      src[i] = Math.floor(SOURCES.length * r() ** 4);
      props.push(
        type === 0
          ? `{"name":"${SCREENS[Math.floor(r() * SCREENS.length)]}","duration_ms":${Math.floor(r() * 60000)}}`
          : `{"item":"sku-${Math.floor(r() * 5000)}","price":${(r() * 100).toFixed(2)},"qty":${1 + Math.floor(r() * 3)},"campaign":"c${Math.floor(r() * 40)}"}`,
      );
    }
    const ts = (f: Field, v: BigInt64Array): Data => makeData({ type: f.type as TimestampMillisecond, length: n, nullCount: 0, data: v });
    const children: Data[] = [
      utf8(eventId),
      utf8(userId),
      utf8(anon),
      makeDictData(fields[3]!.type, et, EVENT_TYPES),
      ts(fields[4]!, eventTime),
      ts(fields[5]!, receivedAt),
      utf8(sessionId),
      makeDictData(fields[7]!.type, dev, DEVICES),
      makeDictData(fields[8]!.type, os, OSES),
      makeDictData(fields[9]!.type, ver, VERSIONS),
      makeDictData(fields[10]!.type, ctry, COUNTRIES),
      makeDictData(fields[11]!.type, src, SOURCES),
      utf8(props),
    ];
    out.push(new RecordBatch(silverSchema, makeData({ type: new Struct(fields), length: n, nullCount: 0, children })));
  }
  return out;
}

/** A batch of `schema` from plain column arrays (small test tables; uses Arrow's builders). */
export function batchOf(schema: Schema, columns: Record<string, unknown[]>): RecordBatch {
  const n = Object.values(columns)[0]?.length ?? 0;
  const children = schema.fields.map((f) => {
    const values = columns[f.name] ?? new Array(n).fill(null);
    return vectorFromArray(values, f.type).data[0]!;
  });
  return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: n, nullCount: 0, children }));
}

/** Bronze rows: silver columns + raw JSON + shard + log offset. */
export function bronzeOf(silver: RecordBatch, shard: number, offset: number): RecordBatch {
  const n = silver.numRows;
  const raw = utf8(Array.from({ length: n }, (_, i) => `{"type":"track","messageId":"${String(silver.get(i)!.event_id)}","properties":${String(silver.get(i)!.properties)}}`));
  const shardCol = makeData({ type: new Int32Type(), length: n, nullCount: 0, data: new Int32Array(n).fill(shard) });
  const offsetCol = makeData({ type: new Int64(), length: n, nullCount: 0, data: new BigInt64Array(n).fill(BigInt(offset)) });
  const children = [...silver.data.children, raw, shardCol, offsetCol];
  return new RecordBatch(bronzeSchema, makeData({ type: new Struct(bronzeSchema.fields), length: n, nullCount: 0, children }));
}
