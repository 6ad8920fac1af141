/**
 * The real pipeline end to end: generated traffic through `sluice serve` (uWS ingest, shards,
 * Parquet commits) and reconciliation; then the canned metrics against the load generator's
 * ground truth (not the same SQL), and the quality checks on the real lake and damaged copies —
 * which also pins that the engine's commit records carry the stats the completeness check needs.
 * (metrics.test.ts and quality.test.ts cover the same ground on a synthetic lake, in more detail.)
 */
import { cpSync, mkdtempSync, readdirSync, rmSync, statSync, copyFileSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { composeServeConfig } from '../../cli/config.js';
import { startSluice } from '../../cli/serve.js';
import { runLoadgen } from '../../loadgen/run.js';
import { openLakeQuery, type LakeQuery, type QueryResult } from '../../analytics/query.js';
import { runQualityChecks } from '../../analytics/quality.js';
import { reconcileLate } from '../../engine/reconcile.js';
import { openObjectStore } from '../../storage/open-store.js';
import { openLakeReader } from '../helpers/lake.js';

const DAY = 86_400_000;
const START = Date.UTC(2026, 2, 2, 0, 0, 0);
let root: string;
let lakeDir: string;
let truth: Array<{ event_id: string; user_id: string; event_type: string; t: number; device_type: string; country: string }>;
let q: LakeQuery;
let endTime: number;

const dayOf = (t: number): string => new Date(Math.floor(t / DAY) * DAY).toISOString().slice(0, 10);
const objects = (r: QueryResult): Array<Record<string, unknown>> => r.rows.map((row) => Object.fromEntries(r.columns.map((c, i) => [c, row[i]])));
const dateText = (v: unknown): string => (v instanceof Date ? v.toISOString().slice(0, 10) : String(v));
const n = (v: unknown): number => Number(v);

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'sluice-analytics-'));
  lakeDir = join(root, 'lake');
  const sluice = await startSluice(
    composeServeConfig({ port: 0, data: join(root, 'data'), lake: lakeDir, shards: 3, workers: 2, flushInterval: '250ms', writeKeys: ['an-key'] }, {}),
    pino({ level: 'warn' }),
  );
  const truthFile = join(root, 'truth.parquet');
  const stepMs = 100_000;
  const events = 9000;
  endTime = START + events * stepMs;
  await runLoadgen({ url: sluice.url, writeKey: 'an-key', protocol: 'http', events, durationMs: 60_000, users: 150, seed: 11, workers: 1, connections: 4, batchSize: 100, startTime: START, stepMs, duplicateRate: 0.02, invalidRate: 0.01, truth: truthFile });
  await sluice.close();
  const store = await openObjectStore(lakeDir);
  await reconcileLate(store);
  await store.close();
  const reader = await openLakeReader(root);
  truth = (await reader.rows<Record<string, unknown>>(`SELECT event_id, user_id, event_type, epoch_ms(event_time) AS t, device_type, country FROM '${truthFile}'`)).map((r) => ({
    event_id: String(r.event_id),
    user_id: String(r.user_id),
    event_type: String(r.event_type),
    t: Number(r.t),
    device_type: String(r.device_type),
    country: String(r.country),
  }));
  reader.close();
  q = await openLakeQuery({ lake: lakeDir });
}, 120_000);

afterAll(async () => {
  await q?.close();
  if (!process.env.KEEP_LAKE) rmSync(root, { recursive: true, force: true });
});

const FROM = '2026-03-02';
const TO = '2026-03-11';
const TO_END = Date.parse(`${TO}T00:00:00Z`) + DAY;

describe('canned metrics against the ground truth', () => {
  it('dau, by device type', async () => {
    const got = objects(await q.metric('dau', { from: FROM, to: TO, by: ['device_type'] }));
    const want = new Map<string, Set<string>>();
    for (const e of truth.filter((x) => x.t < TO_END)) {
      const k = `${dayOf(e.t)}|${e.device_type}`;
      if (!want.has(k)) want.set(k, new Set());
      want.get(k)!.add(e.user_id);
    }
    expect(got.length).toBe(want.size);
    for (const r of got) expect(n(r.dau), `${dateText(r.day)} ${String(r.device_type)}`).toBe(want.get(`${dateText(r.day)}|${String(r.device_type)}`)!.size);
  });

  it('wau and mau', async () => {
    const monthUsers = new Set(truth.map((e) => e.user_id)); // whole months: all of the run is in March
    const mau = objects(await q.metric('mau', { from: FROM, to: TO }));
    expect(mau).toHaveLength(1);
    expect(n(mau[0]!.mau)).toBe(monthUsers.size);
    const wau = objects(await q.metric('wau', { from: FROM, to: TO }));
    for (const r of wau) {
      const start = (r.week as Date).getTime();
      const users = new Set(truth.filter((e) => e.t >= start && e.t < start + 7 * DAY).map((e) => e.user_id)); // whole ISO weeks
      expect(n(r.wau)).toBe(users.size);
    }
  });

  it('rolling 7-day actives and stickiness, filtered by country', async () => {
    const got = objects(await q.metric('active7', { from: FROM, to: TO, where: { country: 'US' } }));
    for (const r of got) {
      const d = (r.day as Date).getTime();
      const users = new Set(truth.filter((e) => e.country === 'US' && e.t >= d - 6 * DAY && e.t < d + DAY).map((e) => e.user_id));
      expect(n(r.active7), dateText(r.day)).toBe(users.size);
    }
    const sticky = objects(await q.metric('stickiness', { from: FROM, to: TO }));
    for (const r of sticky) {
      const d = (r.day as Date).getTime();
      const dau = new Set(truth.filter((e) => e.t >= d && e.t < d + DAY).map((e) => e.user_id)).size;
      const a28 = new Set(truth.filter((e) => e.t >= d - 27 * DAY && e.t < d + DAY).map((e) => e.user_id)).size;
      expect(n(r.dau)).toBe(dau);
      expect(n(r.stickiness)).toBeCloseTo(dau / a28, 3);
    }
  });

  it('day-1 and day-7 retention by install cohort', async () => {
    const got = objects(await q.metric('retention', { from: FROM, to: TO }));
    const cohort = new Map<string, number>();
    for (const e of truth) if (e.event_type === 'Application Installed') cohort.set(e.user_id, Math.min(cohort.get(e.user_id) ?? Infinity, Math.floor(e.t / DAY) * DAY));
    const active = new Set(truth.map((e) => `${e.user_id}|${Math.floor(e.t / DAY) * DAY}`));
    expect(got.length).toBeGreaterThan(0);
    for (const r of got) {
      const c = (r.cohort as Date).getTime();
      const members = [...cohort].filter(([, d]) => d === c).map(([u]) => u);
      expect(n(r.cohort_size)).toBe(members.length);
      const share = (k: number): number => members.filter((u) => active.has(`${u}|${c + k * DAY}`)).length / members.length;
      expect(n(r.d1)).toBeCloseTo(share(1), 3);
      expect(n(r.d7)).toBeCloseTo(share(7), 3);
    }
    const triangle = objects(await q.metric('retention_triangle', { from: FROM, to: TO }));
    const day0 = triangle.filter((r) => n(r.day_n) === 0);
    for (const r of day0) expect(n(r.rate)).toBe(1);
  });

  it('a funnel of ordered steps within a time limit', async () => {
    const steps = ['Application Opened', 'screen', 'Order Completed'];
    const within = 3_600_000;
    const got = objects(await q.metric('funnel', { from: FROM, to: TO, steps, withinS: within / 1000 }));
    const byUser = new Map<string, typeof truth>();
    for (const e of [...truth].sort((a, b) => a.t - b.t)) {
      if (!byUser.has(e.user_id)) byUser.set(e.user_id, []);
      byUser.get(e.user_id)!.push(e);
    }
    const reached = [0, 0, 0];
    for (const evs of byUser.values()) {
      const first = evs.find((e) => e.event_type === steps[0] && e.t < TO_END); // entry: first step-1 event in [from, to]
      if (!first) continue;
      reached[0]!++;
      let t = first.t;
      for (let k = 1; k < steps.length; k++) {
        const next = evs.find((e) => e.event_type === steps[k] && e.t >= t && e.t <= first.t + within);
        if (!next) break;
        reached[k]!++;
        t = next.t;
      }
    }
    expect(got.map((r) => n(r.users))).toEqual(reached);
  });

  it('notification CTR per day', async () => {
    const got = objects(await q.metric('ctr', { from: FROM, to: TO }));
    for (const r of got) {
      const d = (r.day as Date).getTime();
      const inDay = truth.filter((e) => e.t >= d && e.t < d + DAY);
      const views = inDay.filter((e) => e.event_type === 'Push Notification Received').length;
      const opens = inDay.filter((e) => e.event_type === 'Push Notification Tapped').length;
      expect(n(r.views)).toBe(views);
      expect(n(r.opens)).toBe(opens);
    }
  });

  it('sessions: exactly the truth’s (rebuilt from the events not too late), each event carries its session’s id, and the metric’s arithmetic', async () => {
    const gap = 30 * 60_000;
    const reader = await openLakeReader(lakeDir);
    // A too-late event has no session (session_id NULL in silver); sessions are those of the other events.
    const tooLate = new Set((await reader.rows<{ event_id: string }>(`SELECT event_id FROM ${reader.rel('events')} WHERE session_id IS NULL`)).map((r) => r.event_id));
    const resolved = new Map((await reader.rows<{ event_id: string; session_id: string | null }>(`SELECT event_id, session_id FROM ${reader.rel('events')}`)).map((r) => [r.event_id, r.session_id]));
    const gold = (
      await reader.rows<{ session_id: string; user_id: string; t: number; end: number; n: bigint; duration_s: number; bounce: boolean }>(
        `SELECT session_id, user_id, epoch_ms(session_start) AS t, epoch_ms(session_end) AS "end", event_count AS n, duration_s, bounce FROM ${reader.rel('sessions')}`,
      )
    ).map((r) => ({ ...r, t: Number(r.t), end: Number(r.end), n: Number(r.n) }));
    reader.close();
    expect(tooLate.size).toBeLessThan(truth.length * 0.05);

    // The truth's sessions, rebuilt here: per user, events in time order, cut at gaps ≥ 30 min.
    const sessions: Array<{ user: string; start: number; end: number; members: string[] }> = [];
    const byUser = new Map<string, typeof truth>();
    for (const e of truth) {
      if (tooLate.has(e.event_id)) continue;
      if (!byUser.has(e.user_id)) byUser.set(e.user_id, []);
      byUser.get(e.user_id)!.push(e);
    }
    for (const [user, evs] of byUser) {
      evs.sort((a, b) => a.t - b.t);
      let s = { user, start: evs[0]!.t, end: evs[0]!.t, members: [evs[0]!.event_id] };
      for (const e of evs.slice(1)) {
        if (e.t - s.end >= gap) {
          sessions.push(s);
          s = { user, start: e.t, end: e.t, members: [e.event_id] };
        } else {
          s.end = e.t;
          s.members.push(e.event_id);
        }
      }
      sessions.push(s);
    }
    const key = (user: string, start: number): string => `${user}@${start}`;
    const truthByKey = new Map(sessions.map((s) => [key(s.user, s.start), s]));
    // Every gold session is a truth session, with the same end and events, and each of its events carries its id.
    for (const g of gold) {
      const t = truthByKey.get(key(g.user_id, g.t));
      expect(t, `gold session ${g.session_id}`).toBeDefined();
      expect([g.end, g.n]).toEqual([t!.end, t!.members.length]);
      for (const id of t!.members) expect(resolved.get(id), `event ${id}`).toBe(g.session_id);
    }
    // Every truth session that ended long enough before the stop (watermark 2 h behind the last event) is in gold.
    const closedTo = endTime - 2 * 3_600_000 - gap;
    const goldKeys = new Set(gold.map((g) => key(g.user_id, g.t)));
    const missing = sessions.filter((s) => s.end < closedTo - 3_600_000 && !goldKeys.has(key(s.user, s.start)));
    expect(missing).toEqual([]);
    expect(gold.length).toBeGreaterThan(100);

    // Through `sluice query`: every session's events, read in the events view, number its event_count.
    const mismatched = objects(
      await q.run('SELECT s.session_id, s.event_count, count(e.event_id) AS n FROM sessions s LEFT JOIN events e USING (session_id) GROUP BY ALL HAVING count(e.event_id) <> s.event_count'),
    );
    expect(mismatched).toEqual([]);

    const median = (xs: number[]): number => {
      const l = [...xs].sort((a, b) => a - b);
      const mid = l.length >> 1;
      return l.length % 2 ? l[mid]! : (l[mid - 1]! + l[mid]!) / 2;
    };
    const got = objects(await q.metric('sessions', { from: FROM, to: '2026-03-10' }));
    let checked = 0;
    for (const r of got) {
      const d = (r.day as Date).getTime();
      if (d + DAY + 6 * 3_600_000 > closedTo) continue;
      checked++;
      // The metric's arithmetic, exactly, over the engine's sessions, which are the truth's.
      const g = gold.filter((s) => s.t >= d && s.t < d + DAY);
      expect(n(r.sessions), dateText(r.day)).toBe(g.length);
      expect(n(r.sessions), dateText(r.day)).toBe(sessions.filter((s) => s.start >= d && s.start < d + DAY).length);
      expect(n(r.bounce_rate)).toBeCloseTo(g.filter((s) => s.bounce).length / g.length, 4);
      expect(n(r.median_s)).toBeCloseTo(median(g.map((s) => s.duration_s)), 2);
    }
    expect(checked).toBeGreaterThanOrEqual(8);
  });
});

describe('quality checks', () => {
  const now = (): number => endTime + 30 * 60_000;
  const copyLake = (): string => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-damaged-'));
    cpSync(lakeDir, dir, { recursive: true });
    return dir;
  };
  const parquetFiles = (dir: string): string[] => {
    const out: string[] = [];
    const walk = (d: string): void => {
      for (const f of readdirSync(d)) {
        const p = join(d, f);
        if (statSync(p).isDirectory()) walk(p);
        else if (p.endsWith('.parquet')) out.push(p);
      }
    };
    walk(dir);
    return out.sort();
  };

  it('pass on the healthy lake', async () => {
    // ~36 events an hour of bursty, zipf-skewed sessions: too few to judge hourly anomalies.
    const r = await runQualityChecks({ lake: lakeDir, now: now(), maxStalenessMs: 365 * DAY, goldDelayMs: 6 * 3_600_000, anomalyMinVolume: 1000 });
    expect(r.checks.filter((c) => c.status === 'fail'), JSON.stringify(r.checks, null, 1)).toEqual([]);
    expect(r.checks.find((c) => c.name === 'completeness')!.summary).toMatch(/^bronze \d+ = silver \d+ \+ duplicates \d+ in every receive hour, matching \d+ flush records/);
    expect(r.ok).toBe(true);
  });

  it('fail on a deleted file, naming it', async () => {
    const dir = copyLake();
    try {
      const victim = parquetFiles(join(dir, 'silver')).at(3)!;
      unlinkSync(victim);
      const r = await runQualityChecks({ lake: dir, now: now(), maxStalenessMs: 365 * DAY, goldDelayMs: 6 * 3_600_000 });
      expect(r.ok).toBe(false);
      const files = r.checks.find((c) => c.name === 'files')!;
      expect(files.status).toBe('fail');
      expect(files.problems.join('\n')).toContain(`missing file: ${victim.slice(dir.length + 1)}`);
      expect(r.checks.find((c) => c.name === 'completeness')!.status).toBe('fail');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('fail on a duplicated file', async () => {
    const dir = copyLake();
    try {
      const source = parquetFiles(join(dir, 'silver'))[0]!;
      const copy = source.replace(/\.parquet$/, '-copy.parquet');
      copyFileSync(source, copy);
      const r = await runQualityChecks({ lake: dir, now: now(), maxStalenessMs: 365 * DAY, goldDelayMs: 6 * 3_600_000 });
      expect(r.ok).toBe(false);
      expect(r.checks.find((c) => c.name === 'files')!.problems.join('\n')).toContain(`file not in any commit record: ${copy.slice(dir.length + 1)}`);
      expect(r.checks.find((c) => c.name === 'uniqueness')!.status).toBe('fail');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('fail on a stale lake and on a stale gold partition', async () => {
    // Freshness is about receive time (wall clock): a day after the run, the lake is stale.
    const stale = await runQualityChecks({ lake: lakeDir, now: Date.now() + DAY, maxStalenessMs: 3_600_000, goldDelayMs: 6 * 3_600_000 });
    expect(stale.checks.find((c) => c.name === 'freshness')!.problems.join('\n')).toMatch(/silver is stale: newest event received .*\(limit 1 h\)/);
    const dir = copyLake();
    try {
      const gold = parquetFiles(join(dir, 'gold', 'hourly_metrics'))[2]!;
      const hour = /year=(\d+)\/month=(\d+)\/day=(\d+)\/hour=(\d+)/.exec(gold)!;
      unlinkSync(gold);
      const r = await runQualityChecks({ lake: dir, now: now(), maxStalenessMs: 365 * DAY, goldDelayMs: 6 * 3_600_000 });
      expect(r.checks.find((c) => c.name === 'gold')!.problems.join('\n')).toContain(`missing partition gold/hourly_metrics/year=${hour[1]}/month=${hour[2]}/day=${hour[3]}/hour=${hour[4]}: silver has`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
