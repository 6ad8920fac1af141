/**
 * The Arrow WS path reads flat client messages with the engine's lean IPC reader, not Arrow JS's
 * (ingest/protocols/arrow-ws.ts `readTable`). Oracle: Arrow JS's `tableFromIPC` over the same
 * bytes — every column's every value must read the same, for random tables (nulls, dictionaries,
 * several batches, numbers as ids and times); corrupted copies that ipc-guard still passes must be
 * refused or read in full (cells that cannot be read throw, as Arrow JS's do).
 */
import { makeData, makeTable, RecordBatch, Table, tableFromIPC, tableToIPC, Vector, vectorFromArray, Dictionary, Float32, Float64, Int8, Int16, Int32, Int64, TimestampMillisecond, TimestampSecond, Utf8, type DataType } from 'apache-arrow';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checkIpcStream } from '../../ingest/ipc-guard.js';
import { CellReader, readTable } from '../../ingest/protocols/arrow-ws.js';

interface Column {
  name: string;
  type: () => DataType;
  value: fc.Arbitrary<unknown>;
}

const word = fc.constantFrom('ios', 'android', 'web', 'DE', 'ünïcode', '', '日本');
const COLUMNS: Column[] = [
  { name: 'event_type', type: () => new Dictionary(new Utf8(), new Int32()), value: fc.option(fc.constantFrom('screen', 'track', 'install'), { nil: null }) },
  { name: 'event_time', type: () => new TimestampMillisecond(), value: fc.option(fc.integer({ min: 1_700_000_000_000, max: 1_800_000_000_000 }), { nil: null }) },
  { name: 'user_id', type: () => new Utf8(), value: fc.option(fc.string({ maxLength: 12 }), { nil: null }) },
  { name: 'anonymous_id', type: () => new Int32(), value: fc.option(fc.integer(), { nil: null }) },
  { name: 'country', type: () => new Dictionary(new Utf8(), new Int32()), value: fc.option(word, { nil: null }) },
  { name: 'properties', type: () => new Utf8(), value: fc.option(fc.json(), { nil: null }) },
  { name: 'app_version', type: () => new Float64(), value: fc.option(fc.double({ noNaN: true }), { nil: null }) },
  { name: 'event_id', type: () => new Int64(), value: fc.option(fc.bigInt({ min: -(2n ** 40n), max: 2n ** 40n }), { nil: null }) },
  // Not canonical columns, other types a producer may send: read through the same paths or get().
  { name: 'os', type: () => new Dictionary(new Utf8(), new Int8()), value: fc.option(word, { nil: null }) },
  { name: 'small', type: () => new Int16(), value: fc.option(fc.integer({ min: -32768, max: 32767 }), { nil: null }) },
  { name: 'single', type: () => new Float32(), value: fc.option(fc.float({ noNaN: true }), { nil: null }) },
  { name: 'seconds', type: () => new TimestampSecond(), value: fc.option(fc.integer({ min: 0, max: 2_000_000_000 }).map((s) => s * 1000), { nil: null }) },
];

/** A table of 1–3 batches over a random subset of COLUMNS, as IPC stream bytes. */
const message = fc
  .record({
    columns: fc.subarray(COLUMNS, { minLength: 1 }),
    sizes: fc.array(fc.integer({ min: 0, max: 30 }), { minLength: 1, maxLength: 3 }),
    seed: fc.integer(),
  })
  .chain(({ columns, sizes }) => {
    const rows = sizes.reduce((n, k) => n + k, 0);
    return fc.tuple(fc.constant(columns), fc.constant(sizes), fc.tuple(...columns.map((c) => fc.array(c.value, { minLength: rows, maxLength: rows }))));
  })
  .map(([columns, sizes, values]) => {
    const whole = makeTable(Object.fromEntries(columns.map((c, k) => [c.name, vectorFromArray(values[k] as unknown[], c.type())])) as never) as unknown as Table;
    const one = whole.batches[0] ?? new RecordBatch(whole.schema);
    let at = 0;
    const parts = sizes.map((n) => one.slice(at, (at += n)));
    return tableToIPC(new Table(parts), 'stream');
  });

/** Every value of every column, as the path reads them (get(i)), JSON-safe. */
function cells(t: Table): unknown[][] {
  return t.schema.fields.map((f) => {
    const v = t.getChild(f.name)!;
    const out: unknown[] = [];
    for (let i = 0; i < t.numRows; i++) {
      let x: unknown;
      try {
        x = v.get(i);
      } catch (err) {
        x = `throws ${(err as Error).message}`;
      }
      out.push(typeof x === 'bigint' ? `${x}n` : x instanceof Date ? x.getTime() : x);
    }
    return [f.name, String(f.type), out];
  });
}

function outcome(read: (b: Uint8Array) => Table, bytes: Uint8Array): unknown {
  try {
    const t = read(bytes);
    return { rows: t.numRows, cells: cells(t) };
  } catch {
    return 'refused';
  }
}

describe('Arrow WS: the lean IPC reader reads client messages as Arrow JS does', () => {
  it('same rows, columns, types and values as tableFromIPC', () => {
    fc.assert(
      fc.property(message, (bytes) => {
        expect(outcome(readTable, bytes)).toEqual(outcome(tableFromIPC, bytes));
      }),
      { numRuns: 150 },
    );
  });

  it('CellReader reads every cell as Vector.get does (values, nulls, what throws), in row order over the batches', () => {
    fc.assert(
      fc.property(message, (bytes) => {
        const t = readTable(bytes);
        for (const f of t.schema.fields) {
          const v = t.getChild(f.name)!;
          const r = new CellReader(v);
          for (let i = 0; i < t.numRows; i++) {
            const cell = (read: () => unknown): unknown => {
              try {
                return { value: read() };
              } catch (err) {
                return { threw: (err as Error).message };
              }
            };
            expect(cell(() => r.read(i))).toEqual(cell(() => v.get(i)));
          }
        }
      }),
      { numRuns: 150 },
    );
  });

  it('CellReader refuses a millisecond timestamp beyond 2^53 as get() does, and reads its neighbours', () => {
    const values = BigInt64Array.from([1_700_000_000_000n, 2n ** 60n, -(2n ** 60n), 0n]);
    const v = new Vector([makeData({ type: new TimestampMillisecond(), length: 4, nullCount: 0, data: values })]);
    const r = new CellReader(v);
    expect(r.read(0)).toBe(1_700_000_000_000);
    expect(() => v.get(1)).toThrow(TypeError);
    expect(() => r.read(1)).toThrow(TypeError);
    expect(() => r.read(2)).toThrow(TypeError);
    expect(r.read(3)).toBe(0);
  });

  // A corrupted header can leave buffers that both readers take differently (Arrow JS refuses an
  // unaligned one, the lean reader copies it; a validity buffer cut to nothing reads as all null or
  // all valid): ipc-guard keeps every buffer inside the message, so either reading is of bytes the
  // producer sent. What must hold is that the lean reader refuses or reads, never worse.
  it('corrupted messages that ipc-guard passes: the lean reader refuses with an error or reads every cell, with Arrow JS\'s rows and schema when both read', () => {
    let compared = 0;
    fc.assert(
      fc.property(message, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 4 }), (bytes, flips) => {
        const bad = Uint8Array.from(bytes);
        for (const [at, x] of flips) bad[at % bad.length]! ^= x;
        if (!checkIpcStream(bad, { maxRows: 10_000 }).ok) return;
        compared++;
        const lean = outcome(readTable, bad);
        const arrow = outcome(tableFromIPC, bad);
        if (lean === 'refused' || arrow === 'refused') return;
        // A flip in the schema can give two fields one name (all '', seen in CI): Arrow JS's Table
        // then gives every field of that name the type of the last one, where the lean reader keeps
        // each field's own. Nothing to compare there (no canonical column has a repeated name).
        const names = readTable(bad).schema.fields.map((f) => f.name);
        if (new Set(names).size !== names.length) return;
        const shape = (o: unknown): unknown => {
          const { rows, cells } = o as { rows: number; cells: unknown[][] };
          return [rows, cells.map((c) => [c[0], c[1], (c[2] as unknown[]).length])];
        };
        expect(shape(lean)).toEqual(shape(arrow));
      }),
      { numRuns: 400 },
    );
    expect(compared).toBeGreaterThan(20);
  });
});
