/**
 * A fixed-layout Arrow IPC *stream* writer for flat record batches (no nested types), used for
 * every shard record. Arrow JS's generic writer costs ~170 µs per call whatever the row count
 * (visitors, a flatbuffers builder per message); ingest cuts hundreds of shard batches per
 * second, so this writes the same bytes directly: ~10 µs + memcpy.
 *
 * Stream = schema message (encoded once by Arrow JS and cached) + one DictionaryBatch message
 * per dictionary + one RecordBatch message + end-of-stream marker. Each message:
 *
 *   0xFFFFFFFF │ int32 metadata size │ flatbuffer Message (padded to 8) │ body (buffers, each padded to 8)
 *
 * The flatbuffer tables are laid out front to back at fixed offsets (see writeMeta); every
 * integer is little endian; int64 fields and struct vectors are 8-byte aligned.
 * Correctness is pinned by tests that decode the output with Arrow JS (test/ingest/units.test.ts).
 */

/**
 * A body buffer written in place: `fill` gets the (zeroed) bytes of the stream's body that the
 * buffer occupies, `byteLength` of them. For buffers assembled from parts (common/arrow-concat's
 * concatToIpcStream), which are then never built anywhere else.
 */
export interface BodyFill {
  readonly byteLength: number;
  fill(target: Uint8Array): void;
}

/** One column of a flat record batch: its field node and its buffers in Arrow's order. */
export interface ColumnParts {
  length: number;
  nullCount: number;
  /** e.g. Utf8: [validity, offsets, data]; Int32/Int64/Timestamp/dictionary indices: [validity, values]. Empty validity = no nulls. */
  buffers: Array<Uint8Array | BodyFill>;
}

/** A dictionary batch to send before the record batch. */
export interface DictionaryParts {
  id: number;
  values: ColumnParts;
}

const pad8 = (n: number): number => (n + 7) & ~7;
const HEADER_DICT = 2;
const HEADER_RECORD = 3;
const V5 = 4;

function metaSize(kind: number, nodes: number, buffers: number): number {
  const r = kind === HEADER_DICT ? 96 : 64;
  return r + 20 + 4 + 16 * nodes + 4 + 4 + 16 * buffers;
}

function setI64(v: DataView, at: number, value: number): void {
  v.setUint32(at, value % 4294967296, true);
  v.setUint32(at + 4, Math.floor(value / 4294967296), true);
}

/** Writes a Message flatbuffer at `base` (8-aligned); returns its size (a multiple of 8). */
function writeMeta(v: DataView, base: number, kind: number, dictId: number, columns: readonly ColumnParts[], length: number, bodyLength: number, offsets: readonly number[], lengths: readonly number[]): number {
  const b = base;
  // root offset → Message table at 24
  v.setUint32(b, 24, true);
  // Message vtable at 4: [vtable size, table size, version, header_type, header, bodyLength, custom_metadata]
  const mvt = [14, 20, 4, 6, 16, 8, 0];
  for (let i = 0; i < mvt.length; i++) v.setUint16(b + 4 + 2 * i, mvt[i]!, true);
  v.setUint16(b + 18, 0, true);
  v.setUint32(b + 20, 0, true);
  // Message table at 24
  v.setInt32(b + 24, 24 - 4, true);
  v.setInt16(b + 28, V5, true);
  v.setUint8(b + 30, kind);
  v.setUint8(b + 31, 0);
  setI64(v, b + 32, bodyLength);
  let r: number;
  if (kind === HEADER_DICT) {
    v.setUint32(b + 40, 56 - 40, true); // header → DictionaryBatch table at 56
    // DictionaryBatch vtable at 44: [size, table size, id, data, isDelta]
    const dvt = [10, 16, 8, 4, 0];
    for (let i = 0; i < dvt.length; i++) v.setUint16(b + 44 + 2 * i, dvt[i]!, true);
    v.setUint16(b + 54, 0, true);
    v.setInt32(b + 56, 56 - 44, true);
    v.setUint32(b + 60, 96 - 60, true); // data → RecordBatch table at 96 (its vtable at 76)
    setI64(v, b + 64, dictId);
    r = 96;
  } else {
    v.setUint32(b + 40, 64 - 40, true); // header → RecordBatch table at 64
    r = 64;
  }
  // RecordBatch vtable at r − 20: [size, table size, length, nodes, buffers, compression, variadic counts]
  const vt = r - 20;
  const rvt = [14, 20, 8, 4, 16, 0, 0];
  for (let i = 0; i < rvt.length; i++) v.setUint16(b + vt + 2 * i, rvt[i]!, true);
  v.setUint16(b + vt + 14, 0, true);
  v.setUint32(b + vt + 16, 0, true);
  // RecordBatch table at r
  const nodesAt = r + 20;
  const nodesEnd = nodesAt + 4 + 16 * columns.length;
  const buffersAt = nodesEnd + 4;
  v.setInt32(b + r, r - vt, true);
  v.setUint32(b + r + 4, nodesAt - (r + 4), true);
  setI64(v, b + r + 8, length);
  v.setUint32(b + r + 16, buffersAt - (r + 16), true);
  // nodes: [FieldNode{length, null_count}]
  v.setUint32(b + nodesAt, columns.length, true);
  for (let i = 0; i < columns.length; i++) {
    setI64(v, b + nodesAt + 4 + 16 * i, columns[i]!.length);
    setI64(v, b + nodesAt + 12 + 16 * i, columns[i]!.nullCount);
  }
  v.setUint32(b + nodesEnd, 0, true); // padding
  // buffers: [Buffer{offset, length}]
  v.setUint32(b + buffersAt, offsets.length, true);
  for (let i = 0; i < offsets.length; i++) {
    setI64(v, b + buffersAt + 4 + 16 * i, offsets[i]!);
    setI64(v, b + buffersAt + 12 + 16 * i, lengths[i]!);
  }
  return buffersAt + 4 + 16 * offsets.length;
}

interface Planned {
  kind: number;
  dictId: number;
  columns: readonly ColumnParts[];
  length: number;
  meta: number;
  offsets: number[];
  lengths: number[];
  body: number;
}

function plan(kind: number, dictId: number, columns: readonly ColumnParts[], length: number): Planned {
  const offsets: number[] = [];
  const lengths: number[] = [];
  let body = 0;
  for (const c of columns) {
    for (const buf of c.buffers) {
      offsets.push(body);
      lengths.push(buf.byteLength);
      body += pad8(buf.byteLength);
    }
  }
  const meta = pad8(metaSize(kind, columns.length, offsets.length));
  return { kind, dictId, columns, length, meta, offsets, lengths, body };
}

/**
 * Encodes one record batch as a complete IPC stream: `schemaMessage` (the schema's encapsulated
 * message, with its framing), the dictionaries, the batch, and the end-of-stream marker.
 * Returns fresh bytes owned by the caller.
 */
export function encodeIpcStream(schemaMessage: Uint8Array, dictionaries: readonly DictionaryParts[], columns: readonly ColumnParts[], length: number): Uint8Array {
  const plans = dictionaries.map((d) => plan(HEADER_DICT, d.id, [d.values], d.values.length));
  plans.push(plan(HEADER_RECORD, 0, columns, length));
  let total = schemaMessage.byteLength + 8;
  for (const p of plans) total += 8 + p.meta + p.body;
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  out.set(schemaMessage, 0);
  let pos = schemaMessage.byteLength;
  for (const p of plans) {
    view.setUint32(pos, 0xffffffff, true);
    view.setInt32(pos + 4, p.meta, true);
    pos += 8;
    writeMeta(view, pos, p.kind, p.dictId, p.columns, p.length, p.body, p.offsets, p.lengths);
    pos += p.meta;
    let i = 0;
    for (const c of p.columns) {
      for (const buf of c.buffers) {
        const at = pos + p.offsets[i]!;
        if (buf instanceof Uint8Array) out.set(buf, at);
        else buf.fill(out.subarray(at, at + buf.byteLength));
        i++;
      }
    }
    pos += p.body; // padding bytes stay zero (fresh allocation)
  }
  view.setUint32(pos, 0xffffffff, true);
  view.setInt32(pos + 4, 0, true);
  return out;
}

/** The first encapsulated message (the schema) of an IPC stream, with its framing. */
export function schemaMessageOf(stream: Uint8Array): Uint8Array {
  const view = new DataView(stream.buffer, stream.byteOffset, stream.byteLength);
  if (view.getUint32(0, true) !== 0xffffffff) throw new Error('not an Arrow IPC stream with continuation markers');
  const size = view.getInt32(4, true);
  return stream.slice(0, 8 + size);
}
