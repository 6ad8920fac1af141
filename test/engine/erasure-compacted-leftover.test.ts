/**
 * An erasure that finds a compaction interrupted between its publish and its deletes (a crash:
 * the merged file and its inputs are both in the partition until the next compaction run finishes
 * it) subtracts the user's part of gold once, not once per copy of their rows. On the real server
 * (inline engine): the user's silver rows sit in three files, merged into a fourth by a compaction
 * stopped after its publish; the erasure rewrites all four, and gold then equals its recomputation
 * from silver — where counting both copies took twice the user's part off the cells they share.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { composeServeConfig } from '../../cli/config.js';
import { startSluice } from '../../cli/serve.js';
import { partitionOf, TABLES } from '../../common/lake-layout.js';
import { goldMetricsSql } from '../../engine/gold-sql.js';
import { compactPartition, finishCompactions } from '../../storage/compact.js';
import { LocalObjectStore } from '../../storage/local-store.js';
import { checkpointRound, eraseAndWait, filesHolding, postJson, segmentEvents } from '../helpers/erasure.js';
import { openLakeReader, untilDailyWindowMerged } from '../helpers/lake.js';

const ev = segmentEvents('cl-');
const A = 'erase-leftover-user-W4m';
const ADMIN = 'admin-leftover-key';
const MIN = 60_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;
const D = Math.floor(Date.now() / DAY) * DAY - 2 * DAY;
const H = D + 3 * HOUR;
const others = Array.from({ length: 6 }, (_, i) => `leftover-other-${i}`);

const root = mkdtempSync(join(tmpdir(), 'sluice-erase-leftover-'));
afterAll(() => {
  if (!process.env.KEEP_LAKE) rmSync(root, { recursive: true, force: true });
});

const plain = (r: Record<string, unknown>): string =>
  JSON.stringify(Object.fromEntries(Object.entries(r).filter(([k]) => !['year', 'month', 'day', 'hour'].includes(k)).map(([k, v]) => [k, typeof v === 'bigint' ? Number(v) : v instanceof Date ? v.getTime() : v])));

describe('erasure beside an interrupted compaction', () => {
  it("takes the user's part off gold once when a merged file and its inputs are both present", async () => {
    const d = { data: join(root, 'data'), lake: join(root, 'lake') };
    const s = await startSluice(
      composeServeConfig({ port: 0, data: d.data, lake: d.lake, shards: 1, workers: 1, flushInterval: '1h', allowedLateness: '10m', sessionGap: '30m', engineMode: 'inline', compression: 'none', writeKeys: ['wk-leftover'], adminKeys: [ADMIN] }, {}),
      pino({ level: 'warn' }),
    );
    let state = '';
    try {
      // Hour H of day D, three flushes: A and the others in the same cells, A's rows in three silver files.
      for (let f = 0; f < 3; f++) {
        const batch = [A, ...others].map((u, i) => ev(u, H + (f * 12 + i) * MIN));
        expect((await postJson(s.url, '/v1/batch', { batch }, 'wk-leftover')).status).toBe(200);
        await checkpointRound(s);
      }
      expect((await postJson(s.url, '/v1/batch', { batch: [...others, A].map((u) => ev(u, Date.now() - MIN)) }, 'wk-leftover')).status).toBe(200);
      expect(await untilDailyWindowMerged(d.lake, D, () => checkpointRound(s)), 'daily window D merged').toBe(true);

      // A compaction of hour H stopped after its publish, as a crash there leaves it.
      const store = new LocalObjectStore(d.lake);
      const dir = partitionOf(H, 'hour');
      const merged = await compactPartition(store, TABLES.events.prefix, dir, { stopAfter: 'publish', everySmallFile: true });
      expect(merged.outputs).toBe(1);
      const files = (await store.list(`${TABLES.events.prefix}/${dir}/`)).filter((o) => o.key.endsWith('.parquet'));
      expect(files.length, 'three inputs and the merged file').toBe(4);

      state = (await eraseAndWait(s.url, ADMIN, [A], 'leftover test', () => checkpointRound(s))).state;
    } finally {
      await s.close();
    }
    expect(state).toBe('done');
    expect(filesHolding([d.lake], [A])).toEqual([]);

    // The next compaction run finishes the interrupted one; then every row is in the lake once.
    await finishCompactions(new LocalObjectStore(d.lake), { graceMs: 0 });
    const lake = await openLakeReader(d.lake);
    try {
      const [n] = await lake.rows<{ n: bigint; ids: bigint }>(`SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM ${lake.rel('events')} WHERE epoch_ms(event_time) < ${D + DAY}`);
      expect([Number(n!.n), Number(n!.ids)]).toEqual([3 * others.length, 3 * others.length]);
      for (const [g, start, end] of [['hourly', H, H + HOUR], ['daily', D, D + DAY]] as const) {
        const table = g === 'hourly' ? 'hourly_metrics' : 'daily_metrics';
        const gold = await lake.rows<Record<string, unknown>>(`SELECT * EXCLUDE (year, month, day${g === 'hourly' ? ', hour' : ''}) FROM ${lake.rel(table)} WHERE epoch_ms(window_start) = ${start}`);
        const recomputed = await lake.rows<Record<string, unknown>>(goldMetricsSql(g, lake.rel('events'), start, end));
        expect(gold.length, g).toBeGreaterThan(0);
        expect(gold.map(plain).sort(), g).toEqual(recomputed.map(plain).sort());
      }
    } finally {
      lake.close();
    }
  });
});
