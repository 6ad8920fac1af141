/**
 * Builds `ingestSchema` Arrow record batches with hand-filled buffers (Arrow's generic builders
 * are too slow for the hot path — see MEASUREMENTS.md):
 *
 *   Utf8 columns        Int32 offsets + a byte buffer, filled by Buffer.write (strings) or
 *                       Buffer.copy (byte ranges of the request body — never decoded)
 *   low-cardinality     Dictionary<Utf8, Int32>: a per-batch dictionary (Map → id) + Int32 ids
 *   timestamps          Float64 scratch, converted once per batch to BigInt64 epoch ms
 *
 * Buffers start small and grow by doubling (rounded to 64 bytes); a builder is reused across
 * batches: `toIPC()` / `build()` hand out copies and `reset()` keeps the capacity.
 */
import { makeData, RecordBatch, Struct, Table, tableToIPC, Vector, type Data, type Dictionary, type Field, type Utf8 } from 'apache-arrow';
import { ingestSchema } from '../common/schema.js';
import { encodeIpcStream, schemaMessageOf, type ColumnParts, type DictionaryParts } from '../common/ipc-write.js';
import type { CanonicalEvent } from './normalize.js';

const field = (name: string): Field => ingestSchema.fields.find((f) => f.name === name)!;
const round64 = (n: number): number => (n + 63) & ~63;

/**
 * A Utf8 column under construction. Values are strings (UTF-8 encoded on write) or byte ranges
 * copied verbatim (the caller guarantees they are valid UTF-8, e.g. slices of a parsed JSON body).
 */
export class Utf8Column {
  private offsets: Int32Array;
  private bytes: Buffer;
  private valid: Uint8Array;
  private nulls = 0;
  length = 0;

  constructor(rows = 64, avgBytes = 16) {
    this.offsets = new Int32Array(rows + 1);
    this.bytes = Buffer.allocUnsafe(round64(Math.max(64, rows * avgBytes)));
    this.valid = new Uint8Array(round64((rows + 7) >> 3));
  }

  private growRows(): void {
    const rows = this.offsets.length * 2;
    const offsets = new Int32Array(rows);
    offsets.set(this.offsets);
    this.offsets = offsets;
    const valid = new Uint8Array(round64((rows + 7) >> 3));
    valid.set(this.valid);
    this.valid = valid;
  }

  private reserve(extra: number): void {
    const need = this.offsets[this.length]! + extra;
    if (need <= this.bytes.length) return;
    const grown = Buffer.allocUnsafe(round64(Math.max(this.bytes.length * 2, need)));
    this.bytes.copy(grown, 0, 0, this.offsets[this.length]!);
    this.bytes = grown;
  }

  pushNull(): void {
    const i = this.length;
    if (i + 1 >= this.offsets.length) this.growRows();
    this.valid[i >> 3]! &= ~(1 << (i & 7));
    this.nulls++;
    this.offsets[i + 1] = this.offsets[i]!;
    this.length = i + 1;
  }

  pushString(v: string): void {
    const i = this.length;
    if (i + 1 >= this.offsets.length) this.growRows();
    const len = v.length;
    this.reserve(len * 3);
    const at = this.offsets[i]!;
    this.valid[i >> 3]! |= 1 << (i & 7);
    this.length = i + 1;
    // Short ASCII strings (ids, names): a char-code loop beats Buffer#write's call overhead.
    if (len <= 48) {
      const bytes = this.bytes;
      let k = 0;
      for (; k < len; k++) {
        const c = v.charCodeAt(k);
        if (c > 127) break;
        bytes[at + k] = c;
      }
      if (k === len) {
        this.offsets[i + 1] = at + len;
        return;
      }
    }
    this.offsets[i + 1] = at + this.bytes.write(v, at, 'utf8');
  }

  /** Appends `src[start, end)` verbatim, optionally after `prefix` (a string, UTF-8 encoded). */
  pushBytes(src: Uint8Array, start: number, end: number, prefix?: string): void {
    const i = this.length;
    if (i + 1 >= this.offsets.length) this.growRows();
    this.reserve(end - start + (prefix === undefined ? 0 : prefix.length * 3));
    let at = this.offsets[i]!;
    if (prefix !== undefined) at += this.bytes.write(prefix, at, 'utf8');
    const n = end - start;
    if (n <= 64) {
      const bytes = this.bytes;
      for (let k = 0; k < n; k++) bytes[at + k] = src[start + k]!;
    } else this.bytes.set(src.subarray(start, end), at);
    this.valid[i >> 3]! |= 1 << (i & 7);
    this.offsets[i + 1] = at + (end - start);
    this.length = i + 1;
  }

  push(v: string | null): void {
    if (v === null) this.pushNull();
    else this.pushString(v);
  }

  /** The column as Arrow Data; with `copy` false the buffers are views valid until the next push/reset. */
  data(type: Utf8, copy = true): Data<Utf8> {
    const n = this.length;
    const end = this.offsets[n]!;
    const offsets = this.offsets.subarray(0, n + 1);
    const bytes = new Uint8Array(this.bytes.buffer, this.bytes.byteOffset, end);
    const valid = this.valid.subarray(0, (n + 7) >> 3);
    return makeData({
      type,
      length: n,
      nullCount: this.nulls,
      nullBitmap: this.nulls > 0 ? (copy ? valid.slice() : valid) : undefined,
      valueOffsets: copy ? offsets.slice() : offsets,
      data: copy ? bytes.slice() : bytes,
    });
  }

  /** Field node + buffers (views, valid until the next push/reset) for the IPC writer. */
  parts(): ColumnParts {
    const n = this.length;
    const end = this.offsets[n]!;
    return {
      length: n,
      nullCount: this.nulls,
      buffers: [
        this.nulls > 0 ? this.valid.subarray(0, (n + 7) >> 3) : EMPTY,
        new Uint8Array(this.offsets.buffer, this.offsets.byteOffset, (n + 1) * 4),
        new Uint8Array(this.bytes.buffer, this.bytes.byteOffset, end),
      ],
    };
  }

  reset(): void {
    this.length = 0;
    this.nulls = 0;
    this.offsets[0] = 0;
  }
}

const EMPTY = new Uint8Array(0);

/** A Dictionary<Utf8, Int32> column with a per-batch dictionary. */
export class DictColumn {
  private ids = new Map<string, number>();
  private values: string[] = [];
  private lastValue: string | undefined;
  private lastId = 0;
  /** The dictionary's values, UTF-8 encoded as they are first seen. */
  private readonly dict = new Utf8Column(16, 12);
  private indices: Int32Array;
  private valid: Uint8Array;
  private nulls = 0;
  length = 0;

  constructor(rows = 64) {
    this.indices = new Int32Array(rows);
    this.valid = new Uint8Array(round64((rows + 7) >> 3));
  }

  private growRows(): void {
    const rows = this.indices.length * 2;
    const indices = new Int32Array(rows);
    indices.set(this.indices);
    this.indices = indices;
    const valid = new Uint8Array(round64((rows + 7) >> 3));
    valid.set(this.valid);
    this.valid = valid;
  }

  push(v: string | null): void {
    const i = this.length;
    if (i >= this.indices.length) this.growRows();
    this.length = i + 1;
    if (v === null) {
      this.valid[i >> 3]! &= ~(1 << (i & 7));
      this.indices[i] = 0;
      this.nulls++;
      return;
    }
    this.valid[i >> 3]! |= 1 << (i & 7);
    // Consecutive rows often repeat a value (same request, same device): skip the Map lookup.
    if (v === this.lastValue) {
      this.indices[i] = this.lastId;
      return;
    }
    let id = this.ids.get(v);
    if (id === undefined) {
      id = this.values.length;
      this.ids.set(v, id);
      this.values.push(v);
      this.dict.pushString(v);
    }
    this.indices[i] = id;
    this.lastValue = v;
    this.lastId = id;
  }

  /** Index column parts and dictionary parts (views, valid until the next push/reset). */
  parts(): { indices: ColumnParts; dictionary: ColumnParts } {
    const n = this.length;
    return {
      indices: {
        length: n,
        nullCount: this.nulls,
        buffers: [this.nulls > 0 ? this.valid.subarray(0, (n + 7) >> 3) : EMPTY, new Uint8Array(this.indices.buffer, this.indices.byteOffset, n * 4)],
      },
      dictionary: this.dict.parts(),
    };
  }

  data(f: Field, copy = true): Data<Dictionary<Utf8>> {
    const type = f.type as Dictionary<Utf8>;
    const dict = new Utf8Column(this.values.length + 1, 12);
    for (const v of this.values) dict.pushString(v);
    const n = this.length;
    const indices = this.indices.subarray(0, n);
    const valid = this.valid.subarray(0, (n + 7) >> 3);
    return makeData({
      type,
      length: n,
      nullCount: this.nulls,
      nullBitmap: this.nulls > 0 ? (copy ? valid.slice() : valid) : undefined,
      data: copy ? indices.slice() : indices,
      dictionary: new Vector([dict.data(type.dictionary)]),
    });
  }

  reset(): void {
    this.length = 0;
    this.nulls = 0;
    this.lastValue = undefined;
    // A fresh dictionary per batch keeps it small and bounded.
    if (this.values.length > 0) {
      this.ids = new Map();
      this.values = [];
      this.dict.reset();
    }
  }
}

/**
 * One row on its way into a shard batch: the canonical event, where `raw` and `properties` may
 * instead be byte ranges of `bytes` (the request body), copied without decoding. A range is
 * used when its start is ≥ 0; `propsPrefix` is written before the properties range (used to
 * put a screen/page call's `name` into its properties object without re-serializing it).
 */
export interface IngestRow extends CanonicalEvent {
  bytes?: Uint8Array;
  rawStart?: number;
  rawEnd?: number;
  propsStart?: number;
  propsEnd?: number;
  propsPrefix?: string;
}

/** Dictionary ids of ingestSchema's dictionary columns, in column order (event_type, device_type, os, app_version, country, source). */
const DICT_IDS = ['event_type', 'device_type', 'os', 'app_version', 'country', 'source'].map((name) => (field(name).type as Dictionary<Utf8>).id);

let cachedSchemaMessage: Uint8Array | undefined;
/** ingestSchema's encapsulated schema message, encoded once by Arrow JS. */
function schemaMessage(): Uint8Array {
  if (!cachedSchemaMessage) {
    const b = new IngestBatchBuilder(1);
    b.push({ event_id: 'e', user_id: 'u', anonymous_id: null, event_type: 't', event_time: 0, received_at: 0, device_type: null, os: null, app_version: null, country: null, source: 's', properties: null, raw: null });
    cachedSchemaMessage = schemaMessageOf(tableToIPC(new Table([b.build()]), 'stream'));
  }
  return cachedSchemaMessage;
}

/** Accumulates events (up to `capacity` rows) and builds one ingestSchema batch; reusable. */
export class IngestBatchBuilder {
  readonly capacity: number;
  private readonly eventId: Utf8Column;
  private readonly userId: Utf8Column;
  private readonly anonymousId: Utf8Column;
  private readonly sessionId: Utf8Column;
  private readonly properties: Utf8Column;
  private readonly raw: Utf8Column;
  private readonly eventType: DictColumn;
  private readonly device: DictColumn;
  private readonly os: DictColumn;
  private readonly version: DictColumn;
  private readonly country: DictColumn;
  private readonly source: DictColumn;
  private eventTime: Float64Array;
  private receivedAt: Float64Array;
  length = 0;

  /** `capacity`: rows at which `full` turns true (buffers start at min(capacity, 256) rows and grow). */
  constructor(capacity: number) {
    this.capacity = capacity;
    const rows = Math.max(1, Math.min(capacity, 256));
    this.eventId = new Utf8Column(rows, 24);
    this.userId = new Utf8Column(rows, 16);
    this.anonymousId = new Utf8Column(rows, 16);
    this.sessionId = new Utf8Column(rows, 0);
    this.properties = new Utf8Column(rows, 96);
    this.raw = new Utf8Column(rows, 400);
    this.eventType = new DictColumn(rows);
    this.device = new DictColumn(rows);
    this.os = new DictColumn(rows);
    this.version = new DictColumn(rows);
    this.country = new DictColumn(rows);
    this.source = new DictColumn(rows);
    this.eventTime = new Float64Array(rows);
    this.receivedAt = new Float64Array(rows);
  }

  get full(): boolean {
    return this.length >= this.capacity;
  }

  push(e: IngestRow): void {
    const i = this.length++;
    if (i >= this.eventTime.length) {
      const t = new Float64Array(this.eventTime.length * 2);
      t.set(this.eventTime);
      this.eventTime = t;
      const r = new Float64Array(t.length);
      r.set(this.receivedAt);
      this.receivedAt = r;
    }
    this.eventId.pushString(e.event_id);
    this.userId.pushString(e.user_id);
    this.anonymousId.push(e.anonymous_id);
    this.eventType.push(e.event_type);
    this.eventTime[i] = e.event_time;
    this.receivedAt[i] = e.received_at;
    this.sessionId.pushNull();
    this.device.push(e.device_type);
    this.os.push(e.os);
    this.version.push(e.app_version);
    this.country.push(e.country);
    this.source.push(e.source);
    const bytes = e.bytes;
    if (bytes !== undefined && e.propsStart !== undefined && e.propsStart >= 0) this.properties.pushBytes(bytes, e.propsStart, e.propsEnd!, e.propsPrefix);
    else this.properties.push(e.properties);
    if (bytes !== undefined && e.rawStart !== undefined && e.rawStart >= 0) this.raw.pushBytes(bytes, e.rawStart, e.rawEnd!);
    else this.raw.push(e.raw);
  }

  /** The rows so far as a RecordBatch; with `copy` false its buffers are views valid until the next push/reset. */
  build(copy = true): RecordBatch {
    const n = this.length;
    const ts = (name: string, values: Float64Array): Data => {
      // Int64 from two 32-bit halves (little endian): no BigInt allocation per row.
      const out = new BigInt64Array(n);
      const halves = new Int32Array(out.buffer);
      for (let i = 0; i < n; i++) {
        const v = values[i]!;
        if (v >= 0) {
          halves[2 * i] = v % 4294967296;
          halves[2 * i + 1] = Math.floor(v / 4294967296);
        } else out[i] = BigInt(v);
      }
      return makeData({ type: field(name).type, length: n, nullCount: 0, data: out } as never);
    };
    const children: Data[] = [
      this.eventId.data(field('event_id').type, copy),
      this.userId.data(field('user_id').type, copy),
      this.anonymousId.data(field('anonymous_id').type, copy),
      this.eventType.data(field('event_type'), copy),
      ts('event_time', this.eventTime),
      ts('received_at', this.receivedAt),
      this.sessionId.data(field('session_id').type, copy),
      this.device.data(field('device_type'), copy),
      this.os.data(field('os'), copy),
      this.version.data(field('app_version'), copy),
      this.country.data(field('country'), copy),
      this.source.data(field('source'), copy),
      this.properties.data(field('properties').type, copy),
      this.raw.data(field('raw').type, copy),
    ];
    return new RecordBatch(ingestSchema, makeData({ type: new Struct(ingestSchema.fields), length: n, nullCount: 0, children }));
  }

  /**
   * The rows so far as one Arrow IPC stream (the log record format; fresh bytes owned by the
   * caller), written by the fixed-layout writer (common/ipc-write.ts) — the same stream Arrow JS's
   * tableToIPC would produce, at a fraction of its fixed cost per call.
   */
  toIPC(): Uint8Array {
    const n = this.length;
    const dicts = [this.eventType, this.device, this.os, this.version, this.country, this.source].map((c) => c.parts());
    const dictionaries: DictionaryParts[] = dicts.map((d, i) => ({ id: DICT_IDS[i]!, values: d.dictionary }));
    const columns: ColumnParts[] = [
      this.eventId.parts(),
      this.userId.parts(),
      this.anonymousId.parts(),
      dicts[0]!.indices,
      { length: n, nullCount: 0, buffers: [EMPTY, this.int64Bytes(this.eventTime, n)] },
      { length: n, nullCount: 0, buffers: [EMPTY, this.int64Bytes(this.receivedAt, n)] },
      this.sessionId.parts(),
      dicts[1]!.indices,
      dicts[2]!.indices,
      dicts[3]!.indices,
      dicts[4]!.indices,
      dicts[5]!.indices,
      this.properties.parts(),
      this.raw.parts(),
    ];
    return encodeIpcStream(schemaMessage(), dictionaries, columns, n);
  }

  /** Epoch-ms doubles → fresh little-endian int64 bytes. */
  private int64Bytes(values: Float64Array, n: number): Uint8Array {
    const out = new Int32Array(n * 2);
    for (let i = 0; i < n; i++) {
      const v = values[i]!;
      if (v >= 0) {
        out[2 * i] = v % 4294967296;
        out[2 * i + 1] = Math.floor(v / 4294967296);
      } else new BigInt64Array(out.buffer, 8 * i, 1)[0] = BigInt(v);
    }
    return new Uint8Array(out.buffer);
  }

  /** Empties the builder, keeping its buffers. */
  reset(): void {
    this.length = 0;
    for (const c of [this.eventId, this.userId, this.anonymousId, this.sessionId, this.properties, this.raw]) c.reset();
    for (const c of [this.eventType, this.device, this.os, this.version, this.country, this.source]) c.reset();
  }
}
