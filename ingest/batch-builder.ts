/**
 * Builds `ingestSchema` Arrow record batches from canonical events with hand-filled buffers
 * (Arrow's generic builders are too slow for the hot path — see MEASUREMENTS.md): Utf8 columns
 * as offsets + bytes written with Buffer.write, low-cardinality columns as Dictionary<Utf8, Int32>
 * with a per-batch dictionary, timestamps as BigInt64Array.
 */
import { makeData, RecordBatch, Struct, Table, tableToIPC, Vector, type Data, type Dictionary, type Field, type Utf8 } from 'apache-arrow';
import { ingestSchema } from '../common/schema.js';
import type { CanonicalEvent } from './normalize.js';

const field = (name: string): Field => ingestSchema.fields.find((f) => f.name === name)!;

class Utf8Column {
  private offsets: Int32Array;
  private bytes: Buffer;
  private valid: Uint8Array;
  private nulls = 0;
  length = 0;

  constructor(capacity: number, avgBytes: number) {
    this.offsets = new Int32Array(capacity + 1);
    this.bytes = Buffer.allocUnsafe(Math.max(64, capacity * avgBytes));
    this.valid = new Uint8Array(((capacity + 63) >> 6) << 3);
  }

  push(v: string | null): void {
    const i = this.length++;
    const at = this.offsets[i]!;
    if (v === null) {
      this.nulls++;
      this.offsets[i + 1] = at;
      return;
    }
    this.valid[i >> 3]! |= 1 << (i & 7);
    const max = v.length * 3;
    if (at + max > this.bytes.length) {
      const grown = Buffer.allocUnsafe(Math.max(this.bytes.length * 2, at + max));
      this.bytes.copy(grown, 0, 0, at);
      this.bytes = grown;
    }
    this.offsets[i + 1] = at + this.bytes.write(v, at, 'utf8');
  }

  data(type: Utf8): Data<Utf8> {
    const end = this.offsets[this.length]!;
    return makeData({
      type,
      length: this.length,
      nullCount: this.nulls,
      nullBitmap: this.nulls > 0 ? this.valid : undefined,
      valueOffsets: this.offsets.slice(0, this.length + 1),
      data: new Uint8Array(this.bytes.buffer.slice(this.bytes.byteOffset, this.bytes.byteOffset + end)),
    });
  }
}

class DictColumn {
  private readonly ids = new Map<string, number>();
  private readonly values: string[] = [];
  private readonly indices: Int32Array;
  private readonly valid: Uint8Array;
  private nulls = 0;
  length = 0;

  constructor(capacity: number) {
    this.indices = new Int32Array(capacity);
    this.valid = new Uint8Array(((capacity + 63) >> 6) << 3);
  }

  push(v: string | null): void {
    const i = this.length++;
    if (v === null) {
      this.nulls++;
      return;
    }
    this.valid[i >> 3]! |= 1 << (i & 7);
    let id = this.ids.get(v);
    if (id === undefined) {
      id = this.values.length;
      this.ids.set(v, id);
      this.values.push(v);
    }
    this.indices[i] = id;
  }

  data(f: Field): Data<Dictionary<Utf8>> {
    const type = f.type as Dictionary<Utf8>;
    const dict = new Utf8Column(this.values.length, 8);
    for (const v of this.values) dict.push(v);
    return makeData({
      type,
      length: this.length,
      nullCount: this.nulls,
      nullBitmap: this.nulls > 0 ? this.valid : undefined,
      data: this.indices.slice(0, this.length),
      dictionary: new Vector([dict.data(type.dictionary)]),
    });
  }
}

/** Accumulates canonical events (up to `capacity`) and builds one ingestSchema batch. */
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
  private readonly eventTime: BigInt64Array;
  private readonly receivedAt: BigInt64Array;
  length = 0;

  constructor(capacity: number) {
    this.capacity = capacity;
    this.eventId = new Utf8Column(capacity, 24);
    this.userId = new Utf8Column(capacity, 16);
    this.anonymousId = new Utf8Column(capacity, 16);
    this.sessionId = new Utf8Column(capacity, 0);
    this.properties = new Utf8Column(capacity, 96);
    this.raw = new Utf8Column(capacity, 400);
    this.eventType = new DictColumn(capacity);
    this.device = new DictColumn(capacity);
    this.os = new DictColumn(capacity);
    this.version = new DictColumn(capacity);
    this.country = new DictColumn(capacity);
    this.source = new DictColumn(capacity);
    this.eventTime = new BigInt64Array(capacity);
    this.receivedAt = new BigInt64Array(capacity);
  }

  get full(): boolean {
    return this.length >= this.capacity;
  }

  push(e: CanonicalEvent): void {
    const i = this.length++;
    this.eventId.push(e.event_id);
    this.userId.push(e.user_id);
    this.anonymousId.push(e.anonymous_id);
    this.eventType.push(e.event_type);
    this.eventTime[i] = BigInt(e.event_time);
    this.receivedAt[i] = BigInt(e.received_at);
    this.sessionId.push(null);
    this.device.push(e.device_type);
    this.os.push(e.os);
    this.version.push(e.app_version);
    this.country.push(e.country);
    this.source.push(e.source);
    this.properties.push(e.properties);
    this.raw.push(e.raw);
  }

  build(): RecordBatch {
    const n = this.length;
    const ts = (name: string, values: BigInt64Array): Data => makeData({ type: field(name).type, length: n, nullCount: 0, data: values.slice(0, n) } as never);
    const children: Data[] = [
      this.eventId.data(field('event_id').type),
      this.userId.data(field('user_id').type),
      this.anonymousId.data(field('anonymous_id').type),
      this.eventType.data(field('event_type')),
      ts('event_time', this.eventTime),
      ts('received_at', this.receivedAt),
      this.sessionId.data(field('session_id').type),
      this.device.data(field('device_type')),
      this.os.data(field('os')),
      this.version.data(field('app_version')),
      this.country.data(field('country')),
      this.source.data(field('source')),
      this.properties.data(field('properties').type),
      this.raw.data(field('raw').type),
    ];
    return new RecordBatch(ingestSchema, makeData({ type: new Struct(ingestSchema.fields), length: n, nullCount: 0, children }));
  }

  /** The batch as one Arrow IPC stream (the log record format). */
  toIPC(): Uint8Array {
    return tableToIPC(new Table([this.build()]), 'stream');
  }
}
