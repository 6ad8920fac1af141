/**
 * Canned metrics over a synthetic lake (test/analytics/fixture.ts), each checked against an
 * independent computation in TypeScript from the fixture's ground truth — not against SQL.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openLakeQuery, type LakeQuery, type QueryResult } from '../../analytics/query.js';
import type { MetricParams } from '../../analytics/metrics.js';
import { LocalObjectStore } from '../../storage/local-store.js';
import { DAY, generateFixture, writeFixtureLake, type Fixture, type TruthEvent } from './fixture.js';

let root: string;
let f: Fixture;
let q: LakeQuery;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'sluice-metrics-'));
  f = generateFixture({ seed: 7 });
  const store = new LocalObjectStore(root);
  await writeFixtureLake(store, f);
  await store.close();
  q = await openLakeQuery({ lake: root });
}, 120_000);

afterAll(async () => {
  await q?.close();
  rmSync(root, { recursive: true, force: true });
});

const FROM = '2026-03-02';
const TO = '2026-03-11';
const t0 = Date.parse(`${FROM}T00:00:00Z`);
const tEnd = Date.parse(`${TO}T00:00:00Z`) + DAY;
const dayOf = (t: number): number => Math.floor(t / DAY) * DAY;
const text = (t: number): string => new Date(t).toISOString().slice(0, 10);
const objects = (r: QueryResult): Array<Record<string, unknown>> => r.rows.map((row) => Object.fromEntries(r.columns.map((c, i) => [c, row[i]])));
const n = (v: unknown): number | null => (v === null ? null : Number(v));
const d = (v: unknown): string => text((v as Date).getTime());
const round4 = (x: number): number => Math.round(x * 10_000) / 10_000;
const users = (es: TruthEvent[]): number => new Set(es.map((e) => e.user_id)).size;
const between = (a: number, b: number, pred: (e: TruthEvent) => boolean = () => true): TruthEvent[] => f.events.filter((e) => e.event_time >= a && e.event_time < b && pred(e));
const metric = async (name: string, p: Partial<MetricParams> = {}): Promise<Array<Record<string, unknown>>> => objects(await q.metric(name, { from: FROM, to: TO, ...p }));

describe('activity metrics', () => {
  it('dau per day and device type (a missing device type is its own NULL group)', async () => {
    const got = (await metric('dau', { by: ['device_type'] })).map((r) => `${d(r.day)}|${String(r.device_type)}|${n(r.dau)}`);
    const want: string[] = [];
    for (let t = t0; t < tEnd; t += DAY) {
      for (const dev of [...new Set(f.events.map((e) => e.device_type))]) {
        const u = users(between(t, t + DAY, (e) => e.device_type === dev));
        if (u > 0) want.push(`${text(t)}|${String(dev)}|${u}`);
      }
    }
    expect(got.sort()).toEqual(want.sort());
  });

  it('dau filtered to two countries (--where country=US --where country=DE)', async () => {
    const got = await metric('dau', { where: { country: ['US', 'DE'] } });
    expect(got).toHaveLength(10);
    for (const r of got) {
      const t = Date.parse(`${d(r.day)}T00:00:00Z`);
      expect(n(r.dau), d(r.day)).toBe(users(between(t, t + DAY, (e) => e.country === 'US' || e.country === 'DE')));
    }
  });

  it('wau counts whole ISO weeks overlapping the range; mau whole months', async () => {
    const wau = await metric('wau', { from: '2026-03-04', to: '2026-03-10' });
    expect(wau.map((r) => d(r.week))).toEqual(['2026-03-02', '2026-03-09']);
    for (const r of wau) {
      const w = (r.week as Date).getTime();
      expect(n(r.wau)).toBe(users(between(w, w + 7 * DAY)));
    }
    const mau = await metric('mau', { from: '2026-03-05', to: '2026-03-06', by: ['os'] });
    for (const r of mau) expect(n(r.mau)).toBe(users(f.events.filter((e) => e.os === r.os)));
    expect(mau.map((r) => String(r.os)).sort()).toEqual(['Android', 'iOS', 'macOS', 'null']);
  });

  it('rolling 7- and 28-day actives, filtered by country', async () => {
    for (const [name, window] of [
      ['active7', 7],
      ['active28', 28],
    ] as const) {
      const got = await metric(name, { where: { country: 'US' } });
      expect(got).toHaveLength(10);
      for (const r of got) {
        const t = (r.day as Date).getTime();
        expect(n(r[name]), `${name} ${d(r.day)}`).toBe(users(between(t - (window - 1) * DAY, t + DAY, (e) => e.country === 'US')));
      }
    }
  });

  it('stickiness = DAU / rolling 28-day actives', async () => {
    const got = await metric('stickiness', { from: '2026-03-05', to: '2026-03-11' });
    expect(got).toHaveLength(7);
    for (const r of got) {
      const t = (r.day as Date).getTime();
      const dau = users(between(t, t + DAY));
      const a28 = users(between(t - 27 * DAY, t + DAY));
      expect([n(r.dau), n(r.active28), n(r.stickiness)]).toEqual([dau, a28, round4(dau / a28)]);
    }
  });
});

describe('retention', () => {
  const lastDay = (): number => dayOf(Math.max(...f.events.map((e) => e.event_time)));
  const cohorts = (firstSeen: boolean): Map<string, { cohort: number; device: string }> => {
    const out = new Map<string, { cohort: number; device: string }>();
    for (const e of f.events) {
      if (!firstSeen && e.event_type !== 'Application Installed') continue;
      if (!out.has(e.user_id)) out.set(e.user_id, { cohort: dayOf(e.event_time), device: e.device_type ?? 'unknown' }); // events are sorted by time
    }
    return out;
  };
  const active = (): Set<string> => new Set(f.events.map((e) => `${e.user_id}|${dayOf(e.event_time)}`));

  for (const firstSeen of [false, true]) {
    it(`day-1/7/28 retention by ${firstSeen ? 'first-seen' : 'install'} cohort and device type`, async () => {
      const got = await metric('retention', { by: ['device_type'], cohortBy: firstSeen ? 'first_seen' : 'install' });
      const c = cohorts(firstSeen);
      const act = active();
      const want: string[] = [];
      const groups = new Map<string, string[]>();
      for (const [u, { cohort, device }] of c) {
        if (cohort < t0 || cohort >= tEnd) continue;
        const k = `${cohort}|${device}`;
        groups.set(k, [...(groups.get(k) ?? []), u]);
      }
      for (const [k, members] of groups) {
        const [cohort, device] = [Number(k.split('|')[0]), k.split('|')[1]];
        const cell = (N: number): string => {
          const retained = members.filter((u) => act.has(`${u}|${cohort + N * DAY}`)).length;
          return `${retained}:${cohort + N * DAY <= lastDay() ? round4(retained / members.length) : null}`;
        };
        want.push(`${text(cohort)}|${device}|${members.length}|${cell(1)}|${cell(7)}|${cell(28)}`);
      }
      const rows = got.map((r) => `${d(r.cohort)}|${String(r.device_type)}|${n(r.cohort_size)}|${n(r.d1_users)}:${n(r.d1)}|${n(r.d7_users)}:${n(r.d7)}|${n(r.d28_users)}:${n(r.d28)}`);
      expect(rows.sort()).toEqual(want.sort());
      expect(rows.length).toBeGreaterThan(6);
    });
  }

  it('the cohort triangle has every elapsed day 0–28 of every cohort, zeros included', async () => {
    const got = await metric('retention_triangle', { from: '2026-03-03', to: '2026-03-06', where: { device_type: 'ios' } });
    const c = [...cohorts(false)].filter(([u, v]) => v.cohort >= t0 + DAY && v.cohort < t0 + 5 * DAY && f.events.find((e) => e.user_id === u)!.device_type === 'ios');
    const act = active();
    const want: string[] = [];
    for (const cohort of [...new Set(c.map(([, v]) => v.cohort))]) {
      const members = c.filter(([, v]) => v.cohort === cohort).map(([u]) => u);
      for (let N = 0; cohort + N * DAY <= lastDay() && N <= 28; N++) {
        const retained = members.filter((u) => act.has(`${u}|${cohort + N * DAY}`)).length;
        want.push(`${text(cohort)}|${N}|${members.length}|${retained}|${round4(retained / members.length)}`);
      }
    }
    expect(got.map((r) => `${d(r.cohort)}|${n(r.day_n)}|${n(r.cohort_size)}|${n(r.retained)}|${n(r.rate)}`).sort()).toEqual(want.sort());
  });
});

describe('funnel, sessions, CTR', () => {
  /** Reference funnel: entry at the first step-1 event in range, then the earliest next step ≥ previous, within the limit. */
  function funnel(steps: string[], withinMs: number, from: number, to: number): Map<string, number[]> {
    const byUser = new Map<string, TruthEvent[]>();
    for (const e of f.events) if (steps.includes(e.event_type)) byUser.set(e.user_id, [...(byUser.get(e.user_id) ?? []), e]);
    const out = new Map<string, number[]>();
    for (const evs of byUser.values()) {
      const entry = evs.find((e) => e.event_type === steps[0] && e.event_time >= from && e.event_time < to);
      if (!entry) continue;
      const g = entry.device_type ?? 'unknown';
      const reached = out.get(g) ?? new Array<number>(steps.length).fill(0);
      reached[0]!++;
      let t = entry.event_time;
      for (let k = 1; k < steps.length; k++) {
        const next = evs.find((e) => e.event_type === steps[k] && e.event_time >= t && e.event_time <= entry.event_time + withinMs);
        if (!next) break;
        reached[k]!++;
        t = next.event_time;
      }
      out.set(g, reached);
    }
    return out;
  }

  it('ordered steps within a time limit, overall and by device type', async () => {
    const steps = ['Application Opened', 'Product Viewed', 'Order Completed'];
    for (const within of [10 * 60, 3600]) {
      const want = funnel(steps, within * 1000, t0, tEnd);
      const total = steps.map((_, k) => [...want.values()].reduce((a, r) => a + r[k]!, 0));
      const all = await metric('funnel', { steps, withinS: within });
      expect(all.map((r) => n(r.users))).toEqual(total);
      expect(all.map((r) => String(r.event_type))).toEqual(steps);
      expect(n(all[2]!.conversion)).toBe(round4(total[2]! / total[0]!));
      expect(n(all[2]!.step_conversion)).toBe(round4(total[2]! / total[1]!));
      const by = await metric('funnel', { steps, withinS: within, by: ['device_type'] });
      for (const r of by) expect(n(r.users), `${String(r.device_type)} step ${n(r.step)}`).toBe(want.get(String(r.device_type))![n(r.step)! - 1]);
      expect(by).toHaveLength(steps.length * want.size);
    }
    // Not a trivial case: people complete the funnel, and the shorter limit loses some of them.
    const done = (ms: number): number => [...funnel(steps, ms, t0, tEnd).values()].reduce((a, r) => a + r[2]!, 0);
    expect(done(3_600_000)).toBeGreaterThan(done(600_000));
  });

  it('session count, median and p90 length, bounce rate per day', async () => {
    const quantile = (xs: number[], p: number): number => {
      const s = [...xs].sort((a, b) => a - b);
      const pos = (s.length - 1) * p;
      const lo = Math.floor(pos);
      return s[lo]! + (s[Math.min(lo + 1, s.length - 1)]! - s[lo]!) * (pos - lo);
    };
    const got = await metric('sessions', { where: { device_type: ['ios', 'android'] } });
    expect(got).toHaveLength(10);
    for (const r of got) {
      const t = (r.day as Date).getTime();
      const ss = f.sessions.filter((s) => s.session_start >= t && s.session_start < t + DAY && (s.device_type === 'ios' || s.device_type === 'android'));
      const lengths = ss.map((s) => s.duration_s);
      expect(n(r.sessions)).toBe(ss.length);
      expect(n(r.median_s)).toBeCloseTo(quantile(lengths, 0.5), 2);
      expect(n(r.p90_s)).toBeCloseTo(quantile(lengths, 0.9), 2);
      expect(n(r.bounce_rate)).toBe(round4(ss.filter((s) => s.event_count === 1).length / ss.length));
    }
  });

  it('notification CTR per day and country', async () => {
    const got = await metric('ctr', { by: ['country'] });
    let rows = 0;
    for (let t = t0; t < tEnd; t += DAY) {
      for (const c of [...new Set(f.events.map((e) => e.country))]) {
        const es = between(t, t + DAY, (e) => e.country === c);
        const views = es.filter((e) => e.event_type === 'Push Notification Received').length;
        const opens = es.filter((e) => e.event_type === 'Push Notification Tapped').length;
        if (views + opens === 0) continue;
        rows++;
        const r = got.find((x) => d(x.day) === text(t) && x.country === c)!;
        expect([n(r.views), n(r.opens), n(r.ctr)]).toEqual([views, opens, views === 0 ? null : round4(opens / views)]);
      }
    }
    expect(got).toHaveLength(rows);
  });
});

describe('parameters and a young lake', () => {
  it.each([
    [{ metric: 'nope' }, /unknown metric "nope"; choose one of active28, active7, ctr, dau/],
    [{ from: 'yesterday' }, '--from must be a date like 2026-03-01, got "yesterday"'],
    [{ from: '2026-02-30' }, '--from must be a date like 2026-03-01, got "2026-02-30"'],
    [{ to: '2026-03-01' }, '--to (2026-03-01) must not be before --from (2026-03-02)'],
    [{ by: ['user_id; DROP TABLE x'] }, 'metric dau filters and groups by device_type, os, app_version, country, source; got "user_id; DROP TABLE x"'],
    [{ metric: 'sessions', by: ['os'] }, 'metric sessions filters and groups by device_type, app_version, country; got "os"'],
    [{ metric: 'funnel', steps: ['a'], withinS: 60 }, /at least two event types/],
    [{ metric: 'funnel', steps: ['a', 'a'], withinS: 60 }, 'funnel steps must be distinct event types, got a, a'],
    [{ metric: 'funnel', steps: ['a', 'b'] }, /a funnel needs --within/],
  ] as Array<[Partial<MetricParams> & { metric?: string }, string | RegExp]>)('rejects %j', async (p, message) => {
    const { metric: name = 'dau', ...params } = p;
    await expect(q.metric(name, { from: FROM, to: TO, ...params })).rejects.toThrow(message);
  });

  it('a metric file runs by hand in DuckDB with PREPARE/EXECUTE, as its header says', async () => {
    const sql = readFileSync(new URL('../../analytics/metrics/dau.sql', import.meta.url), 'utf8').replaceAll('{{dims}}', '').replaceAll('{{filters}}', 'TRUE').replace(/;\s*$/, '');
    await q.run('SELECT 1 FROM events LIMIT 0'); // defines the views on this connection
    await q.connection.run(`PREPARE dau_by_hand AS ${sql}`);
    const r = await q.connection.runAndReadAll("EXECUTE dau_by_hand(from_time := TIMESTAMPTZ '2026-03-02', to_time := TIMESTAMPTZ '2026-03-12')");
    expect(r.getRowsJS().map((row) => Number(row[1]))).toEqual(Array.from({ length: 10 }, (_, i) => users(between(t0 + i * DAY, t0 + (i + 1) * DAY))));
  });

  it('a --where value is a bound parameter, never SQL', async () => {
    expect(await metric('dau', { where: { country: "US' OR '1'='1" } })).toEqual([]);
  });

  it('every view exists, typed, on a lake with no files yet', async () => {
    const empty = mkdtempSync(join(tmpdir(), 'sluice-empty-lake-'));
    const e = await openLakeQuery({ lake: empty });
    try {
      for (const t of ['bronze_events', 'events', 'sessions', 'hourly_metrics', 'daily_metrics', 'dlq', 'late_events']) {
        const r = await e.run(`SELECT count(*) AS n FROM ${t}`);
        expect(Number(r.rows[0]![0]), t).toBe(0);
      }
      const cols = objects(await e.run('DESCRIBE sessions')).map((r) => `${String(r.column_name)} ${String(r.column_type)}`);
      expect(cols).toEqual([
        'session_id VARCHAR', 'user_id VARCHAR', 'session_start TIMESTAMP WITH TIME ZONE', 'session_end TIMESTAMP WITH TIME ZONE', 'duration_s DOUBLE',
        'event_count BIGINT', 'bounce BOOLEAN', 'first_screen VARCHAR', 'last_screen VARCHAR', 'device_type VARCHAR', 'app_version VARCHAR', 'country VARCHAR',
        'year INTEGER', 'month INTEGER', 'day INTEGER',
      ]);
      expect((await e.metric('retention', { from: FROM, to: TO })).rows).toEqual([]);
      expect(objects(await e.metric('funnel', { from: FROM, steps: ['a', 'b'], withinS: 60 })).map((r) => n(r.users))).toEqual([0, 0]);
      // The lake fills while the session is open: the next query sees the new commits.
      const store = new LocalObjectStore(empty);
      await writeFixtureLake(store, generateFixture({ users: 5, days: 2 }));
      await store.close();
      expect(Number((await e.run('SELECT count(*) FROM sessions')).rows[0]![0])).toBeGreaterThan(0);
    } finally {
      await e.close();
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it('partition columns are INTEGERs in layout order, and filtering on them works', async () => {
    const cols = objects(await q.run('DESCRIBE events')).map((r) => `${String(r.column_name)} ${String(r.column_type)}`);
    expect(cols.slice(-4)).toEqual(['year INTEGER', 'month INTEGER', 'day INTEGER', 'hour INTEGER']);
    const r = await q.run('SELECT count(*) FROM events WHERE year = 2026 AND month = 3 AND day = 4 AND hour < 12');
    expect(Number(r.rows[0]![0])).toBe(between(t0 + 2 * DAY, t0 + 2 * DAY + 12 * 3_600_000).length);
  });

  it('a missing lake directory is a clear user error', async () => {
    await expect(openLakeQuery({ lake: join(root, 'nope') })).rejects.toThrow(/lake directory .*nope does not exist; pass --lake DIR/);
  });
});
