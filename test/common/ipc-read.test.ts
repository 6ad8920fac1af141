import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Dictionary, Field, Float64, Int32, List, RecordBatch, Schema, Struct, Table, Utf8, makeData, tableFromIPC, tableToIPC, vectorFromArray } from 'apache-arrow';
import { ipcRowCount, readFlatIpc } from '../../common/ipc-read.js';
import { IngestBatchBuilder } from '../../ingest/batch-builder.js';
import type { CanonicalEvent } from '../../ingest/normalize.js';

const rowsOf = (n: number, seed: number): CanonicalEvent[] =>
  Array.from({ length: n }, (_, i) => ({
    event_id: `e${seed}-${i}`,
    user_id: `user-${(i * 7) % 5}`,
    anonymous_id: i % 3 === 0 ? null : `anon-${i}`,
    event_type: ['screen_view', 'Product Viewed', 'Größe ändern'][i % 3]!,
    event_time: 1_764_000_000_000 + i * 1000,
    received_at: 1_764_000_100_000 + i,
    device_type: i % 4 === 0 ? null : 'ios',
    os: 'iOS',
    app_version: i % 2 ? '4.1.0' : null,
    country: 'DE',
    source: 'http',
    properties: i % 5 === 0 ? null : `{"i":${i},"s":"é😀"}`,
    raw: `{"messageId":"e${seed}-${i}"}`,
  }));

/** Every row as JSON (BigInts as strings) plus the schema's names, types and nullability. */
const dump = (t: { schema: Schema; batches: RecordBatch[] }): unknown => ({
  fields: t.schema.fields.map((f) => `${f.name}: ${String(f.type)} ${f.nullable}`),
  batches: t.batches.map((b) => b.numRows),
  rows: JSON.parse(JSON.stringify(t.batches.flatMap((b) => b.toArray().map((r) => r.toJSON())), (_, v: unknown) => (typeof v === 'bigint' ? String(v) : v))),
});

describe('readFlatIpc', () => {
  it('decodes the log records ingest writes exactly as tableFromIPC does (nulls, dictionaries, timestamps, UTF-8), one schema object across records', () => {
    const b = new IngestBatchBuilder(4);
    const schemas = new Set<Schema>();
    for (const [n, seed] of [[1, 1], [37, 2], [300, 3]] as const) {
      for (const row of rowsOf(n, seed)) b.push(row);
      const bytes = b.toIPC();
      b.reset();
      const got = readFlatIpc(bytes);
      expect(got, `${n} rows`).toBeDefined();
      expect(dump(got!)).toEqual(dump(tableFromIPC(bytes)));
      schemas.add(got!.schema);
    }
    expect(schemas.size).toBe(1);
  });

  it('decodes Arrow JS streams of flat types, with several batches', () => {
    const schema = new Schema([new Field('s', new Utf8(), true), new Field('x', new Float64(), false), new Field('i', new Int32(), true)]);
    const batch = (k: number): RecordBatch =>
      new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: 3, nullCount: 0, children: [vectorFromArray(['a', null, `c${k}`], new Utf8()).data[0]!, vectorFromArray([1.5, k, 3], new Float64()).data[0]!, vectorFromArray([null, 2, k], new Int32()).data[0]!] }));
    const bytes = tableToIPC(new Table([batch(1), batch(2)]), 'stream');
    const got = readFlatIpc(bytes);
    expect(got).toBeDefined();
    expect(dump(got!)).toEqual(dump(tableFromIPC(bytes)));
  });

  it('leaves what it does not handle to the caller: nested types, truncated or foreign bytes', () => {
    const nested = new Schema([new Field('l', new List(new Field('item', new Int32(), true)), true)]);
    const list = vectorFromArray([[1, 2], [3]], nested.fields[0]!.type);
    const nestedBytes = tableToIPC(new Table([new RecordBatch(nested, makeData({ type: new Struct(nested.fields), length: 2, nullCount: 0, children: [list.data[0]!] }))]), 'stream');
    expect(readFlatIpc(nestedBytes)).toBeUndefined();
    const b = new IngestBatchBuilder(4);
    for (const row of rowsOf(5, 9)) b.push(row);
    const bytes = b.toIPC();
    expect(readFlatIpc(bytes.subarray(0, bytes.byteLength - 100))).toBeUndefined();
    expect(readFlatIpc(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9]))).toBeUndefined();
    expect(readFlatIpc(new Uint8Array(0))).toBeUndefined();
  });

  it('gives batches that behave as Arrow JS\'s own: misaligned bytes, slices, selects, an IPC round trip', () => {
    const b = new IngestBatchBuilder(64);
    for (const row of rowsOf(23, 4)) b.push(row);
    const bytes = b.toIPC();
    // The same stream at an odd byte offset: every buffer is misaligned, so each column goes through makeData's copy.
    const shifted = new Uint8Array(bytes.byteLength + 3).subarray(3);
    shifted.set(bytes);
    const got = readFlatIpc(shifted)!;
    expect(dump(got)).toEqual(dump(tableFromIPC(bytes)));
    const batch = readFlatIpc(bytes)!.batches[0]!;
    const reference = tableFromIPC(bytes).batches[0]!;
    expect(batch).toBeInstanceOf(RecordBatch);
    expect(batch.numRows).toBe(23);
    expect(batch.schema.fields.map((f) => `${f.name}: ${String(f.type)} ${f.nullable}`)).toEqual(reference.schema.fields.map((f) => `${f.name}: ${String(f.type)} ${f.nullable}`));
    expect(batch.slice(5, 9).toArray().map((r) => r.toJSON())).toEqual(reference.slice(5, 9).toArray().map((r) => r.toJSON()));
    expect(batch.getChild('event_type')!.toArray()).toEqual(reference.getChild('event_type')!.toArray());
    expect(batch.select(['user_id', 'country']).toArray().map((r) => r.toJSON())).toEqual(reference.select(['user_id', 'country']).toArray().map((r) => r.toJSON()));
    expect(dump(tableFromIPC(tableToIPC(new Table([batch]), 'stream')))).toEqual(dump(tableFromIPC(bytes)));
  });

  it('decodes any record ingest can write exactly as tableFromIPC does (property)', () => {
    const text = fc.string({ unit: 'grapheme', maxLength: 12 });
    const word = fc.constantFrom('ios', 'android', '', 'Größe', '😀', 'web');
    const time = fc.integer({ min: 0, max: 2 ** 45 });
    const rowArb = fc.record({
      event_id: text,
      user_id: text,
      anonymous_id: fc.option(text, { nil: null }),
      event_type: word,
      event_time: time,
      received_at: time,
      device_type: fc.option(word, { nil: null }),
      os: fc.option(word, { nil: null }),
      app_version: fc.option(word, { nil: null }),
      country: fc.option(word, { nil: null }),
      source: word,
      properties: fc.option(text, { nil: null }),
      raw: fc.option(text, { nil: null }),
    });
    const b = new IngestBatchBuilder(400);
    fc.assert(
      fc.property(fc.array(rowArb, { minLength: 1, maxLength: 300, size: 'large' }), (rows) => {
        b.reset();
        for (const row of rows) b.push(row);
        const bytes = b.toIPC();
        const got = readFlatIpc(bytes);
        expect(got).toBeDefined();
        expect(dump(got!)).toEqual(dump(tableFromIPC(bytes)));
      }),
      { numRuns: 60 },
    );
  });
});

describe('ipcRowCount', () => {
  it('sums the record batches\' rows from their headers: ingest records, Arrow JS streams with dictionaries and several batches, empty batches', () => {
    const b = new IngestBatchBuilder(4);
    for (const n of [1, 37, 300]) {
      for (const row of rowsOf(n, n)) b.push(row);
      const bytes = b.toIPC();
      b.reset();
      expect(ipcRowCount(bytes)).toBe(n);
    }
    fc.assert(
      fc.property(fc.array(fc.array(fc.option(fc.constantFrom('ios', 'android', 'web')), { maxLength: 40 }), { minLength: 1, maxLength: 6 }), (batches) => {
        const type = new Dictionary(new Utf8(), new Int32());
        const [first, ...rest] = batches.map((values) => vectorFromArray(values, type));
        const table = new Table({ d: first!.concat(...rest) });
        const bytes = tableToIPC(table, 'stream');
        expect(ipcRowCount(bytes)).toBe(tableFromIPC(bytes).numRows);
      }),
      { numRuns: 50 },
    );
  });

  it('says undefined for broken framing, never a wrong count', () => {
    const b = new IngestBatchBuilder(4);
    for (const row of rowsOf(20, 9)) b.push(row);
    const bytes = b.toIPC();
    expect(ipcRowCount(bytes.subarray(0, bytes.byteLength - 100))).toBeUndefined(); // the batch's body cut short
    expect(ipcRowCount(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0x10, 0, 0, 0, 1, 2]))).toBeUndefined();
    expect(ipcRowCount(new Uint8Array(0))).toBe(0);
  });
});
