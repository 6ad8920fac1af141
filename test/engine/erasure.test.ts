/**
 * Erasure end to end on the real server (inline engine): traffic for many users, two of them
 * erased mid-stream (one with events in bronze, silver, late/, dlq/, gold sessions and an open
 * session), traffic going on; afterwards no byte of either id is in any file of the lake or the
 * data directory, every other user's events are intact, gold equals its recomputation from silver.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { composeServeConfig } from '../../cli/config.js';
import { startSluice, type RunningSluice } from '../../cli/serve.js';
import { goldMetricsSql } from '../../engine/gold-sql.js';
import { openLakeReader } from '../helpers/lake.js';

const A = 'erase-alpha-Q7x';
const B = 'erase-bravo-Z3k';
const ADMIN = 'admin-key-test';
const MIN = 60_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;
const D = Math.floor(Date.now() / DAY) * DAY - 2 * DAY;
const quiet = pino({ level: 'warn' });

const dirs: string[] = [];
afterAll(() => {
  if (!process.env.KEEP_LAKE) for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function config(d: { data: string; lake: string }) {
  return composeServeConfig(
    { port: 0, data: d.data, lake: d.lake, shards: 2, workers: 1, flushInterval: '250ms', allowedLateness: '10m', sessionGap: '30m', engineMode: 'inline', compression: 'none', writeKeys: ['wk-erase'], adminKeys: [ADMIN] },
    {},
  );
}

let seq = 0;
const ev = (userId: string, t: number, extra: Record<string, unknown> = {}) => ({
  messageId: `m-${seq++}`,
  userId,
  type: 'track',
  event: seq % 3 === 0 ? 'Push Notification Received' : 'Application Opened',
  timestamp: new Date(t).toISOString(),
  context: { device: { type: seq % 2 ? 'ios' : 'android' }, app: { version: '1.0' }, location: { country: 'DE' } },
  properties: { n: seq },
  ...extra,
});

async function post(s: RunningSluice, batch: unknown[]): Promise<{ status: number; body: { accepted: number; rejected: Array<{ code: string }> } }> {
  const res = await fetch(`${s.url}/v1/batch`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${s.writeKey}` }, body: JSON.stringify({ batch }) });
  return { status: res.status, body: (await res.json()) as { accepted: number; rejected: Array<{ code: string }> } };
}

async function admin(s: RunningSluice, path: string, init: RequestInit = {}, key: string | null = ADMIN): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${s.url}${path}`, { ...init, headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) } });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else out.push(p);
  }
  return out;
}

/** Files holding the bytes of any of `ids`. */
function filesHolding(roots: string[], ids: string[]): string[] {
  const needles = ids.map((id) => Buffer.from(id, 'utf8'));
  return roots.flatMap(walk).filter((f) => {
    const bytes = readFileSync(f);
    return needles.some((n) => bytes.includes(n));
  });
}

const others = Array.from({ length: 40 }, (_, i) => `user-${i}`);

async function countsBefore(lakeDir: string): Promise<Map<string, number>> {
  const lake = await openLakeReader(lakeDir);
  try {
    const rows = await lake.rows<{ user_id: string; n: bigint }>(`SELECT user_id, count(*) AS n FROM ${lake.rel('events')} WHERE epoch_ms(event_time) < ${D + DAY} GROUP BY 1`);
    return new Map(rows.map((r) => [r.user_id, Number(r.n)]));
  } finally {
    lake.close();
  }
}

describe('erasure', () => {
  it('deletes two users from every layer mid-stream, keeps everyone else, and gold equals silver recomputed', async () => {
    const root = mkdtempSync(join(tmpdir(), 'sluice-erasure-'));
    dirs.push(root);
    const d = { data: join(root, 'data'), lake: join(root, 'lake') };
    let s = await startSluice(config(d), quiet);
    let before = new Map<string, number>();
    try {
      // Day D, 01:00–05:00: every user, a few sessions each; A also sends an invalid event (→ dlq/).
      for (let h = 1; h <= 4; h++) {
        const batch = [...others, A, B].flatMap((u, i) => [0, 5, 10].map((m) => ev(u, D + h * HOUR + (i % 7) * MIN + m * MIN)));
        expect((await post(s, batch)).status).toBe(200);
      }
      const bad = await post(s, [ev(A, D + 2 * HOUR, { timestamp: 'not-a-time' })]);
      expect(bad.body.rejected).toHaveLength(1);
      // Now: the watermark passes day D (its windows and sessions close); A keeps a session open.
      expect((await post(s, [...others, A].map((u) => ev(u, Date.now() - MIN)))).status).toBe(200);
      await s.coordinator!.drain();
      await s.coordinator!.checkpointNow(true);
      // Too late for A (→ silver and late/).
      expect((await post(s, [ev(A, D + 2 * HOUR + 90 * 1000)])).status).toBe(200);
      await s.coordinator!.drain();
      await s.coordinator!.checkpointNow(true);
      await s.coordinator!.checkpointNow(true);
      expect(filesHolding([d.lake], [A]).length).toBeGreaterThan(3);
      before = await countsBefore(d.lake);
      expect(before.get(A)).toBeGreaterThan(12);

      // Keys: none → 401, a write key → 403.
      expect((await admin(s, '/v1/admin/erasures', { method: 'POST', body: JSON.stringify({ users: [A] }) }, null)).status).toBe(401);
      expect((await admin(s, '/v1/admin/erasures', { method: 'POST', body: JSON.stringify({ users: [A] }) }, 'wk-erase')).status).toBe(403);
      const accepted = await admin(s, '/v1/admin/erasures', { method: 'POST', body: JSON.stringify({ users: [A, B], reason: 'GDPR art. 17 ticket 1' }) });
      expect(accepted.status).toBe(202);
      const id = String(accepted.body.id);

      // Suppressed from now on: refused with user_erased, counted, not stored.
      const refused = await post(s, [ev(A, Date.now()), ev(B, Date.now()), ev('user-1', Date.now())]);
      expect(refused.body.accepted).toBe(1);
      expect(refused.body.rejected.map((r) => r.code)).toEqual(['user_erased', 'user_erased']);
      expect(await (await fetch(`${s.url}/metrics`)).text()).toMatch(/sluice_ingest_rejected_total\{code="user_erased"\} 2/);

      // Traffic goes on while the job runs.
      let state = '';
      for (let i = 0; i < 80 && state !== 'waiting-log' && state !== 'done'; i++) {
        expect((await post(s, others.slice(0, 10).map((u) => ev(u, Date.now())))).status).toBe(200);
        await s.coordinator!.checkpointNow(true);
        state = String((await admin(s, `/v1/admin/erasures/${id}`)).body.state);
      }
      expect(state).toBe('waiting-log');
      await s.close();

      // A restart seals the log segments that held them and compacts the shards' LMDB files.
      s = await startSluice(config(d), quiet);
      for (let i = 0; i < 40 && state !== 'done'; i++) {
        await s.coordinator!.checkpointNow(true);
        state = String((await admin(s, `/v1/admin/erasures/${id}`)).body.state);
      }
      const status = (await admin(s, `/v1/admin/erasures/${id}`)).body;
      expect(status.state, JSON.stringify(status)).toBe('done');
      const layers = status.layers as Record<string, { rowsRemoved: number }>;
      for (const t of ['bronze_events', 'events', 'late_events', 'dlq', 'sessions']) expect(layers[t]?.rowsRemoved, t).toBeGreaterThan(0);
      expect(await (await fetch(`${s.url}/metrics`)).text()).toMatch(/sluice_ingest_rejected_total\{code="user_erased"\}/);
    } finally {
      await s.close();
    }

    // No byte of either id anywhere (Parquet uncompressed here, so a row would show).
    expect(filesHolding([d.lake, d.data], [A, B])).toEqual([]);
    const after = await countsBefore(d.lake);
    for (const u of others) expect(after.get(u), u).toBe(before.get(u));
    expect(after.has(A) || after.has(B)).toBe(false);

    // Gold for day D equals its recomputation from silver (the windows A and B touched went down).
    const lake = await openLakeReader(d.lake);
    try {
      const norm = (rows: Array<Record<string, unknown>>): string[] =>
        rows.map((r) => JSON.stringify(Object.fromEntries(Object.entries(r).filter(([k]) => !['year', 'month', 'day', 'hour'].includes(k)).map(([k, v]) => [k, typeof v === 'bigint' ? Number(v) : v instanceof Date ? v.getTime() : v])))).sort();
      for (let h = 1; h <= 4; h++) {
        const w = D + h * HOUR;
        const gold = await lake.rows(`SELECT * EXCLUDE (year, month, day, hour) FROM ${lake.rel('hourly_metrics')} WHERE epoch_ms(window_start) = ${w}`);
        expect(gold.length, `hour ${h}`).toBeGreaterThan(0);
        expect(norm(gold), `hour ${h}`).toEqual(norm(await lake.rows(goldMetricsSql('hourly', lake.rel('events'), w, w + HOUR))));
      }
      const daily = await lake.rows(`SELECT * EXCLUDE (year, month, day) FROM ${lake.rel('daily_metrics')} WHERE epoch_ms(window_start) = ${D}`);
      expect(norm(daily)).toEqual(norm(await lake.rows(goldMetricsSql('daily', lake.rel('events'), D, D + DAY))));
      const [users] = await lake.rows<{ n: bigint }>(`SELECT active_users AS n FROM ${lake.rel('daily_metrics')} WHERE epoch_ms(window_start) = ${D} AND device_type = 'ALL' AND app_version = 'ALL' AND country = 'ALL'`);
      expect(Number(users!.n)).toBe(others.length);
      const audit = readdirSync(join(d.lake, '_sluice', 'audit'));
      expect(audit).toHaveLength(1);
    } finally {
      lake.close();
    }
  }, 240_000);
});
