/**
 * Erasure end to end on the real server, in both engine modes (inline; process: the engine a
 * child process, the logs' writer ingest): traffic for many users, two of them erased mid-stream
 * (one with events in bronze, silver, late/, dlq/, gold sessions and an open session), traffic
 * going on; the request reaches `done` with the server running (no restart: the log segments
 * holding them are sealed and truncated, the shards' LMDB files compacted online); then no byte of
 * either id is in any file of the lake or the data directory, every other user's events are
 * intact, gold equals its recomputation from silver, and `sluice quality`'s accounting holds.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { composeServeConfig } from '../../cli/config.js';
import { startSluice, type RunningSluice } from '../../cli/serve.js';
import { runQualityChecks } from '../../analytics/quality.js';
import { goldMetricsSql } from '../../engine/gold-sql.js';
import { filesHolding, segmentEvents } from '../helpers/erasure.js';
import { openLakeReader } from '../helpers/lake.js';

const ev = segmentEvents('m-');

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

type Mode = 'inline' | 'process';

function config(d: { data: string; lake: string }, engineMode: Mode) {
  return composeServeConfig(
    { port: 0, data: d.data, lake: d.lake, shards: 2, workers: 1, flushInterval: '250ms', allowedLateness: '10m', sessionGap: '30m', engineMode, compression: 'none', writeKeys: ['wk-erase'], adminKeys: [ADMIN] },
    {},
  );
}

/** Inline: drain and checkpoint now; process: the engine checkpoints every 250 ms, wait for about two rounds. */
async function settle(s: RunningSluice): Promise<void> {
  if (s.coordinator) {
    await s.coordinator.drain();
    await s.coordinator.checkpointNow(true);
  } else await new Promise((r) => setTimeout(r, 600));
}

/** Polls (bounded) until `cond` holds. */
async function until(cond: () => Promise<boolean>, what: string, tries = 120): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}`);
}


async function post(s: RunningSluice, batch: unknown[]): Promise<{ status: number; body: { accepted: number; rejected: Array<{ code: string }> } }> {
  const res = await fetch(`${s.url}/v1/batch`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${s.writeKey}` }, body: JSON.stringify({ batch }) });
  return { status: res.status, body: (await res.json()) as { accepted: number; rejected: Array<{ code: string }> } };
}

async function admin(s: RunningSluice, path: string, init: RequestInit = {}, key: string | null = ADMIN): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${s.url}${path}`, { ...init, headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) } });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
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

async function status(s: RunningSluice, id: string): Promise<Record<string, unknown>> {
  return (await admin(s, `/v1/admin/erasures/${id}`)).body;
}

describe.each<Mode>(['inline', 'process'])('erasure (engine %s)', (mode) => {
  it('deletes two users from every layer mid-stream without a restart, keeps everyone else, and gold equals silver recomputed', async () => {
    const root = mkdtempSync(join(tmpdir(), `sluice-erasure-${mode}-`));
    dirs.push(root);
    const d = { data: join(root, 'data'), lake: join(root, 'lake') };
    const s = await startSluice(config(d, mode), quiet);
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
      await settle(s);
      // Too late for A (→ silver and late/).
      expect((await post(s, [ev(A, D + 2 * HOUR + 90 * 1000)])).status).toBe(200);
      await settle(s);
      // Every layer holds A: bronze, silver, late/, dlq/, gold sessions.
      await until(async () => {
        const held = filesHolding([d.lake], [A]).join('\n');
        return ['bronze/', 'silver/events/', 'late/', 'dlq/', 'gold/sessions/'].every((p) => held.includes(p));
      }, 'A in every layer of the lake');
      const before = await countsBefore(d.lake);
      expect(before.get(A)).toBe(13);
      for (const u of others) expect(before.get(u), u).toBe(12);

      // Keys: none → 401, a write key → 403.
      expect((await admin(s, '/v1/admin/erasures', { method: 'POST', body: JSON.stringify({ users: [A] }) }, null)).status).toBe(401);
      expect((await admin(s, '/v1/admin/erasures', { method: 'POST', body: JSON.stringify({ users: [A] }) }, 'wk-erase')).status).toBe(403);
      const accepted = await admin(s, '/v1/admin/erasures', { method: 'POST', body: JSON.stringify({ users: [A, B], reason: 'GDPR art. 17 ticket 1' }) });
      expect(accepted.status).toBe(202);
      const id = String(accepted.body.id);

      // Suppressed from now on: refused with user_erased, counted, not stored. (The counter is this
      // process's: the two modes' cases add to it.)
      const erasedCount = async (): Promise<number> => Number(/sluice_ingest_rejected_total\{code="user_erased"\} (\d+)/.exec(await (await fetch(`${s.url}/metrics`)).text())?.[1] ?? 0);
      const counted = await erasedCount();
      // An alias from an erased id (its former id, which the alias would bring back) is refused too.
      const alias = { type: 'alias', userId: 'user-new-id', previousId: A, messageId: `m-alias-${mode}`, timestamp: new Date().toISOString() };
      const refused = await post(s, [ev(A, Date.now()), ev(B, Date.now()), ev('user-1', Date.now()), alias]);
      expect(refused.body.accepted).toBe(1);
      expect(refused.body.rejected.map((r) => r.code)).toEqual(['user_erased', 'user_erased', 'user_erased']);
      expect(await erasedCount()).toBe(counted + 3);

      // Traffic goes on while the job runs; the request completes online (bounded: 120 rounds).
      let state = '';
      for (let i = 0; i < 120 && state !== 'done'; i++) {
        expect((await post(s, others.slice(0, 10).map((u) => ev(u, Date.now())))).status).toBe(200);
        await settle(s);
        state = String((await status(s, id)).state);
      }
      const done = await status(s, id);
      expect(done.state, JSON.stringify(done)).toBe('done');
      const layers = done.layers as Record<string, { rowsRemoved: number }>;
      for (const t of ['bronze_events', 'events', 'late_events', 'dlq', 'sessions']) expect(layers[t]?.rowsRemoved, t).toBeGreaterThan(0);
      expect(layers.events!.rowsRemoved).toBe(14 + 12);

      // Still running: no byte of either id in any file of the lake or the data directory (Parquet
      // uncompressed here, so a row would show): logs, LMDB state, erasure bookkeeping included.
      expect(filesHolding([d.lake, d.data], [A, B])).toEqual([]);
    } finally {
      await s.close();
    }

    // After the final checkpoint too.
    expect(filesHolding([d.lake, d.data], [A, B])).toEqual([]);
    const after = await countsBefore(d.lake);
    for (const u of others) expect(after.get(u), u).toBe(12);
    expect(after.has(A) || after.has(B)).toBe(false);

    // Gold for day D equals its recomputation from silver (the windows A and B touched went down).
    const lake = await openLakeReader(d.lake);
    try {
      // Every view: none of their rows (a table whose files held only theirs has none left).
      for (const v of ['events', 'late_events', 'bronze_events', 'sessions', 'dlq'] as const) {
        let rel: string;
        try {
          rel = lake.rel(v);
        } catch {
          continue;
        }
        const [n] = await lake.rows<{ n: bigint }>(`SELECT count(*) AS n FROM ${rel} WHERE ${v === 'dlq' ? `contains(raw, '${A}') OR contains(raw, '${B}')` : `user_id IN ('${A}', '${B}')`}`);
        expect(Number(n!.n), v).toBe(0);
      }
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
    // Erase commit records keep sluice quality's accounting exact (they were 'retention', which switched it off).
    const report = await runQualityChecks({ lake: d.lake });
    for (const c of report.checks.filter((x) => x.name === 'files' || x.name === 'completeness')) expect(c.status, `${c.name}: ${c.problems.join('; ')}`).toBe('pass');
    const commits = readdirSync(join(d.lake, '_sluice', 'commits')).filter((n) => n.startsWith('erase-'));
    expect(commits.length).toBeGreaterThan(0);
    for (const n of commits) expect(JSON.parse(readFileSync(join(d.lake, '_sluice', 'commits', n), 'utf8')).kind, n).toMatch(/^(erase|reconcile)$/);
  }, 240_000);
});
