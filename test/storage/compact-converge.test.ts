/**
 * Compaction converges under a trickle: a partition that keeps receiving small files (late
 * events, the current hour) is not rewritten whole on every run. A file is rewritten only with at
 * least half its size of new data (storage/compact.ts `convergent`), so over n arrivals a row is
 * rewritten O(log n) times and the partition holds O(log n) files — where merging every small
 * file each time rewrote O(n²) rows (issue: one silver hour rewritten ten times). An operator's
 * `sluice compact` of the closed partition then merges what that rule left (`everySmallFile`).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { TABLES } from '../../common/lake-layout.js';
import { writeCommitRecord } from '../../storage/commit-record.js';
import { compactPartition } from '../../storage/compact.js';
import { LocalObjectStore } from '../../storage/local-store.js';
import { encodeParquet } from '../../storage/parquet.js';
import { openLakeReader } from '../helpers/lake.js';
import { silverRows } from './silver-rows.js';

const root = mkdtempSync(join(tmpdir(), 'sluice-converge-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const PARTITION = 'year=2026/month=05/day=10/hour=00';
const ARRIVALS = 40;
const ROWS = 50;

describe('compaction under a trickle', () => {
  it('rewrites each row O(log n) times and keeps O(log n) files, every row exactly once', async () => {
    const store = new LocalObjectStore(join(root, 'lake'));
    let rewritten = 0;
    let files = 0;
    for (let k = 0; k < ARRIVALS; k++) {
      const body = encodeParquet(silverRows({ rows: ROWS, seed: 100 + k, batchRows: ROWS, spanMs: 3_000_000 }));
      // As a flush publishes it: the file, then its commit record (compaction reads only committed files).
      const key = `${TABLES.events.prefix}/${PARTITION}/part-s0-${k}-${k}.parquet`;
      await store.put(key, body);
      await writeCommitRecord(store, { id: `s0-${k}-${k}`, time: new Date(Date.UTC(2026, 4, 10, 1) + k * 1000).toISOString(), kind: 'flush', shard: 0, added: [{ key, rows: ROWS, bytes: body.byteLength }], removed: [] });
      const r = await compactPartition(store, TABLES.events.prefix, PARTITION, { now: Date.UTC(2026, 4, 10, 2) + k });
      rewritten += r.rows;
      files = (await store.list(`${TABLES.events.prefix}/${PARTITION}/`)).filter((o) => o.key.endsWith('.parquet')).length;
      expect(files, `after arrival ${k}`).toBeLessThanOrEqual(Math.ceil(Math.log2(k + 2)) + 1);
    }
    const total = ARRIVALS * ROWS;
    // Merging every small file on every run would have rewritten Σ k·ROWS = 40 950 rows here.
    expect(rewritten).toBeLessThanOrEqual(total * (Math.ceil(Math.log(ARRIVALS) / Math.log(1.5)) + 1));
    expect(rewritten).toBeLessThan(40_950 / 2);
    expect(rewritten).toBeGreaterThan(0);
    const lake = await openLakeReader(join(root, 'lake'));
    try {
      const [row] = await lake.rows<{ n: bigint; ids: bigint }>(`SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM ${lake.rel('events')}`);
      expect([Number(row!.n), Number(row!.ids)]).toEqual([total, total]);
    } finally {
      lake.close();
    }

    // An operator's run over the closed partition (`sluice compact`) merges what the trickle rule left: one file.
    expect(files).toBeGreaterThan(1);
    const once = await compactPartition(store, TABLES.events.prefix, PARTITION, { now: Date.UTC(2026, 4, 11), everySmallFile: true });
    expect(once.inputs).toBe(files);
    expect((await store.list(`${TABLES.events.prefix}/${PARTITION}/`)).filter((o) => o.key.endsWith('.parquet'))).toHaveLength(1);
    const after = await openLakeReader(join(root, 'lake'));
    try {
      const [row] = await after.rows<{ n: bigint; ids: bigint }>(`SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM ${after.rel('events')}`);
      expect([Number(row!.n), Number(row!.ids)]).toEqual([total, total]);
    } finally {
      after.close();
    }
  });
});
