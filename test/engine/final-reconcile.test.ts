/**
 * After a graceful stop, gold holds every committed event — the too-late ones too. Too-late events
 * arrive right before `close()`, while checkpoint rounds run back to back (flush every 50 ms), so
 * a round is usually in flight when the stop begins: the periodic reconciliation (once a minute
 * here) cannot be what folds them in; the stop must, after the last shard commit. (It rode on the
 * final checkpoint round, which a round in flight could preempt; found by the S3-outage test of
 * test/cli/serve-s3.test.ts: gold short of silver by the late files the last round committed.)
 * Checked with DuckDB over the lake: gold's hourly totals against silver's, hour by hour.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { shardOfUser } from '../../common/hash.js';
import { Coordinator } from '../../engine/coordinator.js';
import { validateEngineOptions } from '../../engine/options.js';
import { IngestBatchBuilder } from '../../ingest/batch-builder.js';
import { openObjectStore } from '../../storage/open-store.js';
import { ingestRow as row } from '../helpers/batches.js';
import { eventually } from '../helpers/eventually.js';
import { openLakeReader } from '../helpers/lake.js';

const T0 = Date.UTC(2026, 2, 1, 10, 0, 0);
const MINUTE = 60_000;

const root = mkdtempSync(join(tmpdir(), 'sluice-final-reconcile-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('a graceful stop', () => {
  it.each([1, 2, 3, 4, 5, 6])('folds too-late events that arrive just before it into gold (run %i)', async (run) => {
    const lake = join(root, `lake-${run}`);
    const options = validateEngineOptions({ dataDir: join(root, `data-${run}`), lake, shards: 2, workers: 1, flushIntervalMs: 50, allowedLatenessMs: MINUTE, reconcileIntervalMs: 60_000, compactAfterMs: 0 });
    const c = await Coordinator.start(options, pino({ level: process.env.T_LOG ?? 'silent' }));
    const users = (shard: number): string[] => Array.from({ length: 100 }, (_, i) => `user-${i}`).filter((u) => shardOfUser(u, 2) === shard).slice(0, 4);
    let n = 0;
    const append = async (shard: number, times: number[]): Promise<void> => {
      const b = new IngestBatchBuilder(times.length);
      for (const t of times) b.push(row(`r${run}-e${n++}`, users(shard)[n % 4]!, t));
      const payload = b.toIPC();
      const offset = await c.shardLogs[shard]!.append(payload);
      c.submit(shard, offset, payload, b.length);
    };
    const store = await openObjectStore(lake);
    let closed = false;
    try {
      // 10:00–12:25 on both shards: hours 10 and 11 close and are merged into gold.
      const day = Array.from({ length: 30 }, (_, i) => T0 + i * 5 * MINUTE);
      await append(0, day);
      await append(1, day);
      await c.drain();
      expect(await eventually(async () => (await store.list('gold/hourly_metrics/')).some((o) => o.key.includes('/hour=11/')), 20_000)).toBe(true);
      // Then 10:30 again, 17 events: too late for their window, which gold already holds. Stop at once.
      await append(0, Array.from({ length: 17 }, () => T0 + 30 * MINUTE));
      await c.close();
      closed = true;
    } finally {
      if (!closed) await c.close().catch(() => undefined);
      await store.close();
    }
    const r = await openLakeReader(lake);
    try {
      const [late] = await r.rows<{ n: bigint }>(`SELECT count(*) AS n FROM ${r.rel('events')} WHERE session_id IS NULL`);
      expect(Number(late!.n), 'the 17 too-late events are in silver (without a session)').toBe(17);
      const hours = await r.rows<{ w: unknown; g: bigint | null; s: bigint }>(`
        WITH s AS (SELECT date_trunc('hour', event_time) AS w, count(*) AS s FROM ${r.rel('events')} GROUP BY 1),
             g AS (SELECT window_start AS w, sum(events) AS g FROM ${r.rel('hourly_metrics')} WHERE device_type = 'ALL' AND app_version = 'ALL' AND country = 'ALL' GROUP BY 1)
        SELECT s.w, g, s FROM s LEFT JOIN g USING (w) ORDER BY 1`);
      // Hours 10 and 11 are complete (the watermark passed them); 12 is still open.
      const complete = hours.filter((h) => new Date(String(h.w)).getTime() < T0 + 2 * 3_600_000);
      expect(complete).toHaveLength(2);
      expect(complete.filter((h) => h.g !== h.s).map((h) => `${String(h.w)}: gold ${h.g}, silver ${h.s}`)).toEqual([]);
    } finally {
      r.close();
    }
  }, 60_000);
});
