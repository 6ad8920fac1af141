/**
 * A lean reader of flat Arrow IPC streams — the shape of every log record ingest writes
 * (ingest/ipc-writer.ts): one schema message, its dictionaries, record batches, no nesting, no
 * compression. Arrow JS's `tableFromIPC` costs ≈ 0.5 ms per call whatever the row count (a
 * reader, a Schema decoded and merged, a visitor per column, a Table), which made it the largest
 * per-record cost of the engine at SDK traffic, where a log record holds ≈ 20 events
 * (bench/results/cpu-2026-12-02.md). This reader decodes the flatbuffer headers with Arrow JS's
 * own `Message`, reuses the Schema while the schema message's bytes repeat (ingest caches them,
 * so they always do), and builds each column's `Data` straight from views of the record's bytes
 * (no copy, like Arrow's loader; a misaligned buffer is copied by `makeData`).
 *
 * Anything else — another column type, a delta dictionary, compression, a truncated stream —
 * returns undefined, and the caller falls back to `tableFromIPC` (which also produces the error
 * message for a broken record).
 */
import { DataType, makeData, Message, MessageHeader, RecordBatch, Struct, Vector, type Data, type Field, type Schema } from 'apache-arrow';

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

/** A position in the header's field nodes and buffers. */
interface Cursor {
  node: number;
  buffer: number;
}

/** One leaf column from the record batch's next field node and buffers; `dictionary` for dictionary-encoded columns. */
function column(type: DataType, meta: { nodes: Array<{ length: number; nullCount: number }>; buffers: Array<{ offset: number; length: number }> }, body: Uint8Array, at: Cursor, dictionary?: Vector): Data {
  const node = meta.nodes[at.node++]!;
  const slice = (): Uint8Array => {
    const b = meta.buffers[at.buffer++]!;
    return body.subarray(b.offset, b.offset + b.length);
  };
  const validity = slice();
  const nullBitmap = node.nullCount > 0 ? validity : EMPTY;
  const { length, nullCount } = node;
  if (dictionary !== undefined) return makeData({ type: type as never, length, nullCount, nullBitmap, data: slice() as never, dictionary } as never);
  if (DataType.isUtf8(type)) {
    const valueOffsets = slice();
    return makeData({ type, length, nullCount, nullBitmap, valueOffsets, data: slice() } as never);
  }
  return makeData({ type: type as never, length, nullCount, nullBitmap, data: slice() as never } as never);
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
    let metaLength = view.getInt32(pos, true);
    let metaStart = pos + 4;
    if (metaLength === -1) {
      if (pos + 8 > bytes.byteLength) return undefined;
      metaLength = view.getInt32(pos + 4, true);
      metaStart = pos + 8;
    }
    if (metaLength === 0) return schema ? { schema, batches } : undefined;
    if (metaLength < 0 || metaStart + metaLength > bytes.byteLength) return undefined;
    const message = Message.decode(bytes.subarray(metaStart, metaStart + metaLength));
    const bodyStart = metaStart + metaLength;
    const bodyLength = Number(message.bodyLength);
    if (bodyStart + bodyLength > bytes.byteLength) return undefined;
    const body = bytes.subarray(bodyStart, bodyStart + bodyLength);
    pos = bodyStart + bodyLength;
    if (message.headerType === MessageHeader.Schema) {
      if (schema) return undefined;
      const framed = bytes.subarray(0, bodyStart);
      if (cached === undefined || !sameBytes(cached.bytes, framed)) {
        const s = message.header() as Schema;
        cached = { bytes: framed.slice(), schema: s, flat: isFlat(s) };
      }
      if (!cached.flat) return undefined;
      schema = cached.schema;
    } else if (message.headerType === MessageHeader.DictionaryBatch) {
      if (!schema) return undefined;
      const header = message.header() as unknown as { id: number; isDelta: boolean; data: { compression: unknown; nodes: Array<{ length: number; nullCount: number }>; buffers: Array<{ offset: number; length: number }> } };
      const type = schema.dictionaries.get(header.id);
      if (type === undefined || header.isDelta || header.data.compression != null || header.data.nodes.length !== 1) return undefined;
      dictionaries.set(header.id, new Vector([column(type, header.data, body, { node: 0, buffer: 0 })]));
    } else if (message.headerType === MessageHeader.RecordBatch) {
      if (!schema) return undefined;
      const header = message.header() as unknown as { length: number; compression: unknown; nodes: Array<{ length: number; nullCount: number }>; buffers: Array<{ offset: number; length: number }> };
      const fields = schema.fields;
      if (header.compression != null || header.nodes.length !== fields.length) return undefined;
      const at: Cursor = { node: 0, buffer: 0 };
      const children: Data[] = [];
      for (const f of fields) {
        let dictionary: Vector | undefined;
        if (DataType.isDictionary(f.type)) {
          dictionary = dictionaries.get(f.type.id);
          if (dictionary === undefined) return undefined;
        }
        const need = dictionary !== undefined ? 2 : DataType.isUtf8(f.type) ? 3 : 2;
        if (at.buffer + need > header.buffers.length) return undefined;
        children.push(column(f.type, header, body, at, dictionary));
      }
      batches.push(new RecordBatch(schema, makeData({ type: new Struct(fields), length: Number(header.length), children })));
    } else return undefined;
  }
}
