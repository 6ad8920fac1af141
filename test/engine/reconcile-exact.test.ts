/**
 * Reconciliation recomputes gold windows from silver; each case here is a way it counted wrong.
 * Expected values are this file's own, from the traffic it sent, not from the lake.
 *
 * - While a compaction's merged file and its inputs are both present (between its publish and the
 *   delete of its inputs, or until `finishCompactions` after a crash there) the window must still
 *   count each row once.
 * - A session whose start an out-of-order event moved takes a new id; its silver rows written
 *   before keep the old one, and the alias linking them is written only when the session closes. A
 *   window reconciled while that session is still open must count it once — it counted it twice,
 *   for good: the window is not rewritten when the alias arrives.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { runQualityChecks } from '../../analytics/quality.js';
import { composeServeConfig } from '../../cli/config.js';
import { startSluice, type RunningSluice } from '../../cli/serve.js';
import { reconcileLate } from '../../engine/reconcile.js';
import { TABLES } from '../../common/lake-layout.js';
import { compactPartition, finishCompactions, withoutCompactedInputs } from '../../storage/compact.js';
import { openObjectStore } from '../../storage/open-store.js';
import { openLakeReader } from '../helpers/lake.js';

const T0 = Date.UTC(2026, 2, 1, 10, 0, 0);
const H = T0;
const MIN = 60_000;
const HOUR_10 = 'year=2026/month=03/day=01/hour=10';
const USERS = ['ana', 'bo', 'cy'];

const root = mkdtempSync(join(tmpdir(), 'sluice-reconcile-exact-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Posts one batch (all accepted), then waits a few flushes. */
async function post(s: RunningSluice, batch: Array<Record<string, unknown>>): Promise<void> {
  const res = await fetch(`${s.url}/v1/batch`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Basic ${Buffer.from(`${s.writeKey}:`).toString('base64')}` },
    body: JSON.stringify({ batch }),
  });
  expect(res.status).toBe(200);
  expect(((await res.json()) as { accepted: number }).accepted).toBe(batch.length);
  await new Promise((r) => setTimeout(r, 400));
}

let seq = 0;
const track = (user: string, t: number): Record<string, unknown> => ({ type: 'track', event: 'Product Clicked', messageId: `m-${seq++}`, userId: user, timestamp: new Date(t).toISOString() });

describe('reconciliation beside a compaction', () => {
  it('counts each silver row once while a merged file and its inputs are both present', async () => {
    const sluice = await startSluice(
      composeServeConfig({ port: 0, data: join(root, 'compact-data'), lake: join(root, 'compact-lake'), shards: 2, workers: 1, flushInterval: '100ms', allowedLateness: '10m', writeKeys: ['k'] }, {}),
      pino({ level: 'warn' }),
    );
    // Hour 10 in three requests a flush apart (several silver files per shard), then hour 12 moves
    // the watermark on, then one event of 10:30 arrives too late.
    let inHour10 = 0;
    for (let part = 0; part < 3; part++) {
      const batch = USERS.flatMap((u, i) => [0, 1, 2, 3].map((k) => track(u, T0 + (part * 15 + k * 3 + i) * MIN)));
      inHour10 += batch.length;
      await post(sluice, batch);
    }
    await post(sluice, USERS.map((u, i) => track(u, T0 + 2 * 60 * MIN + i * 20 * MIN)));
    await post(sluice, [track('ana', T0 + 30 * MIN)]);
    inHour10 += 1;
    await sluice.close();

    const store = await openObjectStore(join(root, 'compact-lake'));
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

      const lake = await openLakeReader(join(root, 'compact-lake'));
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

describe('reconciliation and sessions still open', () => {
  it('counts a session once when its rows carry the id it had before an out-of-order event moved its start', async () => {
    const sluice = await startSluice(
      composeServeConfig({ port: 0, data: join(root, 'sessions-data'), lake: join(root, 'sessions-lake'), shards: 1, workers: 1, flushInterval: '100ms', allowedLateness: '2h', sessionGap: '30m', writeKeys: ['k'] }, {}),
      pino({ level: 'warn' }),
    );
    // a: 10:50, then 10:45 (its start moves: a new id), then 11:10 — one session, open until the watermark passes 11:40.
    // b and c: one session each in hour 10.
    await post(sluice, [track('a', H + 50 * MIN), track('a', H + 45 * MIN), track('a', H + 70 * MIN), track('b', H + 10 * MIN), track('c', H + 5 * MIN)]);
    // d at 13:05: the watermark (2 h behind) passes 11:00, hour 10 is emitted; a's session stays open.
    await post(sluice, [track('d', H + 185 * MIN)]);
    // e at 10:20 is too late for hour 10: reconciliation recomputes the hour from silver.
    await post(sluice, [track('e', H + 20 * MIN)]);
    await sluice.close();

    const lake = await openLakeReader(join(root, 'sessions-lake'));
    try {
      // a's session is still open: silver holds its rows under two ids, no alias yet.
      const ids = await lake.rows<{ n: bigint }>(`SELECT count(DISTINCT session_id) AS n FROM read_parquet([${lake.files('events').map((f) => `'${f}'`).join(', ')}]) WHERE user_id = 'a'`);
      expect(Number(ids[0]!.n)).toBe(2);
      const [all] = await lake.rows<{ events: bigint; active_users: bigint; sessions: bigint }>(
        `SELECT events, active_users, sessions FROM ${lake.rel('hourly_metrics')} WHERE epoch_ms(window_start) = ${H} AND device_type = 'ALL' AND app_version = 'ALL' AND country = 'ALL'`,
      );
      // Hour 10: a (3 events… two of them in hour 10), b, c, and e's too-late event (no session).
      expect([Number(all!.events), Number(all!.active_users), Number(all!.sessions)]).toEqual([5, 4, 3]);
    } finally {
      lake.close();
    }
    // sluice quality counts sessions as the engine does: hour 10 passes, hour 11 (not emitted yet) is not missing.
    const report = await runQualityChecks({ lake: join(root, 'sessions-lake'), now: H + 4 * 3_600_000, goldDelayMs: 0 });
    const gold = report.checks.find((c) => c.name === 'gold')!;
    expect(gold.status, JSON.stringify(gold)).toBe('pass');
    expect(gold.details?.windows).toBe(1);
  }, 60_000);
});
