import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { silverSchema } from '../../common/schema.js';
import { maskToIndices, takeRows } from '../../common/arrow-take.js';
import { batchOf } from '../helpers/batches.js';

describe('takeRows', () => {
  const rows = Array.from({ length: 10 }, (_, i) => ({
    event_id: `e${i}`,
    user_id: `u${i % 3}`,
    anonymous_id: i % 2 ? null : `a${i}`,
    event_type: ['screen', 'click', 'install'][i % 3],
    event_time: 1_700_000_000_000 + i,
    received_at: 1_700_000_100_000 + i,
    session_id: null,
    device_type: i % 4 === 0 ? null : 'ios',
    os: 'iOS',
    app_version: '1.0',
    country: 'DE',
    source: 'test',
    properties: i % 5 === 0 ? null : `{"i":${i}}`,
  }));
  const batch = batchOf(silverSchema, rows);

  it('gathers rows of every column type in the given order, keeping nulls', () => {
    const picked = takeRows(batch, Int32Array.from([9, 0, 4, 4, 7]));
    expect(picked.numRows).toBe(5);
    const got = picked.toArray().map((r) => r.toJSON());
    const want = [9, 0, 4, 4, 7].map((i) => rows[i]!);
    for (let k = 0; k < want.length; k++) {
      for (const [col, v] of Object.entries(want[k]!)) {
        expect(got[k]![col], `${col} of row ${k}`).toEqual(v);
      }
    }
  });

  it('takes from sliced batches and an empty selection', () => {
    const sliced = batch.slice(3, 8);
    const picked = takeRows(sliced, Int32Array.from([0, 4]));
    expect(picked.getChild('event_id')!.toArray()).toEqual(['e3', 'e7']);
    expect(picked.getChild('anonymous_id')!.toArray()).toEqual([null, null]);
    expect(takeRows(batch, new Int32Array(0)).numRows).toBe(0);
  });

  it('maskToIndices lists the set positions', () => {
    expect(Array.from(maskToIndices(Uint8Array.from([1, 0, 0, 1, 1])))).toEqual([0, 3, 4]);
    expect(Array.from(maskToIndices(Uint8Array.from([1, 0, 0, 1, 1]), 0))).toEqual([1, 2]);
  });
});

describe('takeRows against a row-by-row gather', () => {
  it('any selection (runs of consecutive rows, repeats, any order) of any slice gives those rows', () => {
    const text = fc.option(fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom('', 'ü', '日本語のテキスト', 'x'.repeat(100))), { freq: 5 });
    const row = fc.record({ event_id: fc.string({ minLength: 1, maxLength: 20 }), user_id: fc.string({ maxLength: 8 }), anonymous_id: text, properties: text });
    fc.assert(
      fc.property(
        fc.array(row, { minLength: 1, maxLength: 60 }),
        fc.nat(),
        fc.nat(),
        // A selection: runs of consecutive rows from random starts, as a dedup mask or a partition split leaves them.
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 12 })), { maxLength: 10 }),
        (input, a, b, runs) => {
          const full = batchOf(silverSchema, input.map((r, i) => ({ ...r, event_type: 'click', event_time: 1_700_000_000_000 + i, received_at: 1_700_000_000_000, session_id: null, device_type: null, os: null, app_version: null, country: null, source: null })));
          const from = a % input.length;
          const to = from + 1 + (b % (input.length - from));
          const batch = full.slice(from, to);
          const n = to - from;
          const indices = runs.flatMap(([start, len]) => Array.from({ length: len }, (_, k) => (start + k) % n));
          const picked = takeRows(batch, Int32Array.from(indices));
          for (const col of ['event_id', 'user_id', 'anonymous_id', 'properties'] as const) {
            expect(picked.getChild(col)!.toArray(), col).toEqual(indices.map((i) => input[from + i]![col]));
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
