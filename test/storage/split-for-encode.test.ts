/**
 * splitForEncode: every Parquet call within maxRowsPerCall rows and maxBytesPerCall Arrow bytes,
 * rows kept in order, the same chunks for the same input (names derived from chunk indexes are
 * stable across replays).
 */
import { Int32, makeData, RecordBatch, Schema, Field, Struct, Utf8, vectorFromArray } from 'apache-arrow';
import { describe, expect, it } from 'vitest';
import { arrowBytes } from '../../storage/partition-buffer.js';
import { decodeParquet, encodeParquet, splitForEncode, validateParquetOptions } from '../../storage/parquet.js';

const schema = new Schema([new Field('id', new Int32(), false), new Field('text', new Utf8(), false)]);

/** Batches of one schema (plain Utf8, so bytes grow with `width`), ids numbered across batches. */
function batches(sizes: number[], width = 8): RecordBatch[] {
  let next = 0;
  return sizes.map((n) => {
    const ids = Array.from({ length: n }, () => next++);
    const children = [vectorFromArray(Int32Array.from(ids)).data[0]!, vectorFromArray(ids.map((i) => `${i}`.padStart(width, 'x')), new Utf8()).data[0]!];
    return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: n, nullCount: 0, children }));
  });
}

const rowsOf = (chunk: RecordBatch[]): number => chunk.reduce((n, b) => n + b.numRows, 0);
const idsOf = (chunk: RecordBatch[]): number[] => chunk.flatMap((b) => Array.from(b.getChild('id')!.toArray() as Int32Array));

describe('splitForEncode', () => {
  const cases: Array<{ name: string; sizes: number[]; maxRows: number; maxBytes?: number; chunks: number }> = [
    { name: 'under the bound: one chunk, batches untouched', sizes: [10, 20], maxRows: 100, chunks: 1 },
    { name: 'rows: one big batch sliced', sizes: [250], maxRows: 100, chunks: 3 },
    { name: 'rows: many small batches packed', sizes: [30, 30, 30, 30, 30], maxRows: 100, chunks: 2 },
    { name: 'bytes bind before rows (24 B/row → 83 rows per 2000 B)', sizes: [100, 100], maxRows: 1_000, maxBytes: 2_000, chunks: 3 },
    { name: 'empty batches skipped', sizes: [0, 5, 0], maxRows: 100, chunks: 1 },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const input = batches(c.sizes, 16);
      const o = { maxRowsPerCall: c.maxRows, maxBytesPerCall: c.maxBytes };
      const chunks = splitForEncode(input, o);
      expect(chunks).toHaveLength(c.chunks);
      const max = validateParquetOptions(o).maxBytesPerCall;
      for (const chunk of chunks) {
        expect(rowsOf(chunk)).toBeLessThanOrEqual(c.maxRows);
        const perRow = input[0]!.numRows > 0 ? arrowBytes(input.find((b) => b.numRows > 0)!.data) / input.find((b) => b.numRows > 0)!.numRows : 0;
        expect(rowsOf(chunk) * perRow).toBeLessThanOrEqual(max);
      }
      const all = chunks.flatMap(idsOf);
      expect(all).toEqual(Array.from({ length: all.length }, (_, i) => i));
      expect(all.length).toBe(c.sizes.reduce((a, b) => a + b, 0));
      // Deterministic: the same input gives the same cut.
      expect(splitForEncode(input, o).map(rowsOf)).toEqual(chunks.map(rowsOf));
    });
  }

  it('a row bigger than the byte bound gets a chunk of its own', () => {
    const chunks = splitForEncode(batches([3], 4_000), { maxBytesPerCall: 1_000 });
    expect(chunks.map(rowsOf)).toEqual([1, 1, 1]);
  });

  it('every chunk encodes within maxRowsPerCall and decodes to its rows', () => {
    const chunks = splitForEncode(batches([120, 80]), { maxRowsPerCall: 64 });
    const decoded = chunks.flatMap((chunk) => Array.from(decodeParquet(encodeParquet(chunk, { maxRowsPerCall: 64 })).getChild('id')!.toArray() as Int32Array));
    expect(decoded).toEqual(Array.from({ length: 200 }, (_, i) => i));
  });
});
