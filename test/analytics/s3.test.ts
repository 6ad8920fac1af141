/**
 * An S3 lake (real s3rver on loopback): `sluice query` syncs only the partitions a query's time
 * bounds allow into the local cache, answers like the local lake, reuses the cache, and
 * `sluice quality` runs over S3 too.
 */
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openLakeQuery } from '../../analytics/query.js';
import { runQualityChecks } from '../../analytics/quality.js';
import { openObjectStore } from '../../storage/open-store.js';
import { startS3rver, type S3Server } from '../helpers/s3rver.js';
import { DAY, generateFixture, rowsToBatch, writeFixtureLake, type Fixture } from './fixture.js';
import { encodeParquet } from '../../storage/parquet.js';
import { hourlyMetricsSchema } from '../../common/schema.js';
import type { CommitRecord } from '../../storage/commit-record.js';

let s3: S3Server;
let f: Fixture;
let records: CommitRecord[];
const lake = 's3://lake/analytics';
const dirs: string[] = [];

beforeAll(async () => {
  s3 = await startS3rver('lake');
  f = generateFixture({ seed: 3, users: 40, days: 4 });
  const store = await openObjectStore(lake, { s3Endpoint: s3.endpoint });
  records = await writeFixtureLake(store, f, { flushMs: 24 * 3_600_000 });
  await store.close();
}, 180_000);

afterAll(async () => {
  await s3?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const cache = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'sluice-s3-cache-'));
  dirs.push(d);
  return d;
};
function cached(dir: string): string[] {
  const out: string[] = [];
  const walk = (p: string): void => {
    if (!existsSync(p)) return;
    for (const n of readdirSync(p)) {
      const q = join(p, n);
      if (statSync(q).isDirectory()) walk(q);
      else out.push(q.slice(dir.length + 1).split('\\').join('/'));
    }
  };
  walk(dir);
  return out.sort();
}
const committed = (prefix: string): string[] =>
  records
    .flatMap((r) => r.added.map((a) => a.key))
    .filter((k) => k.startsWith(prefix))
    .sort();

describe('S3 lake through the local cache', () => {
  it('downloads only the partitions a WHERE on event_time allows, and answers exactly', async () => {
    const dir = cache();
    const q = await openLakeQuery({ lake, s3Endpoint: s3.endpoint, cacheDir: dir });
    try {
      const day = Date.UTC(2026, 2, 3);
      const r = await q.run(`SELECT count(*) AS n, count(DISTINCT user_id) AS u FROM events WHERE event_time >= '2026-03-03' AND event_time < '2026-03-04'`);
      const want = f.events.filter((e) => e.event_time >= day && e.event_time < day + DAY);
      expect(r.rows[0]!.map(Number)).toEqual([want.length, new Set(want.map((e) => e.user_id)).size]);
      expect(cached(dir)).toEqual(committed('silver/events/year=2026/month=03/day=03/'));
      expect(q.lake.downloads.files).toBe(committed('silver/events/year=2026/month=03/day=03/').length);

      // Same partitions again: served from the cache.
      await q.run(`SELECT count(*) FROM events WHERE event_time >= '2026-03-03 06:00' AND event_time < '2026-03-03 18:00'`);
      expect(q.lake.downloads.files).toBe(committed('silver/events/year=2026/month=03/day=03/').length);

      // Partition columns prune too; a query without bounds syncs the whole table.
      await q.run('SELECT count(*) FROM hourly_metrics WHERE year = 2026 AND month = 3 AND day = 4');
      expect(cached(dir).filter((k) => k.startsWith('gold/'))).toEqual(committed('gold/hourly_metrics/year=2026/month=03/day=04/'));
      const all = await q.run('SELECT count(*) FROM events');
      expect(Number(all.rows[0]![0])).toBe(f.events.length);
      expect(cached(dir).filter((k) => k.startsWith('silver/'))).toEqual(committed('silver/events/'));
    } finally {
      await q.close();
    }
  });

  it('re-downloads a gold window rewritten in place under the same key', async () => {
    const dir = cache();
    const q = await openLakeQuery({ lake, s3Endpoint: s3.endpoint, cacheDir: dir });
    try {
      const sql = "SELECT sum(events) FROM hourly_metrics WHERE window_start = '2026-03-04 15:00' AND device_type = 'ALL' AND app_version = 'ALL' AND country = 'ALL'";
      const before = Number((await q.run(sql)).rows[0]![0]);
      expect(before).toBe(f.events.filter((e) => e.event_time >= Date.UTC(2026, 2, 4, 15) && e.event_time < Date.UTC(2026, 2, 4, 16)).length);
      // What reconciliation does: rewrite the window's file (here: every row twice) under its deterministic key.
      const key = committed('gold/hourly_metrics/year=2026/month=03/day=04/hour=15/')[0]!;
      const rows = f.hourly.filter((r) => r.window_start === Date.UTC(2026, 2, 4, 15));
      const store = await openObjectStore(lake, { s3Endpoint: s3.endpoint });
      const original = (await store.get(key))!;
      try {
        await store.put(key, encodeParquet([rowsToBatch(hourlyMetricsSchema, [...rows, ...rows] as unknown as Array<Record<string, unknown>>)]));
        expect(Number((await q.run(sql)).rows[0]![0])).toBe(2 * before);
      } finally {
        await store.put(key, original);
        await store.close();
      }
    } finally {
      await q.close();
    }
  });

  it('canned metrics read only their declared window and match the ground truth', async () => {
    const dir = cache();
    const q = await openLakeQuery({ lake, s3Endpoint: s3.endpoint, cacheDir: dir });
    try {
      const r = await q.metric('dau', { from: '2026-03-04', to: '2026-03-05' });
      const got = r.rows.map((row) => `${(row[0] as Date).toISOString().slice(0, 10)}:${Number(row[1])}`);
      const want = [Date.UTC(2026, 2, 4), Date.UTC(2026, 2, 5)].map((d) => `${new Date(d).toISOString().slice(0, 10)}:${new Set(f.events.filter((e) => e.event_time >= d && e.event_time < d + DAY).map((e) => e.user_id)).size}`);
      expect(got).toEqual(want);
      expect(cached(dir)).toEqual([...committed('silver/events/year=2026/month=03/day=04/'), ...committed('silver/events/year=2026/month=03/day=05/')]);
    } finally {
      await q.close();
    }
  });

  it('quality checks pass on the S3 lake', async () => {
    const r = await runQualityChecks({ lake, s3Endpoint: s3.endpoint, cacheDir: cache(), now: f.lastReceived + 60_000 });
    expect(r.checks.filter((c) => c.status === 'fail').map((c) => `${c.name}: ${c.problems.join('; ')}`)).toEqual([]);
    expect(r.checks.find((c) => c.name === 'files')!.summary).toMatch(/^\d+ files, each added by a commit record/);
  });
});
