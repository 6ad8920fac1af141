/**
 * End to end through the real server, pool, LMDB and Parquet: known traffic in, then silver,
 * bronze, DLQ, sessions and gold checked with DuckDB against the traffic's ground truth and
 * against gold recomputed from silver (invariant 4).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { composeServeConfig } from '../../cli/config.js';
import { startSluice, type RunningSluice } from '../../cli/serve.js';
import { goldMetricsSql } from '../../engine/gold-sql.js';
import { readFrontier, reconcileLate } from '../../engine/reconcile.js';
import { openObjectStore } from '../../storage/open-store.js';
import { openLakeReader } from '../helpers/lake.js';

const T0 = Date.UTC(2026, 2, 1, 10, 0, 0);
const MIN = 60_000;

interface SentEvent {
  messageId: string;
  userId?: string;
  type: 'track' | 'screen';
  event?: string;
  name?: string;
  timestamp: string;
  context: Record<string, unknown>;
  properties: Record<string, unknown>;
}

/** Deterministic traffic: 24 users, sessions 45 min apart from 10:00 to 16:00, a few events each. */
function traffic(): { valid: SentEvent[]; invalid: SentEvent[]; tooLate: SentEvent[] } {
  const valid: SentEvent[] = [];
  const types = ['Application Opened', 'screen', 'Product Clicked', 'Push Notification Received', 'Push Notification Tapped'];
  for (let u = 0; u < 24; u++) {
    const ctx = {
      device: { type: ['ios', 'android', 'web'][u % 3] },
      os: { name: ['iOS', 'Android', 'Web'][u % 3] },
      app: { version: u % 2 ? '4.0.0' : '3.9.1' },
      location: { country: ['DE', 'US', 'BR', 'IN'][u % 4] },
    };
    let t = T0 + u * 2 * MIN;
    let n = 0;
    while (t < T0 + 6 * 60 * MIN) {
      const eventsInSession = 1 + ((u + n) % 5);
      for (let k = 0; k < eventsInSession; k++) {
        const kind = n === 0 ? 'Application Installed' : types[(u + n + k) % types.length]!;
        const base = { messageId: `m-${u}-${n}`, userId: `user-${u}`, timestamp: new Date(t).toISOString(), context: ctx, properties: { k, plan: 'free' } };
        valid.push(kind === 'screen' ? { ...base, type: 'screen', name: `Screen${k % 3}` } : { ...base, type: 'track', event: kind });
        n++;
        t += (1 + ((u * 7 + n) % 4)) * MIN;
      }
      t += 45 * MIN;
    }
  }
  valid.sort((a, b) => Date.parse(a.timestamp) - Date.parse(b.timestamp) || a.messageId.localeCompare(b.messageId));
  const invalid: SentEvent[] = [0, 1, 2, 3, 4].map((i) => ({
    messageId: `bad-${i}`,
    type: 'track',
    event: 'Broken',
    timestamp: new Date(T0 + i * MIN).toISOString(),
    context: {},
    properties: {},
  }));
  const tooLate: SentEvent[] = [0, 1, 2].map((i) => ({
    messageId: `late-${i}`,
    userId: `user-${i}`,
    type: 'track',
    event: 'Push Notification Tapped',
    timestamp: new Date(T0 + 30 * MIN + i).toISOString(),
    context: { device: { type: 'ios' }, app: { version: '4.0.0' }, location: { country: 'DE' } },
    properties: {},
  }));
  return { valid, invalid, tooLate };
}

async function postBatch(s: RunningSluice, batch: SentEvent[]): Promise<{ status: number; body: { accepted: number; rejected: unknown[] } }> {
  const res = await fetch(`${s.url}/v1/batch`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Basic ${Buffer.from(`${s.writeKey}:`).toString('base64')}` },
    body: JSON.stringify({ batch }),
  });
  return { status: res.status, body: (await res.json()) as { accepted: number; rejected: unknown[] } };
}

const dirs: string[] = [];
function tempDirs(): { data: string; lake: string } {
  const root = mkdtempSync(join(tmpdir(), 'sluice-e2e-'));
  dirs.push(root);
  return { data: join(root, 'data'), lake: join(root, 'lake') };
}
afterAll(() => {
  if (!process.env.KEEP_LAKE) for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function config(d: { data: string; lake: string }) {
  return composeServeConfig({ port: 0, data: d.data, lake: d.lake, shards: 4, workers: 2, flushInterval: '200ms', writeKeys: ['test-key'] }, {});
}

const quiet = pino({ level: 'warn' });

describe('pipeline end to end', () => {
  it('lands every valid unique event once in silver, keeps bronze and DLQ, and gold equals silver recomputed', async () => {
    const d = tempDirs();
    const { valid, invalid, tooLate } = traffic();
    const sluice = await startSluice(config(d), quiet);
    let accepted = 0;
    let duplicatesSent = 0;
    // In order, 40 per request, with every 9th event retried in the next request and the invalid ones mixed in.
    for (let i = 0; i < valid.length; i += 40) {
      const batch = valid.slice(i, i + 40);
      const retries = valid.slice(Math.max(0, i - 40), i).filter((_, k) => k % 9 === 0);
      duplicatesSent += retries.length;
      const extra = i === 0 ? invalid : [];
      const r = await postBatch(sluice, [...batch, ...retries, ...extra]);
      expect(r.status).toBe(200);
      expect(r.body.rejected).toHaveLength(extra.length);
      accepted += r.body.accepted;
    }
    const late = await postBatch(sluice, tooLate);
    expect(late.status).toBe(200);
    accepted += late.body.accepted;
    expect(accepted).toBe(valid.length + duplicatesSent + tooLate.length);
    await sluice.close();

    // The stop reconciled: the too-late events' hour was rewritten from silver (checked below, with
    // every hour); their late/ files stay until their day's window is merged too, and name
    // themselves folded in, so another run has nothing to redo.
    const store = await openObjectStore(d.lake);
    const lateFiles = (await store.list('late/')).filter((o) => o.key.endsWith('.parquet')).map((o) => o.key);
    expect(lateFiles.length).toBeGreaterThan(0);
    expect(lateFiles.every((k) => k.includes('/hour=10/'))).toBe(true);
    const reconciled = await reconcileLate(store);
    expect(reconciled).toEqual({ hourlyWindows: [], dailyWindows: [], lateFilesRemoved: 0 });
    // A new late file in that hour (a later too-late event) makes the next run rewrite that hour, and only it.
    await store.put(lateFiles[0]!.replace(/part-[^/]+$/, 'part-s9-0-0.parquet'), (await store.get(lateFiles[0]!))!);
    expect(await reconcileLate(store)).toEqual({ hourlyWindows: [T0], dailyWindows: [], lateFilesRemoved: 0 });
    expect((await reconcileLate(store)).hourlyWindows).toEqual([]);
    // Once the day is ready too (a frontier past its end), the day is rewritten and the late files
    // go, the hour's having been folded in by earlier runs.
    const frontier = (await readFrontier(store))!;
    const dayStart = T0 - (T0 % 86_400_000);
    const lateLeft = (await store.list('late/')).filter((o) => o.key.endsWith('.parquet')).length;
    expect(await reconcileLate(store, { frontier: { ...frontier, emittedMs: dayStart + 2 * 86_400_000, emittedDailyMs: dayStart + 2 * 86_400_000 } })).toEqual({ hourlyWindows: [], dailyWindows: [dayStart], lateFilesRemoved: lateLeft });
    expect((await store.list('late/')).filter((o) => o.key.endsWith('.parquet'))).toEqual([]);
    await store.close();

    const lake = await openLakeReader(d.lake);
    try {
      // Silver: every valid unique event exactly once (too-late ones included).
      const silver = await lake.rows<{ event_id: string; n: bigint }>(`SELECT event_id, count(*) AS n FROM ${lake.rel('events')} GROUP BY event_id`);
      const expectedIds = new Set([...valid, ...tooLate].map((e) => e.messageId));
      expect(silver.length).toBe(expectedIds.size);
      for (const row of silver) {
        expect(expectedIds.has(row.event_id), row.event_id).toBe(true);
        expect(Number(row.n), row.event_id).toBe(1);
      }
      // Bronze keeps every accepted row, duplicates included; the DLQ keeps every rejected one with its reason.
      const [bronze] = await lake.rows<{ n: bigint }>(`SELECT count(*) AS n FROM ${lake.rel('bronze_events')}`);
      expect(Number(bronze!.n)).toBe(accepted);
      const dlq = await lake.rows<{ code: string; raw: string }>(`SELECT code, raw FROM ${lake.rel('dlq')} ORDER BY raw`);
      expect(dlq).toHaveLength(invalid.length);
      for (const row of dlq) {
        expect(row.code).toBeTruthy();
        expect(row.raw).toContain('bad-');
      }
      // Sessions: each gold session matches its silver events.
      const mismatched = await lake.rows(`
        WITH s AS (SELECT session_id, min(event_time) AS st, max(event_time) AS en, count(*) AS n FROM ${lake.rel('events')} GROUP BY session_id)
        SELECT g.session_id FROM ${lake.rel('sessions')} g JOIN s USING (session_id)
        WHERE g.session_start <> s.st OR g.session_end <> s.en OR g.event_count <> s.n OR g.bounce <> (s.n = 1)`);
      expect(mismatched).toEqual([]);
      const [sessions] = await lake.rows<{ n: bigint }>(`SELECT count(*) AS n FROM ${lake.rel('sessions')}`);
      expect(Number(sessions!.n)).toBeGreaterThan(24);

      // Gold hourly equals recomputation from silver, window by window.
      const windows = await lake.rows<{ w: number }>(`SELECT DISTINCT epoch_ms(window_start) AS w FROM ${lake.rel('hourly_metrics')} ORDER BY w`);
      expect(windows.length).toBeGreaterThanOrEqual(3);
      const norm = (rows: Array<Record<string, unknown>>): string[] =>
        rows.map((r) => JSON.stringify(Object.fromEntries(Object.entries(r).filter(([k]) => !['year', 'month', 'day', 'hour'].includes(k)).map(([k, v]) => [k, typeof v === 'bigint' ? Number(v) : v instanceof Date ? v.getTime() : v])))).sort();
      for (const { w } of windows) {
        const gold = await lake.rows(`SELECT * EXCLUDE (year, month, day, hour) FROM ${lake.rel('hourly_metrics')} WHERE epoch_ms(window_start) = ${Number(w)}`);
        const recomputed = await lake.rows(goldMetricsSql('hourly', lake.rel('events'), Number(w), Number(w) + 3_600_000));
        expect(norm(gold), `hour ${new Date(Number(w)).toISOString()}`).toEqual(norm(recomputed));
      }
    } finally {
      lake.close();
    }
  });

  it('keeps exactly-once across a restart: retries of events seen before the restart are dropped', async () => {
    const d = tempDirs();
    const { valid } = traffic();
    const half = Math.floor(valid.length / 2);
    let s = await startSluice(config(d), quiet);
    for (let i = 0; i < half; i += 50) expect((await postBatch(s, valid.slice(i, Math.min(half, i + 50)))).status).toBe(200);
    await s.close();
    s = await startSluice(config(d), quiet);
    // The whole stream again: the first half are client retries across the restart.
    for (let i = 0; i < valid.length; i += 50) expect((await postBatch(s, valid.slice(i, i + 50))).status).toBe(200);
    await s.close();
    const lake = await openLakeReader(d.lake);
    try {
      const [r] = await lake.rows<{ n: bigint; u: bigint }>(`SELECT count(*) AS n, count(DISTINCT event_id) AS u FROM ${lake.rel('events')}`);
      expect(Number(r!.n)).toBe(valid.length);
      expect(Number(r!.u)).toBe(valid.length);
    } finally {
      lake.close();
    }
  });
});
