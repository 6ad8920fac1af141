/**
 * Reconciliation recomputes a gold window from the silver files present. While a compaction's
 * merged file and its inputs are both present (between its publish and the delete of its inputs,
 * or until `finishCompactions` after a crash there) the window must still count each row once.
 * The expected counts come from the traffic this test sent, not from the lake.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { composeServeConfig } from '../../cli/config.js';
import { startSluice, type RunningSluice } from '../../cli/serve.js';
import { reconcileLate } from '../../engine/reconcile.js';
import { TABLES } from '../../common/lake-layout.js';
import { compactPartition, finishCompactions, withoutCompactedInputs } from '../../storage/compact.js';
import { openObjectStore } from '../../storage/open-store.js';
import { openLakeReader } from '../helpers/lake.js';

const T0 = Date.UTC(2026, 2, 1, 10, 0, 0);
const MIN = 60_000;
const HOUR_10 = 'year=2026/month=03/day=01/hour=10';
const USERS = ['ana', 'bo', 'cy'];

const root = mkdtempSync(join(tmpdir(), 'sluice-reconcile-compact-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

async function post(s: RunningSluice, batch: Array<Record<string, unknown>>): Promise<void> {
  const res = await fetch(`${s.url}/v1/batch`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Basic ${Buffer.from(`${s.writeKey}:`).toString('base64')}` },
    body: JSON.stringify({ batch }),
  });
  expect(res.status).toBe(200);
  expect(((await res.json()) as { accepted: number }).accepted).toBe(batch.length);
}

const track = (id: string, user: string, t: number): Record<string, unknown> => ({ type: 'track', event: 'Product Clicked', messageId: id, userId: user, timestamp: new Date(t).toISOString() });

describe('reconciliation beside a compaction', () => {
  it('counts each silver row once while a merged file and its inputs are both present', async () => {
    const sluice = await startSluice(
      composeServeConfig({ port: 0, data: join(root, 'data'), lake: join(root, 'lake'), shards: 2, workers: 1, flushInterval: '100ms', allowedLateness: '10m', writeKeys: ['k'] }, {}),
      pino({ level: 'warn' }),
    );
    // Hour 10 in three requests a flush apart (several silver files per shard), then hour 12 moves
    // the watermark on, then one event of 10:30 arrives too late.
    let inHour10 = 0;
    for (let part = 0; part < 3; part++) {
      const batch = USERS.flatMap((u, i) => [0, 1, 2, 3].map((k) => track(`h10-${part}-${u}-${k}`, u, T0 + (part * 15 + k * 3 + i) * MIN)));
      inHour10 += batch.length;
      await post(sluice, batch);
      await new Promise((r) => setTimeout(r, 400));
    }
    await post(sluice, USERS.map((u, i) => track(`h12-${u}`, u, T0 + 2 * 60 * MIN + i * 20 * MIN)));
    await new Promise((r) => setTimeout(r, 400));
    await post(sluice, [track('late-ana', 'ana', T0 + 30 * MIN)]);
    inHour10 += 1;
    await sluice.close();

    const store = await openObjectStore(join(root, 'lake'));
    try {
      const dir = `${TABLES.events.prefix}/${HOUR_10}/`;
      const inputs = (await store.list(dir)).map((o) => o.key);
      expect(inputs.length).toBeGreaterThan(2);
      // A compaction stopped after publishing its merged file: merged file and inputs are all present.
      const merged = await compactPartition(store, TABLES.events.prefix, HOUR_10, { stopAfter: 'publish', now: Date.now() });
      expect(merged.outputs).toBeGreaterThan(0);
      const present = (await store.list(dir)).map((o) => o.key);
      expect(present.length).toBe(inputs.length + merged.outputs);
      expect((await withoutCompactedInputs(store, present)).sort()).toEqual(present.filter((k) => !inputs.includes(k)).sort());

      // A new late file in hour 10 makes the next run rewrite that hour from silver.
      const late = (await store.list(`${TABLES.late_events.prefix}/`)).filter((o) => o.key.endsWith('.parquet')).map((o) => o.key);
      expect(late.length).toBeGreaterThan(0);
      await store.put(late[0]!.replace(/part-[^/]+$/, 'part-s9-0-0.parquet'), (await store.get(late[0]!))!);
      expect((await reconcileLate(store)).hourlyWindows).toEqual([T0]);

      const lake = await openLakeReader(join(root, 'lake'));
      try {
        const [all] = await lake.rows<{ events: bigint; active_users: bigint }>(
          `SELECT events, active_users FROM ${lake.rel('hourly_metrics')}
           WHERE epoch_ms(window_start) = ${T0} AND device_type = 'ALL' AND app_version = 'ALL' AND country = 'ALL'`,
        );
        expect(Number(all!.events)).toBe(inHour10);
        expect(Number(all!.active_users)).toBe(USERS.length);
      } finally {
        lake.close();
      }
      // Finishing the compaction deletes the inputs; the lake's own view agrees.
      await finishCompactions(store, { graceMs: 0 });
      expect((await store.list(dir)).length).toBe(merged.outputs);
    } finally {
      await store.close();
    }
  }, 60_000);
});
