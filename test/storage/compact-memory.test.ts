/**
 * Compaction's memory is set by configuration (the row group size), not by how big the files it
 * merges have grown: it decodes its inputs one row group at a time. parquet-wasm's heap grows to
 * its biggest call and never shrinks, so decoding each input whole made the engine's heap grow
 * with the biggest merged file of the current hour (issue 14: engine RSS rising all through a
 * steady soak). Measured here on parquet-wasm's own memory, which this test file's module
 * instance has to itself.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Table, tableToIPC } from 'apache-arrow';
import * as pq from 'parquet-wasm/node';
import { afterAll, describe, expect, it } from 'vitest';
import { TABLES } from '../../common/lake-layout.js';
import { writeCommitRecord } from '../../storage/commit-record.js';
import { compactPartition } from '../../storage/compact.js';
import { LocalObjectStore } from '../../storage/local-store.js';
import { encodeParquetAsync } from '../../storage/parquet.js';
import { openLakeReader } from '../helpers/lake.js';
import { silverRows } from './silver-rows.js';

const root = mkdtempSync(join(tmpdir(), 'sluice-compact-memory-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const PARTITION = 'year=2026/month=05/day=10/hour=00';
const FILES = 3;
const ROWS = 150_000;
/** Row groups (and streaming-writer calls) of this many rows: the configured bound. */
const GROUP = 10_000;

describe('compaction memory', () => {
  it('merges big multi-row-group files with parquet-wasm holding about one row group, every row exactly once', async () => {
    const store = new LocalObjectStore(join(root, 'lake'));
    let arrowBytesPerFile = 0;
    for (let k = 0; k < FILES; k++) {
      const batches = silverRows({ rows: ROWS, seed: 500 + k, batchRows: GROUP });
      arrowBytesPerFile = Math.max(arrowBytesPerFile, tableToIPC(new Table(batches)).byteLength);
      // Written GROUP rows at a time, so writing the inputs grows parquet-wasm's heap only to a row group's size.
      const body = await encodeParquetAsync(batches, { rowGroupRows: GROUP, maxRowsPerCall: GROUP });
      const key = `${TABLES.events.prefix}/${PARTITION}/part-s0-${k}-${k}.parquet`;
      await store.put(key, body);
      await writeCommitRecord(store, { id: `s0-${k}-${k}`, time: new Date(Date.UTC(2026, 4, 10, 1) + k * 1000).toISOString(), kind: 'flush', shard: 0, added: [{ key, rows: ROWS, bytes: body.byteLength }], removed: [] });
    }
    const before = pq.wasmMemory().buffer.byteLength;
    const r = await compactPartition(store, TABLES.events.prefix, PARTITION, { now: Date.UTC(2026, 4, 10, 2), parquet: { rowGroupRows: GROUP } });
    const grew = pq.wasmMemory().buffer.byteLength - before;
    expect(r).toEqual({ inputs: FILES, outputs: 1, rows: FILES * ROWS });
    // Decoding one input whole needs about its Arrow size (here ~15 row groups' worth) in the wasm heap at once.
    expect(grew, `parquet-wasm heap grew ${grew} bytes; one input is ${arrowBytesPerFile} Arrow bytes`).toBeLessThan(arrowBytesPerFile / 3);
    const lake = await openLakeReader(join(root, 'lake'));
    try {
      const [row] = await lake.rows<{ n: bigint; ids: bigint }>(`SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM ${lake.rel('events')}`);
      expect([Number(row!.n), Number(row!.ids)]).toEqual([FILES * ROWS, FILES * ROWS]);
    } finally {
      lake.close();
    }
  });

  it('sizes merged row groups by maxBytesPerCall, not rows alone: the next merge of the partition decodes one at a time', async () => {
    const store = new LocalObjectStore(join(root, 'lake-bytes'));
    const partition = 'year=2026/month=05/day=10/hour=01';
    const rows = 40_000;
    for (let k = 0; k < FILES; k++) {
      const body = await encodeParquetAsync(silverRows({ rows, seed: 700 + k, batchRows: GROUP }), { rowGroupRows: GROUP, maxRowsPerCall: GROUP });
      const key = `${TABLES.events.prefix}/${partition}/part-s0-${k}-${k}.parquet`;
      await store.put(key, body);
      await writeCommitRecord(store, { id: `s0-${k}-${k}-b`, time: new Date(Date.UTC(2026, 4, 10, 2) + k * 1000).toISOString(), kind: 'flush', shard: 0, added: [{ key, rows, bytes: body.byteLength }], removed: [] });
    }
    const bound = 1024 * 1024;
    // The default rowGroupRows (131,072) would put all 120,000 rows in one row group of tens of MiB.
    const r = await compactPartition(store, TABLES.events.prefix, partition, { now: Date.UTC(2026, 4, 10, 3), parquet: { maxBytesPerCall: bound } });
    expect(r).toEqual({ inputs: FILES, outputs: 1, rows: FILES * rows });
    const [merged] = (await store.list(`${TABLES.events.prefix}/${partition}/`)).filter((o) => o.key.endsWith('.parquet'));
    const file = await pq.ParquetFile.fromFile(new Blob([(await store.get(merged!.key))!]));
    try {
      const meta = file.metadata();
      const groups = Array.from({ length: meta.numRowGroups() }, (_, i) => meta.rowGroup(i));
      expect(groups.reduce((n, g) => n + g.numRows(), 0)).toBe(FILES * rows);
      expect(groups.length).toBeGreaterThan(4);
      for (const g of groups) expect(g.totalByteSize(), `row group of ${g.numRows()} rows`).toBeLessThan(1.25 * bound);
    } finally {
      file.free();
    }
  });
});
