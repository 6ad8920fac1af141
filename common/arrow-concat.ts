/**
 * `concatBatches(batches)`: one RecordBatch holding the rows of `batches` (same schema) in order.
 * A shard buffers one small batch per log record; encoding them as one batch saves parquet-wasm
 * a fixed cost per batch (measured: 100 batches of 250 rows cost 1.5–1.8× one of 25 K).
 *
 * Dispatches once per column on its type, like takeRows. Dictionary columns get one unified
 * dictionary (first-seen order) with remapped indices, whatever dictionaries the inputs had.
 * Sliced inputs work (Arrow JS slices offset/value buffers but not bitmaps). Buffers of the
 * result are fresh.
 */
import { makeData, RecordBatch, Struct, Type, Utf8, vectorFromArray, type Data, type Field, type Vector } from 'apache-arrow';
import { internalError } from './errors.js';

export function concatBatches(batches: RecordBatch[]): RecordBatch {
  if (batches.length === 0) throw internalError('concat_empty', 'concatBatches needs at least one batch');
  if (batches.length === 1) return batches[0]!;
  const schema = batches[0]!.schema;
  const length = batches.reduce((n, b) => n + b.numRows, 0);
  const children = schema.fields.map((field, c) => concatData(batches.map((b) => b.data.children[c]!), field, length));
  return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length, nullCount: 0, children }));
}

/** Bit `i` of a part's validity (1 when it has no nulls). */
function isValid(part: Data, i: number): boolean {
  if (part.nullCount === 0 || !part.nullBitmap || part.nullBitmap.length === 0) return true;
  const j = part.offset + i;
  return ((part.nullBitmap[j >> 3]! >> (j & 7)) & 1) === 1;
}

function concatValidity(parts: Data[], length: number): { nullBitmap: Uint8Array | undefined; nullCount: number } {
  if (parts.every((p) => p.nullCount === 0)) return { nullBitmap: undefined, nullCount: 0 };
  const out = new Uint8Array(((length + 63) >> 6) << 3);
  let at = 0;
  let nulls = 0;
  for (const p of parts) {
    for (let i = 0; i < p.length; i++, at++) {
      if (isValid(p, i)) out[at >> 3]! |= 1 << (at & 7);
      else nulls++;
    }
  }
  return { nullBitmap: out, nullCount: nulls };
}

function concatData(parts: Data[], field: Field, length: number): Data {
  const type = parts[0]!.type;
  const { nullBitmap, nullCount } = concatValidity(parts, length);
  switch (type.typeId) {
    case Type.Utf8: {
      let bytes = 0;
      for (const p of parts) bytes += p.valueOffsets[p.length]! - p.valueOffsets[0]!;
      const valueOffsets = new Int32Array(length + 1);
      const values = new Uint8Array(bytes);
      let row = 0;
      let pos = 0;
      for (const p of parts) {
        const offs = p.valueOffsets as Int32Array;
        const start = offs[0]!;
        for (let i = 1; i <= p.length; i++) valueOffsets[row + i] = pos + offs[i]! - start;
        values.set((p.values as Uint8Array).subarray(start, offs[p.length]!), pos);
        pos += offs[p.length]! - start;
        row += p.length;
      }
      return makeData({ type, length, nullCount, nullBitmap, valueOffsets, data: values } as never);
    }
    case Type.Dictionary: {
      const ids = new Map<string, number>();
      const strings: string[] = [];
      const indices = new Int32Array(length);
      let row = 0;
      for (const p of parts) {
        const dict = p.dictionary as Vector<Utf8> | undefined;
        const remap = new Int32Array(dict?.length ?? 0);
        for (let k = 0; k < remap.length; k++) {
          const s = dict!.get(k) ?? '';
          let id = ids.get(s);
          if (id === undefined) {
            id = strings.length;
            strings.push(s);
            ids.set(s, id);
          }
          remap[k] = id;
        }
        const src = p.values as Int32Array | Int16Array | Int8Array;
        for (let i = 0; i < p.length; i++) indices[row + i] = isValid(p, i) ? remap[src[i]!]! : 0;
        row += p.length;
      }
      const dictionary = vectorFromArray(strings, new Utf8());
      return makeData({ type, length, nullCount, nullBitmap, data: new (parts[0]!.values.constructor as Int32ArrayConstructor)(indices), dictionary } as never);
    }
    case Type.Bool: {
      const out = new Uint8Array(((length + 63) >> 6) << 3);
      let at = 0;
      for (const p of parts) {
        const src = p.values as Uint8Array;
        for (let i = 0; i < p.length; i++, at++) {
          const j = p.offset + i;
          if ((src[j >> 3]! >> (j & 7)) & 1) out[at >> 3]! |= 1 << (at & 7);
        }
      }
      return makeData({ type, length, nullCount, nullBitmap, data: out } as never);
    }
    case Type.Int:
    case Type.Float:
    case Type.Timestamp:
    case Type.Date:
    case Type.Time:
    case Type.Duration: {
      // One typed-array element per value (BigInt64Array for 64-bit types), as in takeRows.
      const first = parts[0]!.values as unknown as { constructor: new (n: number) => { set(a: ArrayLike<unknown>, at: number): void } };
      const out = new first.constructor(length);
      let row = 0;
      for (const p of parts) {
        out.set((p.values as unknown as { subarray(a: number, b: number): ArrayLike<unknown> }).subarray(0, p.length), row);
        row += p.length;
      }
      return makeData({ type, length, nullCount, nullBitmap, data: out } as never);
    }
    default:
      throw internalError('unsupported_column_type', `concatBatches: column ${field.name} has unsupported type ${String(type)}`);
  }
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
