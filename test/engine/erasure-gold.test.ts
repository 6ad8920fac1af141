/**
 * Erasure's gold correction by subtraction, on the real server (inline engine): a user who shares
 * gold cells with others (and has cells of their own: a device and a country no one else sends
 * from) is erased after their hourly and daily windows were merged. Then, cell by cell against gold
 * before the erase: every cell the user was not in is unchanged; in every cell they were in, each
 * count went down by exactly their part (taken from silver before the erase) and active_users by
 * exactly 1; the cells only they had are gone. Gold equals a DuckDB recomputation from silver
 * (daily ratios included, to the bit), and the job subtracted every window rather than
 * recomputing it (engine/erasure-job.ts correctGold).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { composeServeConfig } from '../../cli/config.js';
import { startSluice } from '../../cli/serve.js';
import { goldMetricsSql } from '../../engine/gold-sql.js';
import type { ErasureJob } from '../../storage/erasure-store.js';
import { checkpointRound, eraseAndWait, postJson, segmentEvents } from '../helpers/erasure.js';
import { openLakeReader, untilDailyWindowMerged, type LakeReader } from '../helpers/lake.js';

const ev = segmentEvents('g-');
const A = 'erase-gold-user-P5t';
const ADMIN = 'admin-gold-key';
const MIN = 60_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;
const D = Math.floor(Date.now() / DAY) * DAY - 2 * DAY;
const others = Array.from({ length: 12 }, (_, i) => `gold-other-${i}`);
const COUNTS = ['events', 'active_users', 'installs', 'sessions', 'screen_views', 'notification_views', 'notification_opens'] as const;

const root = mkdtempSync(join(tmpdir(), 'sluice-erase-gold-'));
afterAll(() => {
  if (!process.env.KEEP_LAKE) rmSync(root, { recursive: true, force: true });
});

const ctx = (device: string, country: string): Record<string, unknown> => ({ context: { device: { type: device }, app: { version: '2.1' }, location: { country } } });

/** Day D: the others in every hour 1–4 (ios or android, DE; some with one-event sessions), A in hours 1–3. */
function traffic(): Array<ReturnType<typeof ev>> {
  const out: Array<ReturnType<typeof ev>> = [];
  others.forEach((u, i) => {
    const c = ctx(i % 2 ? 'ios' : 'android', 'DE');
    for (let h = 1; h <= 4; h++) {
      const t = D + h * HOUR + (i % 7) * MIN;
      const minutes = i % 3 === 0 && h === 4 ? [0] : [0, 5, 10 + i];
      // Odd milliseconds: session durations whose mean is not a round number (the daily ratio's bits matter).
      minutes.forEach((m, k) => out.push(ev(u, t + m * MIN + k * (1_337 + 211 * i), { ...c, event: k === 1 ? 'Push Notification Tapped' : k === 2 && i % 4 === 0 ? 'Application Installed' : 'Push Notification Received' })));
    }
  });
  // A: shares ios/DE cells in hours 1 and 2 (one session each), alone in hour 3 (tablet, FR: a one-event session).
  const ios = ctx('ios', 'DE');
  for (const m of [2, 7, 12]) out.push(ev(A, D + HOUR + m * MIN + m * 977, { ...ios, event: m === 7 ? 'Push Notification Tapped' : 'Push Notification Received' }));
  for (const m of [3, 8]) out.push(ev(A, D + 2 * HOUR + m * MIN, { ...ios, event: 'Application Installed' }));
  out.push(ev(A, D + 3 * HOUR + 20 * MIN, ctx('tablet', 'FR')));
  return out;
}

type Row = Record<string, unknown>;
const cell = (r: Row): string => `${String(r.device_type)}/${String(r.app_version)}/${String(r.country)}`;
const plain = (r: Row): Row => Object.fromEntries(Object.entries(r).filter(([k]) => !['year', 'month', 'day', 'hour'].includes(k)).map(([k, v]) => [k, typeof v === 'bigint' ? Number(v) : v instanceof Date ? v.getTime() : v]));
const byCell = (rows: Row[]): Map<string, Row> => new Map(rows.map((r) => [cell(r), plain(r)]));

const windows: Array<readonly ['hourly' | 'daily', number]> = [...[1, 2, 3, 4].map((h) => ['hourly', D + h * HOUR] as const), ['daily', D] as const];

async function gold(lake: LakeReader, g: 'hourly' | 'daily', start: number): Promise<Map<string, Row>> {
  return byCell(await lake.rows(`SELECT * FROM ${lake.rel(g === 'hourly' ? 'hourly_metrics' : 'daily_metrics')} WHERE epoch_ms(window_start) = ${start}`));
}

describe('erasure gold correction', () => {
  it("subtracts the user's part from shared cells, drops cells only they had, and gold equals silver recomputed", async () => {
    const d = { data: join(root, 'data'), lake: join(root, 'lake') };
    const s = await startSluice(
      composeServeConfig({ port: 0, data: d.data, lake: d.lake, shards: 2, workers: 1, flushInterval: '250ms', allowedLateness: '10m', sessionGap: '30m', engineMode: 'inline', compression: 'none', writeKeys: ['wk-gold'], adminKeys: [ADMIN] }, {}),
      pino({ level: 'warn' }),
    );
    const before = new Map<string, Map<string, Row>>();
    const part = new Map<string, Map<string, Row>>();
    let id = '';
    try {
      expect((await postJson(s.url, '/v1/batch', { batch: traffic() }, 'wk-gold')).status).toBe(200);
      // The watermark passes day D: its hourly and daily windows are emitted and merged.
      expect((await postJson(s.url, '/v1/batch', { batch: [...others, A].map((u) => ev(u, Date.now() - MIN)) }, 'wk-gold')).status).toBe(200);
      expect(await untilDailyWindowMerged(d.lake, D, () => checkpointRound(s)), 'daily window D merged').toBe(true);

      const lake = await openLakeReader(d.lake);
      try {
        const mine = `(SELECT * FROM ${lake.rel('events')} WHERE user_id = '${A}')`;
        for (const [g, start] of windows) {
          before.set(`${g}/${start}`, await gold(lake, g, start));
          part.set(`${g}/${start}`, byCell(await lake.rows(goldMetricsSql(g, mine, start, start + (g === 'hourly' ? HOUR : DAY)))));
        }
      } finally {
        lake.close();
      }
      // The fixture does what it says: A shares cells, and has cells of their own.
      const day = before.get(`daily/${D}`)!;
      expect(Number(day.get('ALL/ALL/ALL')!.active_users)).toBe(others.length + 1);
      expect(day.get('tablet/ALL/FR')!.events).toBe(1);
      expect(part.get(`hourly/${D + HOUR}`)!.get('ios/2.1/DE')!.events).toBe(3);

      const erased = await eraseAndWait(s.url, ADMIN, [A], 'gold subtraction test', () => checkpointRound(s));
      id = erased.id;
      expect(erased.state).toBe('done');
    } finally {
      await s.close();
    }

    const job = JSON.parse(readFileSync(join(d.data, 'erasure', 'jobs', `${id}.json`), 'utf8')) as ErasureJob;
    for (const [g, start] of windows.filter(([g, start]) => g === 'daily' || start < D + 4 * HOUR)) expect(job.gold?.[`${g}/${start}`]?.how, `${g} ${start}`).toBe('subtracted');

    const lake = await openLakeReader(d.lake);
    try {
      for (const [g, start] of windows) {
        const w = `${g}/${start}`;
        const after = await gold(lake, g, start);
        const mine = part.get(w)!;
        for (const [c, b] of before.get(w)!) {
          const p = mine.get(c);
          if (!p) {
            expect(after.get(c), `${w} ${c}: not A's, unchanged`).toEqual(b);
            continue;
          }
          if (p.events === b.events) {
            expect(after.has(c), `${w} ${c}: only A's, gone`).toBe(false);
            continue;
          }
          const a = after.get(c)!;
          expect(a.active_users, `${w} ${c}`).toBe((b.active_users as number) - 1);
          for (const f of COUNTS) expect(a[f], `${w} ${c} ${f}`).toBe((b[f] as number) - (p[f] as number));
        }
        expect([...after.keys()].filter((c) => !before.get(w)!.has(c))).toEqual([]);
        // Gold equals its recomputation from silver, to the bit (daily ratios included).
        const recomputed = byCell(await lake.rows(goldMetricsSql(g, lake.rel('events'), start, start + (g === 'hourly' ? HOUR : DAY))));
        expect(Object.fromEntries(after), w).toEqual(Object.fromEntries(recomputed));
      }
      expect((await gold(lake, 'daily', D)).has('tablet/ALL/FR')).toBe(false);
      expect((await gold(lake, 'hourly', D + 3 * HOUR)).has('ALL/ALL/FR')).toBe(false);
      expect(Number((await gold(lake, 'daily', D)).get('ALL/ALL/ALL')!.active_users)).toBe(others.length);
    } finally {
      lake.close();
    }
  }, 240_000);
});
