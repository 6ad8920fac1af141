/**
 * Epoch milliseconds of an Arrow Int64/Timestamp column as doubles, read as two 32-bit halves so
 * that no BigInt is allocated per row. Exact for |t| < 2^53 ms (every real timestamp).
 */
import type { Data, Timestamp } from 'apache-arrow';

/** Fills `out` (length ≥ data.length, or a fresh array) with the column's values; nulls read as 0. */
export function epochMillis(data: Data<Timestamp>, out: Float64Array = new Float64Array(data.length)): Float64Array {
  const values = data.values as unknown as BigInt64Array;
  const halves = new Int32Array(values.buffer, values.byteOffset, data.length * 2);
  for (let i = 0; i < data.length; i++) out[i] = halves[2 * i + 1]! * 4294967296 + (halves[2 * i]! >>> 0);
  return out;
}
