/**
 * `takeRows(batch, indices)`: a new RecordBatch holding the given rows of `batch`, in the given
 * order. The columnar gather used to split batches by partition, apply dedup masks and split off
 * late rows. Dispatches once per column on its type; inner loops index typed arrays directly.
 *
 * Supported column types: Utf8, Dictionary<*, Int8|16|32> (dictionary shared, not copied),
 * fixed-width numbers and timestamps (any typed-array backed type) and Bool. Sliced inputs work
 * (Arrow JS slices offset/value buffers but not bitmaps, hence the asymmetry below). Buffers of the
 * result are fresh (never views of the input), so they can be transferred.
 */
import { Data, makeData, Type, type DataType, type Field, type RecordBatch, type Schema } from 'apache-arrow';
import { recordBatchOf } from './arrow-batch.js';
import { internalError } from './errors.js';

export function takeRows(batch: RecordBatch, indices: Int32Array | Uint32Array): RecordBatch {
  const children = batch.schema.fields.map((field, i) => takeData(batch.data.children[i]!, indices, field));
  return recordBatchOf(batch.schema as Schema, indices.length, children);
}

/** Indices of the set positions of a 0/1 mask. */
export function maskToIndices(mask: Uint8Array, wanted = 1): Int32Array {
  let n = 0;
  for (let i = 0; i < mask.length; i++) if (mask[i] === wanted) n++;
  const out = new Int32Array(n);
  let j = 0;
  for (let i = 0; i < mask.length; i++) if (mask[i] === wanted) out[j++] = i;
  return out;
}

function takeValidity(data: Data, indices: ArrayLike<number>): { nullBitmap: Uint8Array | undefined; nullCount: number } {
  if (data.nullCount === 0 || !data.nullBitmap || data.nullBitmap.length === 0) return { nullBitmap: undefined, nullCount: 0 };
  const src = data.nullBitmap;
  const off = data.offset;
  const out = new Uint8Array(((indices.length + 63) >> 6) << 3);
  let nulls = 0;
  for (let i = 0; i < indices.length; i++) {
    const j = indices[i]! + off;
    if ((src[j >> 3]! >> (j & 7)) & 1) out[i >> 3]! |= 1 << (i & 7);
    else nulls++;
  }
  return nulls === 0 ? { nullBitmap: undefined, nullCount: 0 } : { nullBitmap: out, nullCount: nulls };
}

function takeData(data: Data, indices: ArrayLike<number>, field: Field): Data {
  const type: DataType = data.type;
  const { nullBitmap, nullCount } = takeValidity(data, indices);
  const length = indices.length;
  switch (type.typeId) {
    case Type.Utf8: {
      const srcOffsets = data.valueOffsets as Int32Array;
      const srcValues = data.values as Uint8Array;
      const base = 0; // sliced Data already has its offsets buffer sliced
      const valueOffsets = new Int32Array(length + 1);
      let bytes = 0;
      for (let i = 0; i < length; i++) {
        const r = indices[i]! + base;
        bytes += srcOffsets[r + 1]! - srcOffsets[r]!;
        valueOffsets[i + 1] = bytes;
      }
      const values = new Uint8Array(bytes);
      // Runs of consecutive rows (what a dedup mask or a partition split mostly leaves) are one
      // copy each: a subarray and a set per row cost more than the bytes of a short id.
      for (let i = 0; i < length; ) {
        let at = valueOffsets[i]!;
        const first = indices[i]! + base;
        let last = first;
        while (++i < length && indices[i]! + base === last + 1) last++;
        const from = srcOffsets[first]!;
        const to = srcOffsets[last + 1]!;
        if (to - from <= 16) for (let k = from; k < to; k++) values[at++] = srcValues[k]!;
        else values.set(srcValues.subarray(from, to), at);
      }
      return makeData({ type, length, nullCount, nullBitmap, valueOffsets, data: values } as never);
    }
    case Type.Dictionary: {
      const src = data.values as Int32Array | Int16Array | Int8Array;
      const out = new (src.constructor as Int32ArrayConstructor)(length);
      const base = 0; // sliced Data already has its index buffer sliced
      for (let i = 0; i < length; i++) out[i] = src[indices[i]! + base]!;
      return makeData({ type, length, nullCount, nullBitmap, data: out, dictionary: data.dictionary } as never);
    }
    case Type.Bool: {
      // Bit-packed buffers are not sliced by Arrow JS: the data offset applies.
      const src = data.values as Uint8Array;
      const out = new Uint8Array(((length + 63) >> 6) << 3);
      const base = data.offset;
      for (let i = 0; i < length; i++) {
        const j = indices[i]! + base;
        if ((src[j >> 3]! >> (j & 7)) & 1) out[i >> 3]! |= 1 << (i & 7);
      }
      return makeData({ type, length, nullCount, nullBitmap, data: out } as never);
    }
    case Type.Int:
    case Type.Float:
    case Type.Timestamp:
    case Type.Date:
    case Type.Time:
    case Type.Duration: {
      const src = data.values as unknown as { length: number; constructor: new (n: number) => { [i: number]: number | bigint } } & {
        [i: number]: number | bigint;
      };
      // Arrow JS (≥ 15) backs every fixed-width type with one typed-array element per value
      // (BigInt64Array for 64-bit ints and timestamps), so a row is one element.
      const out = new src.constructor(length);
      const base = 0; // sliced Data already has its value buffer sliced
      for (let i = 0; i < length; i++) out[i] = src[indices[i]! + base]!;
      return makeData({ type, length, nullCount, nullBitmap, data: out } as never);
    }
    default:
      throw internalError('unsupported_column_type', `takeRows: column ${field.name} has unsupported type ${String(type)}`);
  }
}
