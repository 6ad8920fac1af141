/**
 * The live dashboard without a browser: its rules and counters (table-driven, injected clock),
 * and the real server (startSluice: uWS, logs, engine) for access, headers, the push stream,
 * agreement with /v1/live and /metrics, and cutting off a client that stops reading.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { composeServeConfig } from '../../cli/config.js';
import { startSluice, type RunningSluice } from '../../cli/serve.js';
import type { IngestRow } from '../../ingest/batch-builder.js';
import { AlertBoard, evaluateAlerts, robustDeviations, type AlertInputs } from '../../ingest/dashboard/alerts.js';
import { HyperLogLog, hashString } from '../../ingest/dashboard/hll.js';
import { HourlyHistory } from '../../ingest/dashboard/history.js';
import { DashboardHub, type EngineLive, type InitFrame, type TickFrame } from '../../ingest/dashboard/hub.js';
import { defaultDashboardOptions, validateDashboardOptions } from '../../ingest/dashboard/options.js';
import { IngestTap, OTHER } from '../../ingest/dashboard/tap.js';
import { ingestMetrics } from '../../ingest/metrics.js';
import { validateIngestOptions } from '../../ingest/options.js';

const T = Date.UTC(2026, 11, 1, 10, 30, 0);
const HOUR = 3_600_000;
const thresholds = defaultDashboardOptions().thresholds;

function row(over: Partial<IngestRow> = {}): IngestRow {
  return {
    event_id: 'e',
    user_id: 'u1',
    anonymous_id: null,
    event_type: 'track',
    event_time: T,
    received_at: T,
    device_type: 'ios',
    os: null,
    app_version: '1.0',
    country: 'DE',
    source: 'segment',
    properties: null,
    raw: null,
    ...over,
  };
}

const base: AlertInputs = { acked: 1000, rejected: 0, late: 0, processed: 1000, duplicates: 0, tooLate: 0, ackedPerSecond: 10, sameHourHistory: [] };

describe('dashboard rules and counters', () => {
  it.each([
    ['nothing wrong', {}, []],
    ['invalid above 1 %', { rejected: 20 }, ['invalid_rate']],
    ['invalid exactly 1 % of received is not above', { acked: 990, rejected: 10 }, []],
    ['late above 5 %', { late: 60 }, ['late_rate']],
    ['duplicates above 5 %', { duplicates: 60 }, ['duplicate_rate']],
    ['too late above 1 %', { tooLate: 11 }, ['too_late_rate']],
    ['too few events: not judged', { acked: 10, rejected: 5, processed: 10 }, []],
    ['rate far from the same hour of previous days', { ackedPerSecond: 100, sameHourHistory: [10, 11, 9, 10] }, ['anomaly']],
    ['rate within the usual spread', { ackedPerSecond: 11, sameHourHistory: [10, 11, 9, 10] }, []],
    ['a drop to zero is an anomaly too', { ackedPerSecond: 0, sameHourHistory: [10, 12, 9, 11] }, ['anomaly']],
    ['fewer previous days than anomalyMinDays', { ackedPerSecond: 100, sameHourHistory: [10, 10] }, []],
  ] as Array<[string, Partial<AlertInputs>, string[]]>)('%s', (_name, over, firing) => {
    const states = evaluateAlerts({ ...base, ...over }, thresholds);
    expect(states.filter((s) => s.firing).map((s) => s.name)).toEqual(firing);
  });

  it('robust deviations use the median and 1.4826·MAD, with a floor for a flat history', () => {
    expect(robustDeviations(10, [10, 10, 10])).toBe(0);
    // median 10, MAD 1 → scale 1.4826
    expect(robustDeviations(13, [9, 10, 11, 10, 12, 8])).toBeCloseTo(3 / 1.4826, 6);
    // flat history: scale = 5 % of the median
    expect(robustDeviations(11, [20, 20, 20])).toBeCloseTo(9 / 1, 6);
  });

  it('an alert board reports each episode once: fired, then resolved', () => {
    const board = new AlertBoard();
    const on = evaluateAlerts({ ...base, rejected: 50 }, thresholds);
    const off = evaluateAlerts(base, thresholds);
    expect(board.update(on, 1).fired.map((a) => a.name)).toEqual(['invalid_rate']);
    expect(board.update(on, 2)).toEqual({ fired: [], resolved: [] });
    expect(board.firing(on)).toMatchObject([{ name: 'invalid_rate', since: 1 }]);
    expect(board.update(off, 3).resolved.map((a) => a.name)).toEqual(['invalid_rate']);
  });

  it('HyperLogLog: near exact for small sets, within 5 % for 50 000, union by merge', () => {
    const a = new HyperLogLog();
    for (let i = 0; i < 300; i++) a.addHash(hashString(`user-${i}`));
    for (let i = 0; i < 300; i++) a.addHash(hashString(`user-${i}`));
    expect(Math.abs(a.estimate() - 300)).toBeLessThanOrEqual(9);
    const b = new HyperLogLog();
    for (let i = 0; i < 50_000; i++) b.addHash(hashString(`u${i}`));
    expect(Math.abs(b.estimate() - 50_000) / 50_000).toBeLessThan(0.05);
    const c = new HyperLogLog();
    for (let i = 200; i < 500; i++) c.addHash(hashString(`user-${i}`));
    c.merge(a);
    expect(Math.abs(c.estimate() - 500)).toBeLessThanOrEqual(15);
  });

  it('the tap counts metrics, lateness, hour and day windows, caps dimension values and samples the tail', () => {
    const tap = new IngestTap({
      lateAfterMs: 60_000,
      maxDimensionValues: 10,
      tailSize: 5,
      tailPerSecond: 3,
      metricTypes: { installs: ['install'], screen_views: ['screen'], notification_views: ['nv'], notification_opens: ['no'] },
    });
    const rows: IngestRow[] = [
      row({ event_type: 'install', user_id: 'a' }),
      row({ event_type: 'screen', user_id: 'b', received_at: T + 61_000 }), // late
      row({ event_type: 'nv', user_id: 'a' }),
      row({ event_type: 'nv', user_id: 'a' }),
      row({ event_type: 'no', user_id: 'c', event_time: T - HOUR }), // earlier hour today
      row({ event_type: 'track', event_time: T - 11 * HOUR }), // yesterday: not in today
      ...Array.from({ length: 12 }, (_, i) => row({ country: `C${i}`, user_id: `x${i}` })),
    ];
    tap.add(rows, T + 1000);
    expect(tap.rows).toBe(18);
    expect(tap.late).toBe(3); // received more than a minute after their event time: the screen, the earlier hour, yesterday
    const { hour, today } = tap.windows(T + 1000, 3);
    expect(hour).toMatchObject({ start: T - 30 * 60_000, events: 16, installs: 1, screenViews: 1, notificationViews: 2, notificationOpens: 0, activeUsers: 14 });
    expect(today).toMatchObject({ events: 17, notificationOpens: 1, notificationCtr: 0.5, activeUsers: 15 });
    // DE + 12 others against a cap of 10 values: the rest goes to "(other)"
    const countries = new Map(today.breakdown.country);
    expect(countries.get('DE')).toBe(5);
    expect(countries.get(OTHER)).toBe(12 - 9);
    expect(today.breakdown.device_type).toEqual([['ios', 17]]);
    // 3 a second into the tail, the oldest first
    expect(tap.tail.since(0).map((e) => e.type)).toEqual(['install', 'screen', 'nv']);
    tap.add([row({ event_type: 'later' })], T + 2500);
    expect(tap.tail.since(3).map((e) => e.type)).toEqual(['later']);
  });

  it('history: same hour of previous days only, bounded, survives JSON', () => {
    const h = new HourlyHistory();
    for (let d = 1; d <= 40; d++) h.record(T - d * 86_400_000 - 30 * 60_000, d);
    h.record(T - 30 * 60_000, 999); // today: not history
    h.record(T - 86_400_000 + HOUR - 30 * 60_000, 555); // another hour
    expect(h.sameHour(T).sort((a, b) => a - b)).toEqual(Array.from({ length: 27 }, (_, i) => i + 1));
  });

  it('options: defaults, bad values named, read keys must not be write keys', () => {
    expect(validateDashboardOptions(undefined)).toEqual(defaultDashboardOptions());
    expect(() => validateDashboardOptions({ tickMs: 0 })).toThrow(/dashboard.tickMs must be an integer in 10..60000/);
    expect(() => validateDashboardOptions({ thresholds: { invalidRate: 5 } })).toThrow(/invalidRate must be a share in \(0, 1\]/);
    expect(() => validateDashboardOptions({ readKeys: ['short'] })).toThrow(/at least 8 characters/);
    expect(() => validateDashboardOptions({ bogus: 1 } as never)).toThrow(/unknown dashboard option "bogus"/);
    expect(() => validateIngestOptions({ writeKeys: [{ key: 'same-key-123' }], dashboard: { readKeys: ['same-key-123'] } })).toThrow(/read key must differ from every write key/);
  });
});

describe('dashboard hub (injected clock, stub clients)', () => {
  it('fires the anomaly alert when traffic stops at an hour that usually has 50 events/s, and cuts a client past the backpressure limit', async () => {
    let now = T;
    const published: string[] = [];
    const lines: string[] = [];
    const tap = new IngestTap({ lateAfterMs: 60_000, maxDimensionValues: 10, tailSize: 10, tailPerSecond: 10, metricTypes: { installs: [], screen_views: [], notification_views: [], notification_opens: [] } });
    const options = validateDashboardOptions({ readKeys: ['rk_unit_test'], maxBackpressureBytes: 2048 });
    const hub = new DashboardHub(options, { tap, publish: (f) => void published.push(f), log: pino({ level: 'info' }, { write: (l: string) => void lines.push(l) }), now: () => now });
    for (let d = 1; d <= 3; d++) hub.recordHistory(T - d * 86_400_000 - 30 * 60_000, 50);
    await hub.start();
    hub.stop(); // ticks are driven by the test
    let buffered = 0;
    let closed = 0;
    const slow = { getBufferedAmount: () => buffered, close: () => void closed++ };
    const fine = { getBufferedAmount: () => 0, close: () => void closed++ };
    hub.addClient(slow);
    hub.addClient(fine);
    now += 1000;
    await hub.tick();
    const frame = JSON.parse(published.at(-1)!) as TickFrame;
    expect(frame.alerts.map((a) => a.name)).toEqual(['anomaly']);
    expect(frame.alerts[0]!.message).toMatch(/event rate 0.0\/s vs 50.0\/s usual at this hour/);
    expect(lines.some((l) => l.includes('"alert":"anomaly"'))).toBe(true);
    buffered = 5000;
    now += 1000;
    await hub.tick();
    expect(closed).toBe(1);
    expect(hub.clientCount).toBe(1);
    expect(published).toHaveLength(2);
  });

  it('counts the engine\'s work before its first report and after a restart of the engine (its totals start again from 0)', async () => {
    let now = T;
    let live: EngineLive | null = null;
    const engine = (processed: number, duplicates: number): EngineLive => ({
      time: new Date(now).toISOString(), eventsPerSecond: 0, acceptedTotal: processed - duplicates, processedTotal: processed, committedTotal: processed, duplicatesTotal: duplicates, tooLateTotal: 0,
      globalWatermark: null, watermarkLagSeconds: null, backlogEvents: 0, lastCheckpointAgeSeconds: null, currentHour: null, openSessions: 0,
    });
    const tap = new IngestTap({ lateAfterMs: 60_000, maxDimensionValues: 10, tailSize: 10, tailPerSecond: 10, metricTypes: { installs: [], screen_views: [], notification_views: [], notification_opens: [] } });
    const options = validateDashboardOptions({ readKeys: ['rk_unit_test'], rateWindowSeconds: 60 });
    const hub = new DashboardHub(options, { tap, live: () => live, publish: () => undefined, log: pino({ level: 'silent' }), now: () => now });
    await hub.start(); // the engine has not reported yet
    hub.stop();
    // The page says "engine starting" (not "live" over zeros) for a server with an engine not reported yet.
    expect(hub.snapshot()).toMatchObject({ engine: null, hasEngine: true });
    live = engine(220, 220); // every event a resend
    now += 1000;
    await hub.tick();
    expect(hub.snapshot()!.quality.duplicateRate).toBe(1);
    live = engine(20, 0); // the engine process restarted: 20 new events, no duplicate
    now += 1000;
    await hub.tick();
    expect(hub.snapshot()!.quality.duplicateRate).toBe(220 / 240);
  });

  it('does not count an erased user\'s refused events as invalid (a refusal by policy): no invalid rate, no reason listed', async () => {
    let now = T;
    const tap = new IngestTap({ lateAfterMs: 60_000, maxDimensionValues: 10, tailSize: 10, tailPerSecond: 10, metricTypes: { installs: [], screen_views: [], notification_views: [], notification_opens: [] } });
    const options = validateDashboardOptions({ readKeys: ['rk_unit_test'], rateWindowSeconds: 60 });
    const hub = new DashboardHub(options, { tap, publish: () => undefined, log: pino({ level: 'silent' }), now: () => now });
    await hub.start();
    hub.stop();
    ingestMetrics.events.inc({ protocol: 'segment' }, 100);
    ingestMetrics.rejected.inc({ code: 'user_erased' }, 100);
    ingestMetrics.rejected.inc({ code: 'invalid_timestamp' }, 1); // a code no other test here counts (the counters are this process's)
    now += 1000;
    await hub.tick();
    const q = hub.snapshot()!.quality;
    expect(q.rejectedByCode.map((r) => r.code)).toEqual(['invalid_timestamp']);
    expect(q.invalidRate).toBe(1 / 101); // it was 101 / 201: the invalid-rate alert fired for every erased user still sending
  });
});

const WRITE = 'wk_dash_test_1';
const READ = 'rk_dash_test_1';

async function startServer(dashboard: Record<string, unknown>): Promise<{ sluice: RunningSluice; dir: string; logs: string[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-dash-'));
  const logs: string[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void logs.push(line) });
  const config = composeServeConfig({ port: 0, data: join(dir, 'data'), lake: join(dir, 'lake'), shards: 2, workers: 1, flushInterval: '1s', writeKeys: [WRITE], readKeys: [READ] }, {});
  config.ingest = { dashboard };
  return { sluice: await startSluice(config, logger), dir, logs };
}

function segmentBatch(n: number, from = 0, over: (i: number) => Record<string, unknown> = () => ({})): string {
  const now = new Date().toISOString();
  return JSON.stringify({
    batch: Array.from({ length: n }, (_, k) => {
      const i = from + k;
      return { type: 'track', event: i % 4 === 0 ? 'Application Installed' : 'Button Tapped', userId: `user-${i % 9}`, messageId: `msg-${i}`, timestamp: now, context: { device: { type: i % 2 ? 'ios' : 'android' } }, ...over(i) };
    }),
  });
}

async function postBatch(url: string, body: string): Promise<Record<string, unknown>> {
  const res = await fetch(`${url}/v1/batch`, { method: 'POST', headers: { authorization: `Bearer ${WRITE}`, 'content-type': 'application/json' }, body });
  expect(res.status).toBe(200);
  return (await res.json()) as Record<string, unknown>;
}

/** Polls `check` every 50 ms until it returns a value or `attempts` run out (bounded; not a timing assertion). */
async function until<T>(check: () => Promise<T | undefined> | T | undefined, attempts = 400): Promise<T> {
  for (let i = 0; i < attempts; i++) {
    const v = await check();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('condition not reached');
}

function metricValue(text: string, line: string): number | undefined {
  const l = text.split('\n').find((x) => x.startsWith(`${line} `));
  return l === undefined ? undefined : Number(l.slice(line.length + 1));
}

describe('dashboard on the real server', () => {
  let s: Awaited<ReturnType<typeof startServer>>;
  beforeAll(async () => {
    s = await startServer({ tickMs: 200, tailPerSecond: 100, allowedOrigins: ['https://grafana.example.com'] });
  });
  afterAll(async () => {
    await s.sluice.close();
    rmSync(s.dir, { recursive: true, force: true });
  });

  it('needs a read key: 401 without one or with a write key; the key in the URL becomes an HttpOnly cookie, a wrong one leaves the URL', async () => {
    const url = s.sluice.url;
    const page = (headers: Record<string, string> = {}, path = '/dashboard') => fetch(`${url}${path}`, { headers, redirect: 'manual' });
    expect((await page()).status).toBe(401);
    expect((await page({ authorization: `Bearer ${WRITE}` })).status).toBe(401);
    // A key that does not open it leaves the URL (a write key must not stay in the browser's history).
    const wrong = await page({}, `/dashboard?key=${WRITE}`);
    expect(wrong.status).toBe(303);
    expect(wrong.headers.get('location')).toBe('/dashboard?wrong-key');
    expect(wrong.headers.get('set-cookie')).toBeNull();
    const told = await page({}, '/dashboard?wrong-key');
    expect(told.status).toBe(401);
    expect(await told.text()).toContain('That key does not open this dashboard');
    expect((await page({ authorization: `Bearer ${WRITE}` }, '/dashboard/snapshot')).status).toBe(401);
    const login = await page({}, `/dashboard?key=${READ}`);
    expect(login.status).toBe(303);
    expect(login.headers.get('location')).toBe('/dashboard');
    const cookie = login.headers.get('set-cookie')!;
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).toMatch(/SameSite=Strict/);
    const ok = await page({ cookie: cookie.split(';')[0]! });
    expect(ok.status).toBe(200);
    const html = await ok.text();
    expect(html).not.toContain(WRITE);
    const csp = ok.headers.get('content-security-policy')!;
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(ok.headers.get('x-content-type-options')).toBe('nosniff');
    expect(ok.headers.get('access-control-allow-origin')).toBeNull();
    // every script and style the page loads is served here
    for (const src of html.matchAll(/(?:src|href)="([^"]+)"/g)) {
      if (src[1] === 'data:,') continue; // the empty favicon
      expect(src[1]!.startsWith('/dashboard/assets/')).toBe(true);
      const asset = await fetch(`${url}${src[1]}`);
      expect(asset.status).toBe(200);
      expect((await asset.text()).length).toBeGreaterThan(100);
    }
    // CORS: a foreign origin gets no Access-Control-Allow-Origin
    const foreign = await fetch(`${url}/dashboard/snapshot`, { headers: { authorization: `Bearer ${READ}`, origin: 'https://evil.example' } });
    expect(foreign.status).toBe(200);
    expect(foreign.headers.get('access-control-allow-origin')).toBeNull();
    const listed = await fetch(`${url}/dashboard/snapshot`, { headers: { authorization: `Bearer ${READ}`, origin: 'https://grafana.example.com' } });
    expect(listed.headers.get('access-control-allow-origin')).toBe('https://grafana.example.com');
    expect(listed.headers.get('vary')).toBe('Origin');
    // the stream: no key → 401, foreign origin → 403
    const refused = async (headers: Record<string, string>): Promise<number> =>
      new Promise((resolve) => {
        const ws = new WebSocket(`${url.replace('http', 'ws')}/dashboard/stream`, { headers });
        ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        ws.on('open', () => {
          ws.close();
          resolve(101);
        });
      });
    expect(await refused({})).toBe(401);
    expect(await refused({ authorization: `Bearer ${WRITE}` })).toBe(401);
    expect(await refused({ authorization: `Bearer ${READ}`, origin: 'https://evil.example' })).toBe(403);
    expect(await refused({ authorization: `Bearer ${READ}`, origin: url })).toBe(101);
    expect(await refused({ authorization: `Bearer ${READ}`, origin: 'https://grafana.example.com' })).toBe(101);
  });

  it('pushes an init frame then ticks whose numbers are the ones /v1/live and /metrics report', async () => {
    const url = s.sluice.url;
    const frames: TickFrame[] = [];
    const ws = new WebSocket(`${url.replace('http', 'ws')}/dashboard/stream`, { headers: { authorization: `Bearer ${READ}` } });
    ws.on('message', (m) => frames.push(JSON.parse(String(m)) as TickFrame));
    await until(() => (frames.length > 0 ? true : undefined));
    expect(frames[0]!.kind).toBe('init');
    const series = (frames[0] as InitFrame).series;
    expect(series.acked.length).toBe(series.t.length);
    await postBatch(url, segmentBatch(40));
    // Once the engine has processed everything, a tick and /v1/live agree on the engine's totals.
    const live = await until(async () => {
      const l = (await (await fetch(`${url}/v1/live`)).json()) as { processedTotal: number; acceptedTotal: number };
      return l.processedTotal >= 40 ? l : undefined;
    });
    const tick = await until(() => frames.find((f) => f.kind === 'tick' && f.totals.processed === live.processedTotal && f.tail.length === 0 && f.totals.acked >= 40));
    expect(tick.totals.accepted).toBe(live.acceptedTotal);
    expect(tick.engine!.processedTotal).toBe(live.processedTotal);
    // The engine process exports its counters to /metrics about once a second: the same numbers, a moment later.
    const metrics = await until(async () => {
      const text = await (await fetch(`${url}/metrics`)).text();
      return metricValue(text, 'sluice_engine_events_processed_total') === tick.totals.processed ? text : undefined;
    });
    expect(metricValue(metrics, 'sluice_ingest_events_total{protocol="segment"}')).toBe(tick.totals.acked);
    expect(metricValue(metrics, 'sluice_alert_firing{alert="invalid_rate"}')).toBe(0);
    // the tail arrived in some tick: 40 sampled events with the write key nowhere in them
    const tail = frames.flatMap((f) => f.tail);
    expect(tail.filter((e) => e.user.startsWith('user-')).length).toBe(40);
    expect(JSON.stringify(frames)).not.toContain(WRITE);
    ws.close();
  });

  it('raises the invalid-rate alert on a burst of invalid events: on the stream, in /metrics and in the log', async () => {
    const url = s.sluice.url;
    await postBatch(url, segmentBatch(60, 1000));
    const res = await postBatch(url, segmentBatch(30, 2000, () => ({ userId: undefined })));
    expect((res.rejected as unknown[]).length).toBe(30);
    const frame = await until(async () => {
      const f = (await (await fetch(`${url}/dashboard/snapshot`, { headers: { authorization: `Bearer ${READ}` } })).json()) as TickFrame;
      return f.alerts.some((a) => a.name === 'invalid_rate') ? f : undefined;
    });
    expect(frame.quality.rejectedByCode.find((r) => r.code === 'missing_user')).toMatchObject({ window: 30, total: 30 });
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metricValue(metrics, 'sluice_alert_firing{alert="invalid_rate"}')).toBe(1);
    expect(metricValue(metrics, 'sluice_alerts_fired_total{alert="invalid_rate"}')).toBe(1);
    expect(metricValue(metrics, 'sluice_quality_rate{kind="invalid"}')).toBeGreaterThan(0.01);
    const line = s.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.alert === 'invalid_rate');
    expect(line).toMatchObject({ level: 40, alert: 'invalid_rate', threshold: 0.01 });
    expect(String(line!.msg)).toMatch(/^alert firing: invalid events/);
  });
  it('the Grafana dashboard in docs/ only queries metrics that /metrics exports', async () => {
    const dashboard = JSON.parse(readFileSync(new URL('../../docs/grafana-dashboard.json', import.meta.url), 'utf8')) as { panels: Array<{ targets?: Array<{ expr: string }> }> };
    const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
    expect(exprs.length).toBeGreaterThan(20);
    const exported = new Set([...(await (await fetch(`${s.sluice.url}/metrics`)).text()).matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!));
    const used = new Set(exprs.flatMap((e) => [...e.matchAll(/\bsluice_[a-z0-9_]+/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, ''))));
    expect([...used].filter((m) => !exported.has(m))).toEqual([]);
  });
});

describe('a dashboard that stops reading', () => {
  it('is disconnected at the backpressure limit, while a reading one stays connected', async () => {
    const s = await startServer({ tickMs: 20, maxBackpressureBytes: 256 * 1024, tailPerSecond: 2000, tailSize: 2000 });
    try {
      const url = s.sluice.url.replace('http', 'ws');
      const headers = { authorization: `Bearer ${READ}` };
      const reader = new WebSocket(`${url}/dashboard/stream`, { headers });
      let readerFrames = 0;
      reader.on('message', () => readerFrames++);
      const stalled = new WebSocket(`${url}/dashboard/stream`, { headers });
      let closed: number | undefined;
      stalled.on('close', (code) => (closed = code));
      // Stop reading after the init frame: the socket's bytes stay in the kernel, the server's buffer grows.
      // (The limit is generous so that the reader, in this busy test process, never trips it.)
      await new Promise<void>((resolve) => stalled.once('message', () => resolve()));
      (stalled as unknown as { _socket: { pause(): void } })._socket.pause();
      // Traffic makes every frame carry tail entries (a few KB each).
      const cutBefore = metricValue(await (await fetch(`${s.sluice.url}/metrics`)).text(), 'sluice_dashboard_disconnects_total{reason="backpressure"}') ?? 0; // process-wide counter
      let i = 0;
      await until(async () => {
        await postBatch(s.sluice.url, segmentBatch(200, (i += 200)));
        const metrics = await (await fetch(`${s.sluice.url}/metrics`)).text();
        return (metricValue(metrics, 'sluice_dashboard_disconnects_total{reason="backpressure"}') ?? 0) > cutBefore ? true : undefined;
      }, 1200);
      // Reading again, the client finds its connection closed.
      (stalled as unknown as { _socket: { resume(): void } })._socket.resume();
      await until(() => closed, 1200);
      expect(s.logs.some((l) => l.includes('dashboard client disconnected: it stopped reading'))).toBe(true);
      const before = readerFrames;
      await until(() => (readerFrames > before + 2 ? true : undefined));
      expect(reader.readyState).toBe(WebSocket.OPEN);
      const after = await (await fetch(`${s.sluice.url}/metrics`)).text();
      expect(metricValue(after, 'sluice_dashboard_disconnects_total{reason="backpressure"}')).toBe(cutBefore + 1);
      reader.close();
    } finally {
      await s.sluice.close();
      rmSync(s.dir, { recursive: true, force: true });
    }
  });
});
