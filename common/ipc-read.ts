/**
 * A lean reader of flat Arrow IPC streams — the shape of every log record ingest writes
 * (common/ipc-write.ts): one schema message, its dictionaries, record batches, no nesting, no
 * compression. Arrow JS's `tableFromIPC` costs ≈ 0.5 ms per call whatever the row count (a
 * reader, a Schema decoded and merged, a visitor per column, a Table), which made it the largest
 * per-record cost of the engine at SDK traffic, where a log record holds ≈ 20 events
 * (bench/results/cpu-2026-12-02.md). This reader decodes the flatbuffer headers with Arrow JS's
 * own `Message` for the schema message only and reuses the Schema while its bytes repeat (ingest
 * caches them, so they always do); the dictionary and record batch headers — a few fixed
 * flatbuffer tables — it reads itself ({@link batchHeader}). Each column's `Data` is made straight
 * from views of the record's bytes (no copy, like Arrow's loader; a buffer not aligned for its
 * type is copied), and the RecordBatch is assembled without Arrow JS's
 * constructor, which rebuilds an equal Schema and struct for every batch (common/arrow-batch.ts).
 * Per 20-event record these generic paths cost more than the engine's operators.
 *
 * Anything else — another column type, a delta dictionary, compression, a truncated stream —
 * returns undefined, and the caller falls back to `tableFromIPC` (which also produces the error
 * message for a broken record).
 */
import { Data, DataType, Message, MessageHeader, Vector, type Dictionary, type Field, type Float, type Int, type Schema, type Timestamp, type RecordBatch } from 'apache-arrow';
import { recordBatchOf } from './arrow-batch.js';

/** What a stream holds: its schema and record batches (as `tableFromIPC(...).batches`). */
export interface IpcRecord {
  schema: Schema;
  batches: RecordBatch[];
}

interface CachedSchema {
  /** The schema message's bytes, framing included. */
  bytes: Uint8Array;
  schema: Schema;
  /** Every field (and dictionary value type) is one this reader builds. */
  flat: boolean;
  /** The schema message's body length (0 as Arrow writes it). */
  bodyLength: number;
}

let cached: CachedSchema | undefined;

const EMPTY = new Uint8Array(0);

/** Utf8, fixed-width numbers and timestamps: the types a flat record batch column may have (dictionaries of them too). */
function leafSupported(type: DataType): boolean {
  return DataType.isUtf8(type) || DataType.isInt(type) || DataType.isFloat(type) || DataType.isTimestamp(type);
}

function isFlat(schema: Schema): boolean {
  return schema.fields.every((f: Field) => (DataType.isDictionary(f.type) ? leafSupported(f.type.dictionary) && DataType.isInt(f.type.indices) : leafSupported(f.type)));
}

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => a.byteLength === b.byteLength && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);

/** A record batch's field nodes and buffers: [length, nullCount, …] and [offset, length, …] pairs. */
interface BatchHeader {
  length: number;
  nodes: number[];
  buffers: number[];
}

/** A position in the header's field nodes and buffers (pair indices). */
interface Cursor {
  node: number;
  buffer: number;
}

const EMPTY_BITMAP = new Uint8Array(0);

/** `bytes` as `Type` elements: a view, or a copy when they are not aligned for the type. */
function viewAs<T>(Type: { new (buffer: ArrayBufferLike, byteOffset: number, length: number): T; BYTES_PER_ELEMENT: number }, bytes: Uint8Array): T {
  const size = Type.BYTES_PER_ELEMENT;
  const n = Math.floor(bytes.byteLength / size);
  return bytes.byteOffset % size === 0 ? new Type(bytes.buffer, bytes.byteOffset, n) : new Type(bytes.slice().buffer, 0, n);
}

/** One leaf column from the header's next field node and buffers; `dictionary` for dictionary-encoded columns. */
function column(type: DataType, header: BatchHeader, body: Uint8Array, at: Cursor, dictionary?: Vector): Data {
  const { nodes, buffers } = header;
  const length = nodes[2 * at.node]!;
  const nullCount = nodes[2 * at.node + 1]!;
  at.node++;
  const slice = (): Uint8Array => {
    const k = 2 * at.buffer++;
    return body.subarray(buffers[k]!, buffers[k]! + buffers[k + 1]!);
  };
  const validity = slice();
  const nullBitmap = nullCount > 0 ? validity : EMPTY_BITMAP;
  if (dictionary !== undefined) {
    const indices = viewAs((type as Dictionary).indices.ArrayType as never, slice());
    return new Data(type, 0, length, nullCount, [undefined, indices, nullBitmap] as never, [], dictionary);
  }
  if (DataType.isUtf8(type)) {
    const valueOffsets = viewAs(Int32Array, slice());
    return new Data(type, 0, length, nullCount, [valueOffsets, slice(), nullBitmap] as never);
  }
  const values = viewAs((type as Int | Float | Timestamp).ArrayType as never, slice());
  return new Data(type, 0, length, nullCount, [undefined, values, nullBitmap] as never);
}

// --- The flatbuffer tables of a Message (format/Message.fbs), read in place -----------------------

const HEADER_DICTIONARY_BATCH = 2;
const HEADER_RECORD_BATCH = 3;

/** Minimal flatbuffer access: tables, their scalar, offset and struct-vector fields. */
class Flat {
  constructor(private readonly view: DataView) {}
  root(): number {
    return this.view.getUint32(0, true);
  }
  /** Position of field `id` of the table at `table`, or 0 when absent. */
  field(table: number, id: number): number {
    const vtable = table - this.view.getInt32(table, true);
    const vtableSize = this.view.getUint16(vtable, true);
    const at = 4 + 2 * id;
    if (at >= vtableSize) return 0;
    const off = this.view.getUint16(vtable + at, true);
    return off === 0 ? 0 : table + off;
  }
  /** Position of what the offset field at `pos` points to. */
  target(pos: number): number {
    return pos + this.view.getUint32(pos, true);
  }
  u8(pos: number): number {
    return this.view.getUint8(pos);
  }
  /** An int64 as a number (the sizes and counts here are far below 2^53). */
  i64(pos: number): number {
    return this.view.getUint32(pos, true) + this.view.getInt32(pos + 4, true) * 4294967296;
  }
  /** A vector of structs of two int64 each, flattened. */
  pairs(pos: number): number[] {
    const v = this.target(pos);
    const n = this.view.getUint32(v, true);
    const out = new Array<number>(2 * n);
    for (let i = 0; i < 2 * n; i++) out[i] = this.i64(v + 4 + 8 * i);
    return out;
  }
}

/** A RecordBatch table's length, nodes and buffers; undefined when compressed or without them. */
function recordBatchTable(f: Flat, table: number): BatchHeader | undefined {
  const length = f.field(table, 0);
  const nodes = f.field(table, 1);
  const buffers = f.field(table, 2);
  if (f.field(table, 3) !== 0 || nodes === 0 || buffers === 0) return undefined; // compression (or a malformed table): Arrow JS's reader
  return { length: length === 0 ? 0 : f.i64(length), nodes: f.pairs(nodes), buffers: f.pairs(buffers) };
}

/**
 * A dictionary or record batch message's header and body length, read from its flatbuffer
 * (`metadata`): `kind` 'dictionary' (with `id`, never a delta) or 'batch'; undefined for any other
 * message or anything this reader leaves to Arrow JS.
 */
function batchHeader(metadata: Uint8Array): { kind: 'dictionary' | 'batch'; id: number; header: BatchHeader; bodyLength: number } | undefined {
  const f = new Flat(new DataView(metadata.buffer, metadata.byteOffset, metadata.byteLength));
  const message = f.root();
  const typeAt = f.field(message, 1);
  const headerAt = f.field(message, 2);
  const bodyAt = f.field(message, 3);
  if (typeAt === 0 || headerAt === 0) return undefined;
  const type = f.u8(typeAt);
  const table = f.target(headerAt);
  const bodyLength = bodyAt === 0 ? 0 : f.i64(bodyAt);
  if (type === HEADER_RECORD_BATCH) {
    const header = recordBatchTable(f, table);
    return header && { kind: 'batch', id: 0, header, bodyLength };
  }
  if (type === HEADER_DICTIONARY_BATCH) {
    const idAt = f.field(table, 0);
    const dataAt = f.field(table, 1);
    const deltaAt = f.field(table, 2);
    if (dataAt === 0 || (deltaAt !== 0 && f.u8(deltaAt) !== 0)) return undefined;
    const header = recordBatchTable(f, f.target(dataAt));
    return header && { kind: 'dictionary', id: idAt === 0 ? 0 : f.i64(idAt), header, bodyLength };
  }
  return undefined;
}

/**
 * The message framed at `pos` (≥ 4 bytes left): where its flatbuffer metadata starts and how long
 * it is (with or without the 0xFFFFFFFF continuation), 'end' at the end-of-stream marker,
 * undefined when the framing runs past the bytes.
 */
function frameAt(view: DataView, pos: number): { metaStart: number; metaLength: number } | 'end' | undefined {
  let metaLength = view.getInt32(pos, true);
  let metaStart = pos + 4;
  if (metaLength === -1) {
    if (pos + 8 > view.byteLength) return undefined;
    metaLength = view.getInt32(pos + 4, true);
    metaStart = pos + 8;
  }
  if (metaLength === 0) return 'end';
  if (metaLength < 0 || metaStart + metaLength > view.byteLength) return undefined;
  return { metaStart, metaLength };
}

/**
 * Decodes a flat IPC stream, or undefined when it is not one this reader handles (see the file
 * comment). The batches' buffers are views of `bytes`: they keep it alive and must not outlive a
 * mutation of it.
 */
export function readFlatIpc(bytes: Uint8Array): IpcRecord | undefined {
  try {
    return read(bytes);
  } catch {
    return undefined; // a malformed flatbuffer: tableFromIPC says what is wrong with it
  }
}

function read(bytes: Uint8Array): IpcRecord | undefined {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;
  let schema: Schema | undefined;
  const dictionaries = new Map<number, Vector>();
  const batches: RecordBatch[] = [];
  for (;;) {
    if (pos + 4 > bytes.byteLength) return schema ? { schema, batches } : undefined; // end without the marker, as Arrow JS allows
    const frame = frameAt(view, pos);
    if (frame === undefined) return undefined;
    if (frame === 'end') return schema ? { schema, batches } : undefined;
    const { metaStart, metaLength } = frame;
    const metadata = bytes.subarray(metaStart, metaStart + metaLength);
    const bodyStart = metaStart + metaLength;
    // The schema message (first) through Arrow JS; every later message is a batch read in place.
    const batch = schema === undefined ? undefined : batchHeader(metadata);
    if (batch === undefined) {
      if (schema) return undefined; // a second schema, a compressed or delta batch, another message: Arrow JS's reader
      const framed = bytes.subarray(0, bodyStart);
      if (cached === undefined || !sameBytes(cached.bytes, framed)) {
        const message = Message.decode(metadata);
        if (message.headerType !== MessageHeader.Schema) return undefined;
        const s = message.header() as Schema;
        cached = { bytes: framed.slice(), schema: s, flat: isFlat(s), bodyLength: Number(message.bodyLength) };
      }
      if (!cached.flat) return undefined;
      pos = bodyStart + cached.bodyLength;
      schema = cached.schema;
      continue;
    }
    const { header, bodyLength } = batch;
    const current: Schema = schema!;
    if (bodyStart + bodyLength > bytes.byteLength) return undefined;
    const body = bytes.subarray(bodyStart, bodyStart + bodyLength);
    pos = bodyStart + bodyLength;
    for (let k = 0; k < header.buffers.length; k += 2) if (header.buffers[k]! + header.buffers[k + 1]! > bodyLength) return undefined;
    if (batch.kind === 'dictionary') {
      const type = current.dictionaries.get(batch.id);
      if (type === undefined || header.nodes.length !== 2 || header.buffers.length < 6) return undefined;
      dictionaries.set(batch.id, new Vector([column(type, header, body, { node: 0, buffer: 0 })]));
      continue;
    }
    const fields = current.fields;
    if (header.nodes.length !== 2 * fields.length) return undefined;
    const at: Cursor = { node: 0, buffer: 0 };
    const children: Data[] = [];
    for (const f of fields) {
      let dictionary: Vector | undefined;
      if (DataType.isDictionary(f.type)) {
        dictionary = dictionaries.get(f.type.id);
        if (dictionary === undefined) return undefined;
      }
      const need = dictionary !== undefined ? 2 : DataType.isUtf8(f.type) ? 3 : 2;
      if (2 * (at.buffer + need) > header.buffers.length) return undefined;
      if (header.nodes[2 * at.node] !== header.length) return undefined; // a column shorter than its batch: Arrow JS backfills it
      children.push(column(f.type, header, body, at, dictionary));
    }
    batches.push(recordBatchOf(current, header.length, children));
  }
}

/**
 * The rows of an IPC stream's record batches, summed, read from their message headers alone
 * (nothing decoded: a few flatbuffer fields per message); undefined when the framing is broken.
 * For sizing work by events before a record is decoded (the engine's ranges).
 */
export function ipcRowCount(bytes: Uint8Array): number | undefined {
  try {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let rows = 0;
    let pos = 0;
    while (pos + 4 <= bytes.byteLength) {
      const frame = frameAt(view, pos);
      if (frame === undefined) return undefined;
      if (frame === 'end') break;
      const { metaStart, metaLength } = frame;
      const f = new Flat(new DataView(bytes.buffer, bytes.byteOffset + metaStart, metaLength));
      const message = f.root();
      const typeAt = f.field(message, 1);
      const headerAt = f.field(message, 2);
      const bodyAt = f.field(message, 3);
      if (typeAt !== 0 && headerAt !== 0 && f.u8(typeAt) === HEADER_RECORD_BATCH) {
        const lengthAt = f.field(f.target(headerAt), 0);
        if (lengthAt !== 0) rows += f.i64(lengthAt);
      }
      pos = metaStart + metaLength + (bodyAt === 0 ? 0 : f.i64(bodyAt));
    }
    return pos <= bytes.byteLength ? rows : undefined;
  } catch {
    return undefined; // an offset out of the view: a malformed flatbuffer
  }
}
