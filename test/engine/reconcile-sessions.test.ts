/**
 * A session whose start an out-of-order event moved takes a new id; its silver rows written before
 * keep the old one, and the alias linking them is written only when the session closes. A window
 * reconciled (recomputed from silver) while that session is still open must count it once — it
 * counted it twice, for good: the window is not rewritten again when the alias arrives.
 *
 * Expected values are this test's own: sessions by the 30-minute gap over the events it sent.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { composeServeConfig } from '../../cli/config.js';
import { startSluice, type RunningSluice } from '../../cli/serve.js';
import { openLakeReader } from '../helpers/lake.js';
import { runQualityChecks } from '../../analytics/quality.js';

const H = Date.UTC(2026, 2, 1, 10, 0, 0);
const MIN = 60_000;
const root = mkdtempSync(join(tmpdir(), 'sluice-reconcile-sessions-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let seq = 0;
const track = (user: string, t: number): Record<string, unknown> => ({ type: 'track', event: 'Product Clicked', messageId: `m-${seq++}`, userId: user, timestamp: new Date(t).toISOString() });

async function post(s: RunningSluice, batch: Array<Record<string, unknown>>): Promise<void> {
  const res = await fetch(`${s.url}/v1/batch`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Basic ${Buffer.from(`${s.writeKey}:`).toString('base64')}` },
    body: JSON.stringify({ batch }),
  });
  expect(res.status).toBe(200);
  await new Promise((r) => setTimeout(r, 400));
}

describe('reconciliation and sessions still open', () => {
  it('counts a session once when its rows carry the id it had before an out-of-order event moved its start', async () => {
    const sluice = await startSluice(
      composeServeConfig({ port: 0, data: join(root, 'data'), lake: join(root, 'lake'), shards: 1, workers: 1, flushInterval: '100ms', allowedLateness: '2h', sessionGap: '30m', writeKeys: ['k'] }, {}),
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

    const lake = await openLakeReader(join(root, 'lake'));
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
    const report = await runQualityChecks({ lake: join(root, 'lake'), now: H + 4 * 3_600_000, goldDelayMs: 0 });
    const gold = report.checks.find((c) => c.name === 'gold')!;
    expect(gold.status, JSON.stringify(gold)).toBe('pass');
    expect(gold.details?.windows).toBe(1);
  }, 60_000);
});
