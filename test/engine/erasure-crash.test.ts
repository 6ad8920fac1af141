/**
 * kill -9 during an erasure, at every step of the job, on the real server (`sluice serve` run from
 * the sources as a child process): after the purge, between a rewrite's stage and publish, between
 * a deleted file's commit record and its deletion, after a rewrite before the job records it, with
 * a gold window's corrected fingerprint recorded but the file not written and with it written but
 * not recorded done, with the compacted LMDB copy written but not renamed, after the logs were sealed, before and after the
 * audit record. The fault hook (common/fault.ts: SLUICE_FAULT, each point once per SLUICE_FAULT_DIR)
 * makes the process SIGKILL itself there, so every point is hit, in order, one per life.
 *   inline: the serve process dies; the test starts it again.
 *   process: the engine process dies; ingest starts it again (serve stays up, acks go on).
 * Afterwards the request is done exactly once: one audit record, the rows removed counted once,
 * no byte of either id in any file of the lake or the data directory, every acknowledged event of
 * the other users in silver exactly once, gold equals its recomputation from silver (no window
 * corrected twice), and sluice quality's files and completeness checks pass.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runQualityChecks } from '../../analytics/quality.js';
import { serveFromSources } from '../helpers/serve-sources.js';
import { KEY, stop } from '../helpers/served.js';
import { filesHolding, segmentEvents } from '../helpers/erasure.js';
import { goldMetricsSql } from '../../engine/gold-sql.js';
import { openLakeReader } from '../helpers/lake.js';

const ADMIN = 'admin-crash-key';
const A = 'crash-alpha-W4p';
const B = 'crash-bravo-K8m';
const MIN = 60_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;
const D = Math.floor(Date.now() / DAY) * DAY - 2 * DAY;
/** Every fault point of an erasure, in the order the job reaches them. */
const POINTS = ['erasure:purged', 'erasure:rewrite-staged', 'erasure:mid-rewrite', 'erasure:rewrite-recorded', 'erasure:gold-recorded', 'erasure:gold-written', 'erasure:state-copied', 'erasure:rolled', 'erasure:before-audit', 'erasure:audited'];
const others = Array.from({ length: 20 }, (_, i) => `other-${i}`);

const root = mkdtempSync(join(tmpdir(), 'sluice-erase-crash-'));
afterAll(() => {
  if (!process.env.KEEP_LAKE) rmSync(root, { recursive: true, force: true });
});

type Mode = 'inline' | 'process';

const ev = segmentEvents('c-');


const AUTH = `Basic ${Buffer.from(`${KEY}:`).toString('base64')}`;

/** Posts a batch; the ids acknowledged (all or none), or undefined when the server is gone. */
async function post(url: string, batch: Array<{ messageId: string }>): Promise<{ status: number; rejected: Array<{ code: string }> } | undefined> {
  try {
    const res = await fetch(`${url}/v1/batch`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: AUTH }, body: JSON.stringify({ batch }) });
    const body = (await res.json()) as { rejected?: Array<{ code: string }> };
    return { status: res.status, rejected: body.rejected ?? [] };
  } catch {
    return undefined;
  }
}

async function admin(url: string, path: string, init: RequestInit = {}): Promise<Record<string, unknown> | undefined> {
  try {
    const res = await fetch(`${url}${path}`, { ...init, headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN}` } });
    return { http: res.status, ...((await res.json()) as Record<string, unknown>) };
  } catch {
    return undefined;
  }
}

describe.each<Mode>(['inline', 'process'])('erasure killed at every step (engine %s)', (mode) => {
  it('resumes after each kill -9 and completes exactly once', async () => {
    const dir = join(root, mode);
    const d = { data: join(dir, 'data'), lake: join(dir, 'lake'), faults: join(dir, 'faults') };
    mkdirSync(d.faults, { recursive: true });
    const args = ['--data', d.data, '--lake', d.lake, '--shards', '2', '--workers', '1', '--flush-interval', '250ms', '--allowed-lateness', '10m', '--session-gap', '30m', '--compression', 'none', '--engine-mode', mode, '--admin-key', ADMIN];
    const env = { SLUICE_FAULT: POINTS.join(','), SLUICE_FAULT_DIR: d.faults };
    const acked = new Set<string>();
    const sent = new Set<string>();
    const send = async (url: string, batch: Array<ReturnType<typeof ev>>): Promise<boolean> => {
      for (const e of batch) sent.add(e.messageId);
      const r = await post(url, batch);
      if (r?.status !== 200) return false;
      expect(r.rejected).toEqual([]);
      for (const e of batch) if (e.userId !== A && e.userId !== B) acked.add(e.messageId);
      return true;
    };

    let id = '';
    let s = await serveFromSources(dir, args, env);
    try {
    // Day D, 01:00–05:00 for everyone; A also a dead letter, a late event and an open session.
    for (let h = 1; h <= 4; h++) expect(await send(s.url, [...others, A, B].flatMap((u, i) => [0, 5, 10].map((m) => ev(u, D + h * HOUR + (i % 7) * MIN + m * MIN))))).toBe(true);
    expect((await post(s.url, [ev(A, D + 2 * HOUR, { timestamp: 'not-a-time', messageId: 'bad-a' })]))?.rejected).toHaveLength(1);
    expect(await send(s.url, [...others, A].map((u) => ev(u, Date.now() - MIN)))).toBe(true);
    await new Promise((r) => setTimeout(r, 1500));
    expect(await send(s.url, [ev(A, D + 2 * HOUR + 90_000)])).toBe(true);
    for (let i = 0; i < 120; i++) {
      const held = filesHolding([d.lake], [A]).join('\n');
      if (['bronze/', 'silver/events/', 'late/', 'dlq/', 'gold/sessions/'].every((p) => held.includes(p))) break;
      await new Promise((r) => setTimeout(r, 250));
    }

    const accepted = await admin(s.url, '/v1/admin/erasures', { method: 'POST', body: JSON.stringify({ users: [A, B], reason: 'crash test' }) });
    expect(accepted?.http).toBe(202);
    id = String(accepted!.id);

    // Lives: each one ends at the next fault point (a kill -9); traffic of the others goes on meanwhile.
    let state = '';
    let lives = 1;
    for (let poll = 0; poll < 2400 && state !== 'done'; poll++) {
      await send(s.url, others.slice(0, 8).map((u) => ev(u, Date.now())));
      const st = await admin(s.url, `/v1/admin/erasures/${id}`);
      state = String(st?.state ?? state);
      if (st === undefined && mode === 'inline') {
        expect(await s.exited).toBe('SIGKILL');
        // A start may die too: the job also runs during recovery (checkpoints run while the log replays).
        for (;;) {
          lives++;
          expect(lives).toBeLessThanOrEqual(POINTS.length + 1);
          try {
            s = await serveFromSources(dir, args, env);
            break;
          } catch (err) {
            expect(String(err)).toMatch(/exited at start with SIGKILL/);
          }
        }
        continue;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(state).toBe('done');
    const fired = readdirSync(d.faults).sort();
    expect(fired).toEqual(POINTS.map((p) => `fired-${p.replace(':', '-')}`).sort());
    if (mode === 'inline') expect(lives).toBe(POINTS.length + 1);
    const status = (await admin(s.url, `/v1/admin/erasures/${id}`))!;
    const layers = status.layers as Record<string, { rowsRemoved: number; files: string[] }>;
    // Counted once across the kills: A's 12 + late + open-session event, B's 12 in silver.
    expect(layers.events!.rowsRemoved).toBe(14 + 12);
    // late/: 1, unless reconciliation had merged A's late file into gold (and deleted it) before the scan.
    expect(layers.late_events?.rowsRemoved ?? 0).toBeLessThanOrEqual(1);
    expect(layers.dlq!.rowsRemoved).toBe(1);
    for (const l of Object.values(layers)) expect(new Set(l.files).size, JSON.stringify(l.files)).toBe(l.files.length);
    // Refused while erased.
    expect((await post(s.url, [ev(A, Date.now())]))?.rejected.map((r) => r.code)).toEqual(['user_erased']);
    expect(await stop(s, 'SIGTERM')).toBe(0);
    } finally {
      // A failed assertion leaves the server running: stop it (bounded).
      await stop(s, 'SIGKILL').catch(() => undefined);
    }

    expect(readdirSync(join(d.lake, '_sluice', 'audit'))).toEqual([`${id}.json`]);
    expect(filesHolding([d.lake, d.data], [A, B])).toEqual([]);
    expect(existsSync(join(d.data, 'erasure', 'pending', `${id}.json`))).toBe(false);
    const lake = await openLakeReader(d.lake);
    try {
      const rows = await lake.rows<{ event_id: string; user_id: string; n: bigint }>(`SELECT event_id, any_value(user_id) AS user_id, count(*) AS n FROM ${lake.rel('events')} GROUP BY 1`);
      expect(rows.filter((r) => r.user_id === A || r.user_id === B)).toEqual([]);
      const counts = new Map(rows.map((r) => [r.event_id, Number(r.n)]));
      const missing = [...acked].filter((m) => counts.get(m) !== 1);
      const lost = missing.filter((m) => !counts.has(m)).length;
      expect(missing.slice(0, 10), `${missing.length} acknowledged events of other users not exactly once in silver (${lost} missing, ${missing.length - lost} more than once; ${acked.size} acknowledged)`).toEqual([]);
      expect([...counts].filter(([, n]) => n !== 1).slice(0, 10)).toEqual([]);
      expect([...counts.keys()].filter((m) => !sent.has(m)).slice(0, 10)).toEqual([]);
      // Gold of day D equals its recomputation from silver: a window killed mid-correction was not corrected twice.
      const norm = (rs: Array<Record<string, unknown>>): string[] =>
        rs.map((r) => JSON.stringify(Object.fromEntries(Object.entries(r).filter(([k]) => !['year', 'month', 'day', 'hour'].includes(k)).map(([k, v]) => [k, typeof v === 'bigint' ? Number(v) : v instanceof Date ? v.getTime() : v])))).sort();
      for (let h = 1; h <= 4; h++) {
        const w = D + h * HOUR;
        const gold = await lake.rows(`SELECT * FROM ${lake.rel('hourly_metrics')} WHERE epoch_ms(window_start) = ${w}`);
        expect(norm(gold), `hour ${h}`).toEqual(norm(await lake.rows(goldMetricsSql('hourly', lake.rel('events'), w, w + HOUR))));
      }
      const daily = await lake.rows(`SELECT * FROM ${lake.rel('daily_metrics')} WHERE epoch_ms(window_start) = ${D}`);
      expect(norm(daily)).toEqual(norm(await lake.rows(goldMetricsSql('daily', lake.rel('events'), D, D + DAY))));
    } finally {
      lake.close();
    }
    const report = await runQualityChecks({ lake: d.lake });
    for (const c of report.checks.filter((x) => x.name === 'files' || x.name === 'completeness')) expect(c.status, `${c.name}: ${c.problems.join('; ')}`).toBe('pass');
  }, 600_000);
});
