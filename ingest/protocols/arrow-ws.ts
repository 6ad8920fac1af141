/**
 * Arrow over WebSocket: `GET /v1/stream` — for high-throughput producers (loadgen, server-side
 * pipelines) that already hold columnar data.
 *
 * Connect:  ws://host:port/v1/stream with `Authorization: Basic base64(writeKey:)` or
 *           `Bearer writeKey` (or `?writeKey=…` for clients that cannot set headers).
 *           Unknown/missing key → the upgrade is answered 401 (no socket).
 *
 * Client → server:
 *   binary  one Arrow IPC *stream* (schema message + record batches) per message, of the
 *           canonical columns of `ingestSchema` (common/schema.ts). Required: event_type,
 *           event_time (Timestamp, any unit, or epoch-ms number) and user_id or anonymous_id.
 *           Optional: event_id (derived from the row's content when null), anonymous_id,
 *           device_type, os, app_version, country, source, properties (JSON text), raw.
 *           Strings may be Utf8 or Dictionary<Utf8>. received_at and session_id are ignored
 *           (the server stamps receive time; the engine stamps sessions). Max message size:
 *           `wsMaxPayloadBytes` (default 16 MiB); bigger messages close the socket (uWS 1009).
 *   text    optional control message `{"seq":N}`: the next binary message gets sequence
 *           number N (then N+1, …). Without it, binary messages are numbered 0, 1, 2, … per
 *           connection. Use it to carry your own numbering across reconnects.
 *
 * Server → client, one JSON text message per binary message, possibly out of order (a batch
 * whose shards fsync sooner is acked sooner) — match acks by `seq`:
 *   {"seq":N,"ok":true,"accepted":A,"rejected":[{"index":i,"code":"…","message":"…"}],
 *    "offsets":[{"shard":s,"offset":o}]}                 — only after every row is fsync'd
 *   {"seq":N,"ok":false,"status":S,"code":"…","message":"…","retryAfter":sec?}
 *       S = 400 (`malformed_arrow`: not Arrow, or its metadata claims more than it holds;
 *       `unsupported_arrow`: nested types, compression; `invalid_schema`: a required column
 *       missing or of the wrong type, named in the message — do not resend as is), 413 (more
 *       rows than maxBatchEvents), 429/503 (resend after retryAfter seconds), 500. Nothing of
 *       a message that got ok:false was stored. Every message is checked by ingest/ipc-guard.ts
 *       before it is decoded (docs/VALIDATION.md).
 *
 * Rows are validated like every other event (bad rows → DLQ with the row as JSON), re-sharded
 * by user_id and group-committed with the HTTP traffic. A resent message after a lost ack may
 * duplicate rows in the log; the engine's dedup by event_id removes them.
 */
import { Table, tableFromIPC, TimeUnit, Type, type Data, type DataType, type Dictionary, type Float, type Int, type Timestamp, type Vector } from 'apache-arrow';
import { readFlatIpc } from '../../common/ipc-read.js';
import type { IngestRow } from '../batch-builder.js';
import { checkIpcStream } from '../ipc-guard.js';
import { normalizeCanonical, type NormalizeContext, type RejectCode } from '../normalize.js';
import { invalidUtf8Values, utf8Valid } from '../utf8.js';
import type { WriteKey } from '../options.js';
import { refuse, type Admission, type DeadLetter, type Decoded, type Refusal } from './decoded.js';

/** Columns read from a producer's batch (received_at and session_id are the server's/engine's). */
const COLUMNS = ['event_id', 'user_id', 'anonymous_id', 'event_type', 'event_time', 'device_type', 'os', 'app_version', 'country', 'source', 'properties', 'raw'] as const;

/** A text control message, or undefined when it is not one. */
export function parseControl(text: string): { seq: number } | undefined {
  try {
    const m = JSON.parse(text) as { seq?: unknown };
    if (typeof m === 'object' && m !== null && Number.isSafeInteger(m.seq) && (m.seq as number) >= 0) return { seq: m.seq as number };
  } catch {
    // not JSON
  }
  return undefined;
}

/** Columns whose values are text: Utf8 / LargeUtf8, plain or dictionary-encoded (or all-null). */
const TEXT_COLUMNS = new Set(['event_id', 'event_type', 'device_type', 'os', 'app_version', 'country', 'source', 'properties', 'raw']);
/** user_id / anonymous_id may also be numbers (coerced to their decimal text, as for Segment). */
const ID_COLUMNS = new Set(['user_id', 'anonymous_id']);

const isText = (t: DataType): boolean => t.typeId === Type.Utf8 || t.typeId === Type.LargeUtf8;
const isNumber = (t: DataType): boolean => t.typeId === Type.Int || t.typeId === Type.Float;

/** Why column `name` of type `t` cannot be read, or undefined when it can. */
function columnTypeProblem(name: string, t: DataType): string | undefined {
  if (t.typeId === Type.Null) return undefined;
  const text = isText(t) || (t.typeId === Type.Dictionary && isText((t as Dictionary).dictionary));
  if (TEXT_COLUMNS.has(name)) return text ? undefined : `column ${name} has type ${String(t)}; send Utf8 or Dictionary<Utf8>`;
  if (ID_COLUMNS.has(name)) return text || isNumber(t) ? undefined : `column ${name} has type ${String(t)}; send Utf8, Dictionary<Utf8> or an integer`;
  if (name === 'event_time') {
    return t.typeId === Type.Timestamp || t.typeId === Type.Date || isNumber(t) || text ? undefined : `column event_time has type ${String(t)}; send Timestamp (any unit), epoch-ms numbers or ISO-8601 Utf8`;
  }
  return undefined;
}

/** Reject code of a cell Arrow JS cannot read as a JS value (a 64-bit integer beyond 2^53). */
const unreadableCode = (name: string): RejectCode => (name === 'event_time' ? 'invalid_timestamp' : name === 'user_id' ? 'invalid_user_id' : name === 'anonymous_id' ? 'invalid_anonymous_id' : 'invalid_field');

/**
 * Per row, 1 when any of the given text columns holds invalid UTF-8 in that row (Arrow JS would
 * silently decode it with U+FFFD); undefined when every value is valid. Dictionary columns are
 * checked over their dictionaries, then mapped through the indices; 'bad_index' when a (non-null)
 * dictionary index points past its dictionary.
 */
function invalidUtf8Rows(vectors: readonly Vector[], rows: number): Uint8Array | undefined | 'bad_index' {
  let flags: Uint8Array | undefined;
  for (const vec of vectors) {
    const t = vec.type as DataType;
    const dict = t.typeId === Type.Dictionary;
    if (!(isText(t) || (dict && isText((t as Dictionary).dictionary)))) continue;
    let base = 0;
    if (dict) {
      // A chunk's dictionary may differ from the previous one (replacement or delta): check each once.
      let d: Vector | undefined;
      let size = 0;
      let badEntries: Uint8Array | undefined;
      for (const data of vec.data) {
        if (data.dictionary !== d) {
          d = data.dictionary as Vector | undefined;
          size = d?.length ?? 0;
          badEntries = d ? textFlags(d) : undefined;
        }
        const idx = data.values as ArrayLike<number | bigint>;
        const bitmap = data.nullCount > 0 ? data.nullBitmap : undefined;
        for (let i = 0; i < data.length; i++) {
          if (bitmap && ((bitmap[(data.offset + i) >> 3]! >> ((data.offset + i) & 7)) & 1) === 0) continue;
          const k = Number(idx[data.offset + i]!);
          if (!(k >= 0 && k < size)) return 'bad_index';
          if (badEntries !== undefined && badEntries[k] === 1) (flags ??= new Uint8Array(rows))[base + i] = 1;
        }
        base += data.length;
      }
      continue;
    }
    const bad = textFlags(vec);
    if (bad === undefined) continue;
    flags ??= new Uint8Array(rows);
    for (let i = 0; i < bad.length; i++) if (bad[i] === 1) flags[i] = 1;
  }
  return flags;
}

/** Per value of a Utf8 / LargeUtf8 vector, 1 when it is invalid UTF-8; undefined when all are valid. */
function textFlags(vec: Vector): Uint8Array | undefined {
  let flags: Uint8Array | undefined;
  let base = 0;
  for (const data of vec.data) {
    const offsets = data.valueOffsets as Int32Array | BigInt64Array;
    const values = data.values as Uint8Array;
    let bad: Uint8Array | undefined;
    if (offsets instanceof Int32Array) bad = invalidUtf8Values(offsets.subarray(data.offset, data.offset + data.length + 1), values, data.length);
    else {
      for (let i = 0; i < data.length; i++) {
        if (!utf8Valid(values, Number(offsets[data.offset + i]!), Number(offsets[data.offset + i + 1]!))) (bad ??= new Uint8Array(data.length))[i] = 1;
      }
    }
    if (bad !== undefined) {
      flags ??= new Uint8Array(vec.length);
      flags.set(bad, base);
    }
    base += data.length;
  }
  return flags;
}

/**
 * The message as a Table. A flat stream (Utf8, numbers, timestamps, dictionaries of them: what the
 * canonical schema and the loadgen send) goes through the engine's lean reader (common/ipc-read),
 * whose columns are the same Data over the same bytes that Arrow JS's reader makes, without its
 * per-call cost (≈ a quarter of the ack thread's time at 35 K events/s); anything else, and every
 * stream it does not take, through Arrow JS, which also words the error of a broken one. Only
 * streams ipc-guard passed get here: their buffers and offsets lie inside the message.
 */
export function readTable(bytes: Uint8Array): Table {
  const flat = readFlatIpc(bytes);
  if (flat === undefined) return tableFromIPC(bytes);
  // Arrow JS's reader memoizes each dictionary (an entry is decoded once per message, not once per
  // row that points at it), and rows are read here with get(): so must this path.
  const memoized = new Map<Vector, Vector>();
  for (const batch of flat.batches) {
    for (const data of batch.data.children) {
      const dict = data.dictionary;
      if (dict === undefined) continue;
      let m = memoized.get(dict);
      if (m === undefined) memoized.set(dict, (m = dict.memoize()));
      data.dictionary = m;
    }
  }
  return new Table(flat.schema, flat.batches);
}

const enum Cells {
  /** Utf8 with 32-bit offsets. */
  Utf8,
  /** A dictionary with 8/16/32-bit indices. */
  Dictionary,
  /** Int up to 32 bits, Float32/64: the value itself. */
  Number,
  /** Timestamp in ms (64-bit): a number, refused beyond 2^53 as Arrow JS does. */
  Millis,
  /** Anything else: Vector.get. */
  Other,
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const MIN_SAFE = BigInt(Number.MIN_SAFE_INTEGER);

function cellsOf(type: DataType): Cells {
  switch (type.typeId) {
    case Type.Utf8:
      return Cells.Utf8;
    case Type.Dictionary: {
      const bits = (type as Dictionary).indices.bitWidth;
      return bits <= 32 ? Cells.Dictionary : Cells.Other;
    }
    case Type.Int:
      return (type as Int).bitWidth <= 32 ? Cells.Number : Cells.Other;
    case Type.Float:
      return (type as Float).precision !== 0 ? Cells.Number : Cells.Other; // 0 = HALF: Arrow JS converts it
    case Type.Timestamp:
      return (type as Timestamp).unit === TimeUnit.MILLISECOND ? Cells.Millis : Cells.Other;
    default:
      return Cells.Other;
  }
}

/**
 * A column's cells in row order, as `Vector.get` reads them, without its per-cell dispatch (a
 * chunk lookup and a visitor call: ≈ 120 ns a cell): the types the canonical schema uses directly,
 * any other through get(). Strings are decoded with Buffer's UTF-8 decoder (rows holding invalid
 * UTF-8 are read with get(), whose decoder words their dead letter).
 */
export class CellReader {
  private chunk = -1;
  private start = 0;
  private end = 0;
  private data: Data | undefined;
  private cells = Cells.Other;
  private text: Buffer | undefined;

  constructor(private readonly vector: Vector) {}

  read(row: number): unknown {
    while (row >= this.end) this.next();
    const data = this.data!;
    const i = row - this.start;
    switch (this.cells) {
      case Cells.Utf8: {
        if (!data.getValid(i)) return null;
        const offsets = data.valueOffsets as Int32Array;
        return i + 1 < offsets.length ? this.text!.toString('utf8', offsets[i]!, offsets[i + 1]!) : null;
      }
      case Cells.Dictionary:
        return data.getValid(i) ? data.dictionary?.get((data.values as Int32Array)[i]!) : null;
      case Cells.Number:
        return data.getValid(i) ? (data.values as Int32Array | Float64Array)[i] : null;
      case Cells.Millis: {
        if (!data.getValid(i)) return null;
        const v = (data.values as BigInt64Array)[i]!;
        if (v < MIN_SAFE || v > MAX_SAFE) throw new TypeError(`${v} is not safe to convert to a number.`);
        return Number(v);
      }
      default:
        return this.vector.get(row);
    }
  }

  private next(): void {
    this.chunk++;
    this.start = this.end;
    const data = this.vector.data[this.chunk]!;
    this.end += data.length;
    this.data = data;
    this.cells = cellsOf(data.type as DataType);
    if (this.cells === Cells.Utf8) {
      const values = data.values as Uint8Array;
      this.text = Buffer.from(values.buffer, values.byteOffset, values.byteLength);
    }
  }
}

/**
 * Decodes one client message: bounded check of the IPC stream (ipc-guard.ts) → readTable →
 * column types by name (400 naming the column) → per row: invalid UTF-8 (`invalid_utf8`),
 * unreadable 64-bit cells, then the canonical event's rules (normalizeCanonical).
 */
export function decodeArrowMessage(bytes: Uint8Array, key: WriteKey, admission: Admission, context: (key: WriteKey) => NormalizeContext, maxRows = Number.MAX_SAFE_INTEGER): Decoded | Refusal {
  const checked = checkIpcStream(bytes, { maxRows });
  if (!checked.ok) return refuse(checked.status, checked.code, checked.message);
  let table: Table;
  try {
    table = readTable(bytes);
  } catch (err) {
    return refuse(400, 'malformed_arrow', `the message is not an Arrow IPC stream: ${(err as Error).message}`);
  }
  const cols = new Map<string, Vector>();
  for (const name of COLUMNS) {
    const c = table.getChild(name);
    if (c) cols.set(name, c);
  }
  const missing = ['event_type', 'event_time'].filter((n) => !cols.has(n));
  if (!cols.has('user_id') && !cols.has('anonymous_id')) missing.push('user_id');
  if (missing.length > 0) return refuse(400, 'invalid_schema', `the batch lacks column(s) ${missing.join(', ')}; send the columns of the canonical schema (README: Arrow over WebSocket)`);
  for (const [name, vec] of cols) {
    const problem = columnTypeProblem(name, vec.type as DataType);
    if (problem !== undefined) return refuse(400, 'invalid_schema', problem);
  }
  const refused = admission.admit(key, table.numRows);
  if (refused) return refused;
  const ctx = context(key);
  const names = [...cols.keys()];
  const vectors = names.map((n) => cols.get(n)!);
  const badUtf8 = invalidUtf8Rows(vectors, table.numRows);
  if (badUtf8 === 'bad_index') return refuse(400, 'malformed_arrow', 'a dictionary index points past its dictionary');
  const piiRules = ctx.pii.hash.length + ctx.pii.drop.length > 0;
  const readers = vectors.map((v) => new CellReader(v));
  const rows: IngestRow[] = [];
  const rejects: DeadLetter[] = [];
  for (let i = 0; i < table.numRows; i++) {
    const row: Record<string, unknown> = {};
    let unreadable: string | undefined;
    const viaGet = badUtf8 !== undefined && badUtf8[i] === 1;
    for (let c = 0; c < names.length; c++) {
      let v: unknown;
      try {
        v = viaGet ? vectors[c]!.get(i) : readers[c]!.read(i);
      } catch {
        // Arrow JS refuses 64-bit values beyond 2^53 (e.g. an Int64-max timestamp).
        unreadable ??= names[c]!;
        v = null;
      }
      if (typeof v === 'bigint') {
        // An Int64 id or time beyond 2^53 would lose digits as a number (it reads as another one).
        if (v > MAX_SAFE || v < MIN_SAFE) {
          unreadable ??= names[c]!;
          v = v.toString(); // exact in the dead letter
        } else v = Number(v);
      } else if (v instanceof Date) v = v.getTime();
      row[names[c]!] = v;
    }
    const raw = typeof row.raw === 'string' ? row.raw : undefined;
    delete row.raw;
    if (badUtf8 !== undefined && badUtf8[i] === 1) {
      rejects.push({ index: i, code: 'invalid_utf8', message: 'a string of this row is not valid UTF-8 (replaced by U+FFFD in the dead letter); send UTF-8', raw: JSON.stringify(row) });
      continue;
    }
    if (unreadable !== undefined) {
      rejects.push({ index: i, code: unreadableCode(unreadable), message: `column ${unreadable} holds a 64-bit integer beyond 2^53 − 1 in this row, which cannot be kept exactly${ID_COLUMNS.has(unreadable) ? '; send the id as Utf8' : ''}`, raw: JSON.stringify(row) });
      continue;
    }
    const r = normalizeCanonical(row, ctx);
    if (r.ok) {
      // Under PII rules raw is the masked row re-serialized; the producer's raw is never stored.
      if (!piiRules) r.event.raw = raw ?? null;
      rows.push(r.event);
    } else rejects.push({ index: i, code: r.code, message: r.message, raw: piiRules ? r.raw : (raw ?? JSON.stringify(row)) });
  }
  return { kind: 'decoded', key, rows, rejects };
}
