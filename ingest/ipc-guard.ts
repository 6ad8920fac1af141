/**
 * Checks a client's Arrow IPC stream BEFORE apache-arrow decodes it, so that what Arrow JS
 * allocates is bounded by the bytes received. Arrow JS trusts the metadata: a 3.6 KB message
 * whose flatbuffer claims 10⁹ field nodes, or a record length of 2⁶² over 8 body bytes, makes
 * `tableFromIPC` loop and allocate until V8 aborts (issue 14 §2).
 *
 * Every message of the stream (`0xFFFFFFFF │ int32 size │ flatbuffer Message │ body`) is walked
 * with a bounds-checked flatbuffer reader:
 *   - each message's metadata and body lie inside the received bytes; at most MAX_MESSAGES;
 *   - the first is a Schema of flat fields (no nested types: the canonical event is flat), at
 *     most MAX_FIELDS, every vector/string of the flatbuffer inside the metadata;
 *   - each RecordBatch / DictionaryBatch has one field node per field and exactly the buffers
 *     its types need; every buffer lies inside the body; node lengths are consistent with the
 *     buffer sizes (validity ≥ ⌈len/8⌉, fixed width ≥ len × width, offsets ≥ (len+1) × 4 or 8,
 *     and offsets monotonic, inside the data buffer); no compression;
 *   - record batch rows sum to at most `maxRows`; a dictionary batch refers to a dictionary
 *     field of the schema.
 * What passes may still be semantically wrong (a column of the wrong type): that is the
 * decoder's job, with the schema Arrow JS then reads.
 */

/** Why a stream was refused: `status` 400 (malformed) or 413 (too many rows). */
export interface IpcProblem {
  ok: false;
  status: 400 | 413;
  code: 'malformed_arrow' | 'unsupported_arrow' | 'too_many_events';
  message: string;
}

export type IpcCheck = { ok: true; rows: number } | IpcProblem;

export interface IpcLimits {
  /** Most rows over all record batches of the stream (the request's event limit). */
  maxRows: number;
}

/** Messages per stream (schema + dictionaries + record batches). */
export const MAX_MESSAGES = 1024;
/** Fields per schema. */
export const MAX_FIELDS = 256;

// Arrow's flatbuffer enums (format/Message.fbs, Schema.fbs).
const HEADER_SCHEMA = 1;
const HEADER_DICTIONARY = 2;
const HEADER_RECORD = 3;
const T = { Null: 1, Int: 2, FloatingPoint: 3, Binary: 4, Utf8: 5, Bool: 6, Decimal: 7, Date: 8, Time: 9, Timestamp: 10, Interval: 11, FixedSizeBinary: 15, Duration: 18, LargeBinary: 19, LargeUtf8: 20 } as const;
const TYPE_NAMES: Record<number, string> = {
  12: 'List',
  13: 'Struct',
  14: 'Union',
  16: 'FixedSizeList',
  17: 'Map',
  21: 'LargeList',
  22: 'RunEndEncoded',
  23: 'BinaryView',
  24: 'Utf8View',
  25: 'ListView',
  26: 'LargeListView',
};

/** How one field's data is laid out in a batch body. */
interface Layout {
  name: string;
  /** 0: no buffers (Null); 'bits': validity + bit-packed values; n > 0: validity + n-byte values; 'var32'/'var64': validity + offsets + data. */
  kind: 0 | 'bits' | number | 'var32' | 'var64';
}

class Malformed extends Error {}

const fail = (message: string): never => {
  throw new Malformed(message);
};

/**
 * A bounds-checked reader of one flatbuffer (the metadata of one message): every read is
 * checked against [start, end), so a corrupt offset or vector length fails instead of reading
 * (or looping over) memory outside the message.
 */
class Flat {
  constructor(
    private readonly v: DataView,
    private readonly start: number,
    private readonly end: number,
  ) {}

  private need(at: number, n: number): number {
    if (!(at >= this.start && n >= 0 && at + n <= this.end)) fail('the message metadata points outside itself');
    return at;
  }

  u8(at: number): number {
    return this.v.getUint8(this.need(at, 1));
  }
  i16(at: number): number {
    return this.v.getInt16(this.need(at, 2), true);
  }
  i32(at: number): number {
    return this.v.getInt32(this.need(at, 4), true);
  }
  u32(at: number): number {
    return this.v.getUint32(this.need(at, 4), true);
  }
  /** An int64 as a number; fails beyond 2⁵³. */
  i64(at: number): number {
    const lo = this.v.getUint32(this.need(at, 8), true);
    const hi = this.v.getInt32(at + 4, true);
    if (hi < 0 || hi >= 0x200000) fail('a length or offset in the message metadata is negative or beyond 2^53');
    return hi * 4294967296 + lo;
  }

  /** The root table's position. */
  root(): number {
    return this.start + this.u32(this.start);
  }

  /** The position of field `f` of the table at `table`, or 0 when absent. */
  field(table: number, f: number): number {
    const vt = table - this.i32(table);
    const vtSize = this.u16(vt);
    if (vtSize < 4 || vtSize & 1) fail('a flatbuffer vtable is malformed');
    this.need(vt, vtSize);
    const slot = 4 + 2 * f;
    if (slot + 2 > vtSize) return 0;
    const off = this.u16(vt + slot);
    return off === 0 ? 0 : table + off;
  }

  private u16(at: number): number {
    return this.v.getUint16(this.need(at, 2), true);
  }

  /** The target of the offset stored at `at` (a table, vector or string). */
  deref(at: number): number {
    return this.need(at + this.u32(at), 4);
  }

  /** [first element position, count] of the vector referenced at `at`; elements checked inside the buffer. */
  vector(at: number, elementSize: number): [number, number] {
    const v = this.deref(at);
    const n = this.u32(v);
    this.need(v + 4, n * elementSize);
    return [v + 4, n];
  }

  /** Checks the string referenced at `at` (length, bytes inside the buffer); returns its bytes' range. */
  string(at: number): [number, number] {
    const [s, n] = this.vector(at, 1);
    return [s, s + n];
  }

  /** The bytes of a checked range (a view). */
  bytes(start: number, end: number): Uint8Array {
    this.need(start, end - start);
    return new Uint8Array(this.v.buffer, this.v.byteOffset + start, end - start);
  }
}

const td = new TextDecoder('utf-8', { fatal: true });

/** Checks `bytes` (one client message) as a bounded Arrow IPC stream. Never throws. */
export function checkIpcStream(bytes: Uint8Array, limits: IpcLimits): IpcCheck {
  try {
    return walk(bytes, limits);
  } catch (err) {
    if (err instanceof Malformed) return { ok: false, status: 400, code: 'malformed_arrow', message: `the message is not a valid Arrow IPC stream: ${err.message}` };
    if (err instanceof Unsupported) return { ok: false, status: 400, code: 'unsupported_arrow', message: err.message };
    if (err instanceof TooMany) return { ok: false, status: 413, code: 'too_many_events', message: err.message };
    if (err instanceof RangeError) return { ok: false, status: 400, code: 'malformed_arrow', message: 'the message is not a valid Arrow IPC stream: it ends inside a message' };
    throw err;
  }
}

class Unsupported extends Error {}
class TooMany extends Error {}

function walk(bytes: Uint8Array, limits: IpcLimits): IpcCheck {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = bytes.byteLength;
  let pos = 0;
  let messages = 0;
  let layouts: Layout[] | undefined;
  /** Dictionary id → the layout of its values. */
  const dictionaries = new Map<number, Layout>();
  /** Dictionary ids whose values have arrived (a record batch may only use those). */
  const seen = new Set<number>();
  let rows = 0;
  let ended = false;
  while (pos < n) {
    if (pos + 4 > n) fail('it ends inside a message header');
    let size = v.getInt32(pos, true);
    pos += 4;
    if (size === -1) {
      if (pos + 4 > n) fail('it ends inside a message header');
      size = v.getInt32(pos, true);
      pos += 4;
    }
    if (size === 0) {
      ended = true; // end-of-stream marker
      break;
    }
    if (size < 0 || pos + size > n) fail(`a message claims ${size} bytes of metadata, more than the ${n - pos} bytes left`);
    if (++messages > MAX_MESSAGES) fail(`it holds more than ${MAX_MESSAGES} messages`);
    const meta = new Flat(v, pos, pos + size);
    const msg = meta.root();
    const headerTypeAt = meta.field(msg, 1);
    const headerType = headerTypeAt === 0 ? 0 : meta.u8(headerTypeAt);
    const headerAt = meta.field(msg, 2);
    const bodyAt = meta.field(msg, 3);
    const bodyLength = bodyAt === 0 ? 0 : meta.i64(bodyAt);
    checkKeyValues(meta, meta.field(msg, 4));
    const body = pos + size;
    if (bodyLength > n - body) fail(`a message claims a ${bodyLength}-byte body, more than the ${n - body} bytes left`);
    if (headerAt === 0) fail('a message has no header');
    const header = meta.deref(headerAt);
    if (layouts === undefined) {
      if (headerType !== HEADER_SCHEMA) fail('the stream does not start with a schema message');
      layouts = readSchema(meta, header, dictionaries);
    } else if (headerType === HEADER_RECORD) {
      for (const [id, d] of dictionaries) if (!seen.has(id)) fail(`a record batch arrives before the dictionary of column ${d.name}`);
      const len = checkBatch(meta, header, layouts, v, body, bodyLength, 'record batch');
      rows += len;
      if (rows > limits.maxRows) throw new TooMany(`the stream holds more than ${limits.maxRows} rows; send at most ${limits.maxRows} events per message`);
    } else if (headerType === HEADER_DICTIONARY) {
      const idAt = meta.field(header, 0);
      const id = idAt === 0 ? 0 : meta.i64(idAt);
      const values = dictionaries.get(id);
      if (values === undefined) fail(`a dictionary batch has id ${id}, which no schema field uses`);
      const dataAt = meta.field(header, 1);
      if (dataAt === 0) fail('a dictionary batch has no data');
      checkBatch(meta, meta.deref(dataAt), [values!], v, body, bodyLength, `dictionary of ${values!.name}`);
      seen.add(id);
    } else if (headerType === HEADER_SCHEMA) fail('the stream holds a second schema message');
    else fail(`a message has header type ${headerType}; only schema, dictionary and record batch messages are read`);
    pos = body + bodyLength;
  }
  if (layouts === undefined) fail('it holds no schema message');
  if (ended && pos < n) fail(`${n - pos} bytes follow the end-of-stream marker; send one stream per message`);
  return { ok: true, rows };
}

/** Checks a custom_metadata vector (KeyValue tables of two strings) referenced at `at` (0 = absent). */
function checkKeyValues(meta: Flat, at: number): void {
  if (at === 0) return;
  const [first, count] = meta.vector(at, 4);
  for (let i = 0; i < count; i++) {
    const kv = meta.deref(first + 4 * i);
    const k = meta.field(kv, 0);
    const val = meta.field(kv, 1);
    if (k !== 0) meta.string(k);
    if (val !== 0) meta.string(val);
  }
}

function fieldName(meta: Flat, field: number, index: number): string {
  const at = meta.field(field, 0);
  if (at === 0) return `#${index}`;
  const [s, e] = meta.string(at);
  try {
    return td.decode(meta.bytes(s, e));
  } catch {
    return fail(`field #${index} has a name that is not UTF-8`);
  }
}

/** The layouts of a Schema's fields; registers dictionary-encoded fields' value layouts by id. */
function readSchema(meta: Flat, schema: number, dictionaries: Map<number, Layout>): Layout[] {
  const fieldsAt = meta.field(schema, 1);
  checkKeyValues(meta, meta.field(schema, 2));
  const featuresAt = meta.field(schema, 3);
  if (featuresAt !== 0) meta.vector(featuresAt, 8);
  if (fieldsAt === 0) return [];
  const [first, count] = meta.vector(fieldsAt, 4);
  if (count > MAX_FIELDS) throw new Unsupported(`the schema has ${count} fields; at most ${MAX_FIELDS} are read`);
  const layouts: Layout[] = [];
  for (let i = 0; i < count; i++) {
    const f = meta.deref(first + 4 * i);
    const name = fieldName(meta, f, i);
    const childrenAt = meta.field(f, 5);
    if (childrenAt !== 0 && meta.vector(childrenAt, 4)[1] > 0) throw new Unsupported(`column ${name} is a nested type; Sluice reads flat columns only (Utf8, Dictionary<Utf8>, numbers, timestamps)`);
    checkKeyValues(meta, meta.field(f, 6));
    const value: Layout = { name, kind: typeLayout(meta, f, name) };
    const dictAt = meta.field(f, 4);
    if (dictAt === 0) {
      layouts.push(value);
      continue;
    }
    const enc = meta.deref(dictAt);
    const idAt = meta.field(enc, 0);
    const id = idAt === 0 ? 0 : meta.i64(idAt);
    const indexAt = meta.field(enc, 1);
    let width = 4;
    if (indexAt !== 0) {
      const index = meta.deref(indexAt);
      const bwAt = meta.field(index, 0);
      const bw = bwAt === 0 ? 0 : meta.i32(bwAt);
      if (bw !== 8 && bw !== 16 && bw !== 32 && bw !== 64) fail(`column ${name} has dictionary indices of ${bw} bits`);
      width = bw / 8;
    }
    if (dictionaries.has(id)) fail(`two fields share dictionary id ${id}`);
    dictionaries.set(id, value);
    layouts.push({ name, kind: width });
  }
  return layouts;
}

/** The body layout of a (non-nested) field's type. */
function typeLayout(meta: Flat, field: number, name: string): Layout['kind'] {
  const ttAt = meta.field(field, 2);
  const tt = ttAt === 0 ? 0 : meta.u8(ttAt);
  const typeAt = meta.field(field, 3);
  const type = typeAt === 0 ? 0 : meta.deref(typeAt);
  const int = (f: number, dflt: number): number => {
    if (type === 0) return dflt;
    const at = meta.field(type, f);
    return at === 0 ? dflt : meta.i32(at);
  };
  const short = (f: number, dflt: number): number => {
    if (type === 0) return dflt;
    const at = meta.field(type, f);
    return at === 0 ? dflt : meta.i16(at);
  };
  switch (tt) {
    case T.Null:
      return 0;
    case T.Bool:
      return 'bits';
    case T.Int:
    case T.Time: {
      const bw = int(tt === T.Int ? 0 : 1, 32);
      if (bw !== 8 && bw !== 16 && bw !== 32 && bw !== 64) fail(`column ${name} has an integer width of ${bw} bits`);
      return bw / 8;
    }
    case T.FloatingPoint: {
      const p = short(0, 0);
      if (p < 0 || p > 2) fail(`column ${name} has floating-point precision ${p}`);
      return [2, 4, 8][p]!;
    }
    case T.Decimal: {
      const bw = int(2, 128);
      if (bw !== 32 && bw !== 64 && bw !== 128 && bw !== 256) fail(`column ${name} has a decimal width of ${bw} bits`);
      return bw / 8;
    }
    case T.Date:
      return short(0, 1) === 0 ? 4 : 8;
    case T.Timestamp:
    case T.Duration:
      if (tt === T.Timestamp) {
        const tz = type === 0 ? 0 : meta.field(type, 1);
        if (tz !== 0) meta.string(tz);
      }
      return 8;
    case T.Interval: {
      const u = short(0, 0);
      if (u < 0 || u > 2) fail(`column ${name} has interval unit ${u}`);
      return [4, 8, 16][u]!;
    }
    case T.FixedSizeBinary: {
      const w = int(0, 0);
      if (w < 1 || w > 1 << 20) fail(`column ${name} has a fixed binary width of ${w}`);
      return w;
    }
    case T.Binary:
    case T.Utf8:
      return 'var32';
    case T.LargeBinary:
    case T.LargeUtf8:
      return 'var64';
    default:
      throw new Unsupported(`column ${name} has type ${TYPE_NAMES[tt] ?? `#${tt}`}; Sluice reads flat columns only (Utf8, Dictionary<Utf8>, numbers, timestamps)`);
  }
}

const buffersOf = (k: Layout['kind']): number => (k === 0 ? 0 : k === 'var32' || k === 'var64' ? 3 : 2);

/**
 * Checks one RecordBatch table (of a record batch or a dictionary batch) against the field
 * layouts and the message body at `body` (`bodyLength` bytes); returns its length.
 */
function checkBatch(meta: Flat, batch: number, layouts: Layout[], v: DataView, body: number, bodyLength: number, what: string): number {
  const lenAt = meta.field(batch, 0);
  const length = lenAt === 0 ? 0 : meta.i64(lenAt);
  if (meta.field(batch, 3) !== 0) throw new Unsupported(`the ${what} is compressed; send uncompressed Arrow IPC`);
  const variadic = meta.field(batch, 4);
  if (variadic !== 0 && meta.vector(variadic, 8)[1] > 0) throw new Unsupported(`the ${what} has variadic buffers (view types); send Utf8`);
  const nodesAt = meta.field(batch, 1);
  const buffersAt = meta.field(batch, 2);
  const [nodes, nodeCount] = nodesAt === 0 ? [0, 0] : meta.vector(nodesAt, 16);
  const [buffers, bufferCount] = buffersAt === 0 ? [0, 0] : meta.vector(buffersAt, 16);
  if (nodeCount !== layouts.length) fail(`the ${what} has ${nodeCount} field nodes for ${layouts.length} fields`);
  let need = 0;
  for (const l of layouts) need += buffersOf(l.kind);
  if (bufferCount !== need) fail(`the ${what} has ${bufferCount} buffers; its fields need ${need}`);
  // Length can only be as large as the data supports: a 0-buffer (Null) column aside, every
  // field needs at least a bit per row. Null-only batches are capped at the body size in bits.
  if (length > 8 * bodyLength && (length > 8 * bodyLength + 1024 || layouts.some((l) => l.kind !== 0))) fail(`the ${what} claims ${length} rows in a ${bodyLength}-byte body`);
  let b = 0;
  const buffer = (i: number): [number, number] => {
    const at = buffers + 16 * i;
    const off = meta.i64(at);
    const len = meta.i64(at + 8);
    if (off + len > bodyLength) fail(`a buffer of the ${what} (offset ${off}, ${len} bytes) lies outside its ${bodyLength}-byte body`);
    return [body + off, len];
  };
  for (let f = 0; f < layouts.length; f++) {
    const l = layouts[f]!;
    const nl = meta.i64(nodes + 16 * f);
    const nulls = meta.i64(nodes + 16 * f + 8);
    if (nl !== length) fail(`column ${l.name} has ${nl} values in a ${what} of ${length} rows`);
    if (nulls > nl) fail(`column ${l.name} claims ${nulls} nulls in ${nl} values`);
    if (l.kind === 0) continue;
    const [, validity] = buffer(b++);
    if (nulls > 0 && validity < Math.ceil(nl / 8)) fail(`column ${l.name} has a ${validity}-byte validity bitmap for ${nl} values`);
    if (l.kind === 'bits') {
      const [, bits] = buffer(b++);
      if (bits < Math.ceil(nl / 8)) fail(`column ${l.name} has ${bits} bytes for ${nl} booleans`);
    } else if (typeof l.kind === 'number') {
      const [, bytes] = buffer(b++);
      if (bytes < nl * l.kind) fail(`column ${l.name} has ${bytes} bytes for ${nl} values of ${l.kind} bytes`);
    } else {
      const w = l.kind === 'var32' ? 4 : 8;
      const [offAt, offBytes] = buffer(b++);
      const [, dataBytes] = buffer(b++);
      if (nl > 0) {
        if (offBytes < (nl + 1) * w) fail(`column ${l.name} has ${offBytes} bytes of offsets for ${nl} values`);
        checkOffsets(v, offAt, nl, w, dataBytes, l.name);
      }
    }
  }
  return length;
}

/** Offsets start ≥ 0, never decrease, and end inside the data buffer. */
function checkOffsets(v: DataView, at: number, n: number, w: number, dataBytes: number, name: string): void {
  let prev = 0;
  for (let i = 0; i <= n; i++) {
    let o: number;
    if (w === 4) o = v.getInt32(at + 4 * i, true);
    else {
      const hi = v.getInt32(at + 8 * i + 4, true);
      o = hi === 0 ? v.getUint32(at + 8 * i, true) : -1;
    }
    if (o < prev || o > dataBytes) fail(`column ${name} has value offsets outside its ${dataBytes}-byte data buffer`);
    prev = o;
  }
}
