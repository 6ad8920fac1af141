import { Bool, Field, Float64, Int32, makeData, RecordBatch, Schema, Struct, tableFromIPC } from 'apache-arrow';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { coalesceBatches, concatBatches, concatToIpcStream } from '../../common/arrow-concat.js';
import { silverSchema } from '../../common/schema.js';
import { batchOf as build } from '../helpers/batches.js';

const schema = new Schema([...silverSchema.fields, new Field('n', new Int32(), true), new Field('x', new Float64(), false), new Field('flag', new Bool(), true)]);

const row = (i: number, devices: string[]): Record<string, unknown> => ({
  event_id: `e${i}`,
  user_id: `u${i % 3}`,
  anonymous_id: i % 2 ? null : `a${i}`,
  event_type: ['screen', 'click', 'install'][i % 3],
  event_time: 1_700_000_000_000 + i,
  received_at: 1_700_000_100_000 + i,
  session_id: null,
  device_type: i % 4 === 0 ? null : devices[i % devices.length],
  os: 'iOS',
  app_version: `${i % 2}.0`,
  country: i % 3 ? 'DE' : 'Ümlaut-Land',
  source: 'test',
  properties: i % 5 === 0 ? null : `{"i":${i}}`,
  n: i % 7 === 0 ? null : i * 3,
  x: i / 4,
  flag: i % 6 === 0 ? null : i % 2 === 0,
});

const batchOf = (rows: Array<Record<string, unknown>>): RecordBatch => build(schema, rows);
const plain = (b: RecordBatch): unknown[] => b.toArray().map((r) => r.toJSON());

describe('concatBatches', () => {
  it('keeps every row and value of every column type, unifying different dictionaries, nulls included', () => {
    const a = Array.from({ length: 13 }, (_, i) => row(i, ['ios', 'android']));
    const b = Array.from({ length: 1 }, (_, i) => row(100 + i, ['web']));
    const c = Array.from({ length: 70 }, (_, i) => row(200 + i, ['android', 'tv', 'ios']));
    const batches = [batchOf(a), batchOf(b), batchOf(c)];
    const out = concatBatches(batches);
    expect(out.numRows).toBe(84);
    expect(plain(out)).toEqual(batches.flatMap(plain));
    // One dictionary, first-seen order.
    expect([...(out.getChild('device_type')!.data[0]!.dictionary as Iterable<string>)]).toEqual(['android', 'ios', 'tv']); // b's only row has no device
  });

  it('works on sliced batches (offset buffers, unsliced bitmaps)', () => {
    const whole = batchOf(Array.from({ length: 40 }, (_, i) => row(i, ['ios', 'android', 'web'])));
    const parts = [whole.slice(3, 17), whole.slice(17, 18), whole.slice(21, 40)];
    expect(plain(concatBatches(parts))).toEqual(parts.flatMap(plain));
  });

  it('concatToIpcStream: one batch with one unified dictionary per column; undefined for a nested type', () => {
    const parts = [batchOf([0, 1, 2, 3].map((i) => row(i, ['ios', 'android']))), batchOf([4, 5, 6, 7, 8].map((i) => row(i, ['android', 'web']))).slice(1, 4)];
    const read = tableFromIPC(concatToIpcStream(parts)!);
    expect(read.toArray().map((r) => r.toJSON())).toEqual(parts.flatMap(plain));
    expect([...(read.getChild('device_type')!.data[0]!.dictionary as Iterable<string>)].sort()).toEqual(['android', 'ios', 'web']);
    const nested = new Schema([new Field('s', new Struct([new Field('a', new Int32())]))]);
    expect(concatToIpcStream([new RecordBatch(nested, makeData({ type: new Struct(nested.fields), length: 0, children: [makeData({ type: new Int32(), length: 0 })] }))])).toBeUndefined();
  });

  it('returns a single batch as it is', () => {
    const one = batchOf([row(1, ['ios'])]);
    expect(concatBatches([one])).toBe(one);
  });

  it('equals the rows of its parts for any rows, split and slicing (property)', () => {
    // Dictionary entries from a small pool, so parts share some and differ in others (non-ASCII, '' and a prefix pair included).
    const word = fc.constantFrom('ios', 'android', 'web', '', 'Ümlaut', '日本', 'io', 'iosx');
    const rowArb = fc.record({
      event_id: fc.string({ maxLength: 12 }),
      user_id: fc.string({ maxLength: 3 }),
      anonymous_id: fc.option(fc.string({ maxLength: 5 }), { nil: null }),
      event_type: word,
      event_time: fc.integer({ min: 0, max: 2 ** 42 }),
      received_at: fc.integer({ min: 0, max: 2 ** 42 }),
      session_id: fc.constant(null),
      device_type: fc.option(word, { nil: null }),
      os: word,
      app_version: fc.option(word, { nil: null }),
      country: word,
      source: word,
      properties: fc.option(fc.string({ maxLength: 20 }), { nil: null }),
      n: fc.option(fc.integer({ min: -1000, max: 1000 }), { nil: null }),
      x: fc.double({ noNaN: true }),
      flag: fc.option(fc.boolean(), { nil: null }),
    });
    // A part: a batch of rows, optionally sliced to [from, to) (Arrow JS slices offsets and values, not bitmaps).
    const partArb = fc.array(rowArb, { minLength: 1, maxLength: 40, size: 'large' }).chain((rows) =>
      fc.tuple(fc.constant(rows), fc.nat(rows.length - 1)).chain(([rs, from]) => fc.tuple(fc.constant(rs), fc.constant(from), fc.integer({ min: from + 1, max: rs.length }))),
    );
    fc.assert(
      fc.property(fc.array(partArb, { minLength: 1, maxLength: 30, size: 'large' }), fc.integer({ min: 1, max: 200 }), (specs, groupRows) => {
        const parts = specs.map(([rows, from, to]) => batchOf(rows).slice(from, to));
        const expected = parts.flatMap(plain);
        expect(plain(concatBatches(parts))).toEqual(expected);
        // The same rows as one batch of an IPC stream (arrow-rs reads it in test/storage/parquet.test.ts).
        const ipc = concatToIpcStream(parts)!;
        const read = tableFromIPC(ipc);
        expect(read.batches.length).toBe(1);
        expect(read.schema.fields.map(String)).toEqual(schema.fields.map(String));
        expect(read.toArray().map((r) => r.toJSON())).toEqual(expected);
        const groups = coalesceBatches(parts, groupRows);
        expect(groups.flatMap(plain)).toEqual(expected);
        for (const g of groups) {
          for (const name of ['event_type', 'device_type', 'country']) {
            const dict = [...(g.getChild(name)!.data[0]!.dictionary as Iterable<string>)];
            expect(new Set(dict).size).toBe(dict.length); // unified: each entry once
          }
        }
      }),
      { numRuns: 100 },
    );
  });
});
