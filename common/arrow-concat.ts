/**
 * `concatBatches(batches)`: one RecordBatch holding the rows of `batches` (same schema) in order.
 * A shard buffers one small batch per log record; encoding them as one batch saves parquet-wasm
 * a fixed cost per batch (measured: 100 batches of 250 rows cost 1.5–1.8× one of 25 K).
 * `concatToIpcStream(batches)`: the same batch as an Arrow IPC stream, its buffers assembled from
 * the parts straight into the stream's body (what parquet-wasm reads), so the merged batch is
 * never built and copied once more by an IPC writer.
 *
 * Dispatches once per column on its type, like takeRows. Dictionary columns get one unified
 * dictionary (first-seen order) with remapped indices, whatever dictionaries the inputs had.
 * Sliced inputs work (Arrow JS slices offset/value buffers but not bitmaps). Buffers of the
 * result are fresh.
 */
import { DataType, makeData, Table, tableToIPC, Type, Utf8, Vector, type Data, type Dictionary, type Field, type RecordBatch, type Schema } from 'apache-arrow';
import { recordBatchOf } from './arrow-batch.js';
import { internalError } from './errors.js';
import { encodeIpcStream, schemaMessageOf, type BodyFill, type ColumnParts, type DictionaryParts } from './ipc-write.js';

export function concatBatches(batches: RecordBatch[]): RecordBatch {
  if (batches.length === 0) throw internalError('concat_empty', 'concatBatches needs at least one batch');
  if (batches.length === 1) return batches[0]!;
  const schema = batches[0]!.schema;
  const length = batches.reduce((n, b) => n + b.numRows, 0);
  const children = schema.fields.map((field, c) => concatData(batches.map((b) => b.data.children[c]!), field, length));
  return recordBatchOf(schema, length, children);
}

/** Column types both concatenations handle (flat; dictionaries of Utf8). */
const FLAT_TYPES: ReadonlySet<Type> = new Set([Type.Utf8, Type.Dictionary, Type.Bool, Type.Int, Type.Float, Type.Timestamp, Type.Date, Type.Time, Type.Duration]);

/**
 * The rows of `batches` (one schema, in order) as ONE record batch in an Arrow IPC stream (schema,
 * dictionaries, batch, end marker) — the rows and values of `tableToIPC(concatBatches(batches))`
 * — with every buffer written from the parts straight into the stream's body. Undefined when a
 * column has a type it does not write (nested types); concatBatches handles the same types.
 */
export function concatToIpcStream(batches: RecordBatch[]): Uint8Array | undefined {
  if (batches.length === 0) throw internalError('concat_empty', 'concatToIpcStream needs at least one batch');
  const schema = batches[0]!.schema;
  if (!schema.fields.every((f) => FLAT_TYPES.has(f.type.typeId) && (f.type.typeId !== Type.Dictionary || DataType.isUtf8((f.type as Dictionary).dictionary)))) return undefined;
  const length = batches.reduce((n, b) => n + b.numRows, 0);
  const dictionaries: DictionaryParts[] = [];
  const columns = schema.fields.map((field, c) => columnParts(batches.map((b) => b.data.children[c]!), field, length, dictionaries));
  return encodeIpcStream(schemaMessage(batches[0]!), dictionaries, columns, length);
}

const schemaMessages = new WeakMap<Schema, Uint8Array>();

/** The batch's schema as an encapsulated IPC message (its dictionary ids included), encoded by Arrow JS once per Schema. */
function schemaMessage(batch: RecordBatch): Uint8Array {
  let m = schemaMessages.get(batch.schema);
  if (m === undefined) {
    m = schemaMessageOf(tableToIPC(new Table([batch.slice(0, 0)]), 'stream'));
    schemaMessages.set(batch.schema, m);
  }
  return m;
}

const EMPTY = new Uint8Array(0);
const bitmapBytes = (length: number): number => (length + 7) >> 3;
const int32s = (t: Uint8Array): Int32Array => new Int32Array(t.buffer, t.byteOffset, t.byteLength >> 2);
const bytesOf = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** One column of concatToIpcStream: its buffers as fills of the body; a dictionary column adds its unified dictionary. */
function columnParts(parts: Data[], field: Field, length: number, dictionaries: DictionaryParts[]): ColumnParts {
  const counts = nullCounts(parts);
  let nullCount = 0;
  for (const c of counts) nullCount += c;
  const validity: Uint8Array | BodyFill = nullCount === 0 ? EMPTY : { byteLength: bitmapBytes(length), fill: (t: Uint8Array) => fillValidity(parts, counts, t) };
  const type = parts[0]!.type;
  switch (type.typeId) {
    case Type.Utf8:
      return {
        length,
        nullCount,
        buffers: [validity, { byteLength: 4 * (length + 1), fill: (t: Uint8Array) => fillUtf8Offsets(parts, int32s(t)) }, { byteLength: utf8Bytes(parts), fill: (t: Uint8Array) => fillUtf8Values(parts, t) }],
      };
    case Type.Dictionary: {
      const { indices, unifier } = unifyDictionaries(parts, length);
      const d = unifier.entries();
      // The id the schema message gives the field (a part's own Data may carry another Dictionary type object).
      dictionaries.push({ id: (field.type as Dictionary).id, values: { length: d.count, nullCount: 0, buffers: [EMPTY, bytesOf(d.offsets), d.bytes] } });
      return { length, nullCount, buffers: [validity, bytesOf(indices)] };
    }
    case Type.Bool:
      return { length, nullCount, buffers: [validity, { byteLength: bitmapBytes(length), fill: (t: Uint8Array) => fillBits(parts, t) }] };
    case Type.Int:
    case Type.Float:
    case Type.Timestamp:
    case Type.Date:
    case Type.Time:
    case Type.Duration: {
      let bytes = 0;
      for (const p of parts) bytes += fixedBytes(p).byteLength;
      return { length, nullCount, buffers: [validity, { byteLength: bytes, fill: (t: Uint8Array) => fillFixed(parts, t) }] };
    }
    default:
      throw internalError('unsupported_column_type', `concatToIpcStream: column ${field.name} has unsupported type ${String(type)}`);
  }
}

/** Each part's null count, read once (Arrow JS computes it lazily behind a getter); 0 without a bitmap. */
function nullCounts(parts: Data[]): number[] {
  return parts.map((p) => (p.nullBitmap !== undefined && p.nullBitmap.length > 0 ? p.nullCount : 0));
}

/**
 * The validity of the concatenation: undefined when no part has a null. Bits are copied per part
 * (a part without nulls sets its range in one pass).
 */
function concatValidity(parts: Data[], length: number): { nullBitmap: Uint8Array | undefined; nullCount: number } {
  const counts = nullCounts(parts);
  let nulls = 0;
  for (const c of counts) nulls += c;
  if (nulls === 0) return { nullBitmap: undefined, nullCount: 0 };
  const out = new Uint8Array(((length + 63) >> 6) << 3);
  fillValidity(parts, counts, out);
  return { nullBitmap: out, nullCount: nulls };
}

/** Writes the concatenation's validity bits into `out` (zeroed). */
function fillValidity(parts: Data[], counts: number[], out: Uint8Array): void {
  let at = 0;
  parts.forEach((p, k) => {
    const n = p.length;
    if (counts[k] === 0) setBits(out, at, n);
    else if (counts[k]! < n) copyBits(p.nullBitmap!, p.offset, out, at, n);
    at += n;
  });
}

/** Sets bits [at, at + n) of `out`. */
function setBits(out: Uint8Array, at: number, n: number): void {
  let i = at;
  const end = at + n;
  while (i < end && (i & 7) !== 0) {
    out[i >> 3]! |= 1 << (i & 7);
    i++;
  }
  if (end - i >= 8) {
    out.fill(0xff, i >> 3, end >> 3);
    i = end & ~7;
  }
  for (; i < end; i++) out[i >> 3]! |= 1 << (i & 7);
}

/** Copies bits [from, from + n) of `src` to bits [at, at + n) of `out` (whose target bits are 0). */
function copyBits(src: Uint8Array, from: number, out: Uint8Array, at: number, n: number): void {
  for (let k = 0; k < n; k++) {
    const j = from + k;
    if ((src[j >> 3]! >> (j & 7)) & 1) {
      const t = at + k;
      out[t >> 3]! |= 1 << (t & 7);
    }
  }
}

function concatData(parts: Data[], field: Field, length: number): Data {
  const type = parts[0]!.type;
  const { nullBitmap, nullCount } = concatValidity(parts, length);
  const validity = { nullCount, nullBitmap };
  switch (type.typeId) {
    case Type.Utf8:
      return makeData({ type, length, ...validity, ...concatUtf8(parts, length) } as never);
    case Type.Dictionary:
      return makeData({ type, length, ...validity, ...concatDictionary(parts, length) } as never);
    case Type.Bool:
      return makeData({ type, length, ...validity, data: concatBits(parts, length) } as never);
    case Type.Int:
    case Type.Float:
    case Type.Timestamp:
    case Type.Date:
    case Type.Time:
    case Type.Duration:
      return makeData({ type, length, ...validity, data: concatFixed(parts, length) } as never);
    default:
      throw internalError('unsupported_column_type', `concatBatches: column ${field.name} has unsupported type ${String(type)}`);
  }
}

// Each part is a Data of whatever shape its producer gave it, so the loops below read its fields
// once into locals: a property read per row would be a megamorphic load per row.

function concatUtf8(parts: Data[], length: number): { valueOffsets: Int32Array; data: Uint8Array } {
  const valueOffsets = new Int32Array(length + 1);
  const data = new Uint8Array(utf8Bytes(parts));
  fillUtf8Offsets(parts, valueOffsets);
  fillUtf8Values(parts, data);
  return { valueOffsets, data };
}

function utf8Bytes(parts: Data[]): number {
  let bytes = 0;
  for (const p of parts) {
    const offs = p.valueOffsets;
    bytes += offs[p.length]! - offs[0]!;
  }
  return bytes;
}

/** The concatenation's offsets into `out` (length + 1 entries, out[0] already 0): each part's shifted to where its bytes land. */
function fillUtf8Offsets(parts: Data[], out: Int32Array): void {
  let row = 0;
  let pos = 0;
  for (const p of parts) {
    const offs = p.valueOffsets as Int32Array;
    const n = p.length;
    const start = offs[0]!;
    const shift = pos - start;
    for (let i = 1; i <= n; i++) out[row + i] = offs[i]! + shift;
    pos += offs[n]! - start;
    row += n;
  }
}

function fillUtf8Values(parts: Data[], out: Uint8Array): void {
  let pos = 0;
  for (const p of parts) {
    const offs = p.valueOffsets as Int32Array;
    const start = offs[0]!;
    const end = offs[p.length]!;
    out.set((p.values as Uint8Array).subarray(start, end), pos);
    pos += end - start;
  }
}

/** One dictionary for all parts (first-seen order of their entries), with remapped indices; a null row gets index 0. */
function concatDictionary(parts: Data[], length: number): { data: Int32Array | Int16Array | Int8Array; dictionary: Vector<Utf8> } {
  const { indices, unifier } = unifyDictionaries(parts, length);
  return { data: indices, dictionary: unifier.dictionary() };
}

/** The parts' dictionaries unified, their rows' indices remapped into one array of the parts' index type. */
function unifyDictionaries(parts: Data[], length: number): { indices: Int32Array | Int16Array | Int8Array; unifier: DictionaryUnifier } {
  const unifier = new DictionaryUnifier();
  const indices = new Int32Array(length);
  let row = 0;
  for (const p of parts) {
    const remap = unifier.add(p.dictionary as Vector<Utf8> | undefined);
    const n = p.length;
    const bitmap = p.nullCount > 0 ? p.nullBitmap : undefined;
    const src = p.values as Int32Array | Int16Array | Int8Array;
    if (src instanceof Int32Array) remapIndices(src, remap, indices, row, n, bitmap, p.offset);
    else remapIndices(Int32Array.from(src.subarray(0, n)), remap, indices, row, n, bitmap, p.offset);
    row += n;
  }
  const IndexArray = parts[0]!.values.constructor as Int32ArrayConstructor;
  return { indices: IndexArray === Int32Array ? indices : new IndexArray(indices), unifier };
}

/**
 * Unifies Utf8 dictionaries by their bytes: every part brings its own dictionary (one per log
 * record), mostly holding entries another part had. Entries are compared as bytes (hashed into an
 * open-addressing table) and kept in one byte arena, which becomes the result's dictionary — no
 * string is decoded. A null entry counts as ''.
 */
class DictionaryUnifier {
  private bytes = new Uint8Array(256);
  private offsets = new Int32Array(17);
  private hashes = new Int32Array(16);
  private count = 0;
  /** Slot → id + 1 (0 = empty). */
  private slots = new Int32Array(64);

  /** The ids of `dict`'s entries, in its order. */
  add(dict: Vector<Utf8> | undefined): Int32Array {
    const remap = new Int32Array(dict?.length ?? 0);
    if (dict === undefined) return remap;
    let k = 0;
    for (const chunk of dict.data) {
      const offs = chunk.valueOffsets;
      const values = chunk.values;
      const bitmap = chunk.nullCount > 0 ? chunk.nullBitmap : undefined;
      const n = chunk.length;
      const offset = chunk.offset;
      for (let e = 0; e < n; e++, k++) {
        const j = offset + e;
        const isNull = bitmap !== undefined && bitmap.length > 0 && ((bitmap[j >> 3]! >> (j & 7)) & 1) === 0;
        remap[k] = isNull ? this.idOf(values, 0, 0) : this.idOf(values, offs[e]!, offs[e + 1]!);
      }
    }
    return remap;
  }

  /** The distinct entries as Utf8 buffers (views of the unifier's own arrays): `count` entries, `count + 1` offsets. */
  entries(): { count: number; offsets: Int32Array; bytes: Uint8Array } {
    const n = this.count;
    return { count: n, offsets: this.offsets.subarray(0, n + 1), bytes: this.bytes.subarray(0, this.offsets[n]!) };
  }

  /** The unified dictionary: every distinct entry, in first-seen order. */
  dictionary(): Vector<Utf8> {
    const n = this.count;
    const end = this.offsets[n]!;
    const data = makeData({ type: new Utf8(), length: n, nullCount: 0, valueOffsets: this.offsets.slice(0, n + 1), data: this.bytes.slice(0, end) });
    return new Vector([data]);
  }

  private idOf(src: Uint8Array, start: number, end: number): number {
    let h = 0x811c9dc5 | 0; // int32, as stored in `hashes`
    for (let i = start; i < end; i++) h = Math.imul(h ^ src[i]!, 0x01000193);
    const mask = this.slots.length - 1;
    for (let slot = h & mask; ; slot = (slot + 1) & mask) {
      const held = this.slots[slot]!;
      if (held === 0) return this.insert(slot, h, src, start, end);
      const id = held - 1;
      if (this.hashes[id] === h && this.equals(id, src, start, end)) return id;
    }
  }

  private equals(id: number, src: Uint8Array, start: number, end: number): boolean {
    const from = this.offsets[id]!;
    if (this.offsets[id + 1]! - from !== end - start) return false;
    const bytes = this.bytes;
    for (let i = 0; i < end - start; i++) if (bytes[from + i] !== src[start + i]) return false;
    return true;
  }

  private insert(slot: number, hash: number, src: Uint8Array, start: number, end: number): number {
    const id = this.count++;
    const at = this.offsets[id]!;
    const size = end - start;
    if (at + size > this.bytes.length) this.bytes = grown(this.bytes, at + size);
    this.bytes.set(src.subarray(start, end), at);
    if (id + 2 > this.offsets.length) this.offsets = grown(this.offsets, id + 2);
    this.offsets[id + 1] = at + size;
    if (id + 1 > this.hashes.length) this.hashes = grown(this.hashes, id + 1);
    this.hashes[id] = hash;
    this.slots[slot] = id + 1;
    if (this.count * 2 > this.slots.length) this.rehash();
    return id;
  }

  private rehash(): void {
    const slots = new Int32Array(this.slots.length * 2);
    const mask = slots.length - 1;
    for (let id = 0; id < this.count; id++) {
      let slot = this.hashes[id]! & mask;
      while (slots[slot] !== 0) slot = (slot + 1) & mask;
      slots[slot] = id + 1;
    }
    this.slots = slots;
  }
}

function grown<T extends Uint8Array | Int32Array>(a: T, atLeast: number): T {
  const b = new (a.constructor as new (n: number) => T)(Math.max(atLeast, a.length * 2));
  b.set(a);
  return b;
}

function remapIndices(src: Int32Array, remap: Int32Array, out: Int32Array, row: number, n: number, bitmap: Uint8Array | undefined, offset: number): void {
  if (bitmap === undefined || bitmap.length === 0) {
    for (let i = 0; i < n; i++) out[row + i] = remap[src[i]!]!;
    return;
  }
  for (let i = 0; i < n; i++) {
    const j = offset + i;
    out[row + i] = (bitmap[j >> 3]! >> (j & 7)) & 1 ? remap[src[i]!]! : 0;
  }
}

function concatBits(parts: Data[], length: number): Uint8Array {
  const out = new Uint8Array(((length + 63) >> 6) << 3);
  fillBits(parts, out);
  return out;
}

/** Boolean values (bit-packed, not sliced by Arrow JS) into `out` (zeroed). */
function fillBits(parts: Data[], out: Uint8Array): void {
  let at = 0;
  for (const p of parts) {
    const n = p.length;
    copyBits(p.values as Uint8Array, p.offset, out, at, n);
    at += n;
  }
}

/** The bytes of a fixed-width part's values (Arrow JS slices them to the part's first row). */
function fixedBytes(p: Data): Uint8Array {
  const v = p.values as ArrayBufferView & { BYTES_PER_ELEMENT: number };
  return new Uint8Array(v.buffer, v.byteOffset, p.length * p.stride * v.BYTES_PER_ELEMENT);
}

function fillFixed(parts: Data[], out: Uint8Array): void {
  let pos = 0;
  for (const p of parts) {
    const b = fixedBytes(p);
    out.set(b, pos);
    pos += b.byteLength;
  }
}

/** One typed-array element per value (BigInt64Array for 64-bit types), as in takeRows. */
function concatFixed(parts: Data[], length: number): unknown {
  type Values = { constructor: new (n: number) => Values; length: number; set(a: Values, at: number): void; subarray(a: number, b: number): Values };
  const out = new (parts[0]!.values as Values).constructor(length);
  let row = 0;
  for (const p of parts) {
    const n = p.length;
    const values = p.values as Values;
    out.set(values.length === n ? values : values.subarray(0, n), row);
    row += n;
  }
  return out;
}

/** Consecutive batches merged into batches of at least `rows` rows each (the last may be smaller). */
export function coalesceBatches(batches: RecordBatch[], rows = 65_536): RecordBatch[] {
  const out: RecordBatch[] = [];
  let group: RecordBatch[] = [];
  let n = 0;
  for (const b of batches) {
    group.push(b);
    n += b.numRows;
    if (n >= rows) {
      out.push(concatBatches(group));
      group = [];
      n = 0;
    }
  }
  if (group.length > 0) out.push(concatBatches(group));
  return out;
}
