/**
 * `sluice quality` both ways: a healthy synthetic lake passes every check, and each kind of
 * damage (deleted file, copied file, stale gold partition, stale lake, wrong stats, too many late
 * or invalid events, a traffic spike, new names) fails (or warns) with a message naming it.
 */
import { copyFileSync, cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatReport, robustZ, runQualityChecks, type QualityOptions, type QualityReport } from '../../analytics/quality.js';
import { partitionOf } from '../../common/lake-layout.js';
import { writeCommitRecord, type CommitRecord } from '../../storage/commit-record.js';
import { LocalObjectStore } from '../../storage/local-store.js';
import { applyRetention } from '../../storage/compact.js';
import { DAY, generateFixture, HOUR, rowsToBatch, writeFixtureLake, type Fixture, type FixtureOptions, type WriteOptions } from './fixture.js';
import { hourlyMetricsSchema, silverSchema } from '../../common/schema.js';
import { decodeParquet, encodeParquet } from '../../storage/parquet.js';

const dirs: string[] = [];
const tmp = (name: string): string => {
  const d = mkdtempSync(join(tmpdir(), `sluice-quality-${name}-`));
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function lake(name: string, fo: FixtureOptions = {}, wo: WriteOptions = {}): Promise<{ dir: string; f: Fixture }> {
  const dir = tmp(name);
  const f = generateFixture({ seed: 7, ...fo });
  const store = new LocalObjectStore(dir);
  await writeFixtureLake(store, f, wo);
  await store.close();
  return { dir, f };
}

let healthy: { dir: string; f: Fixture };
beforeAll(async () => {
  healthy = await lake('healthy');
}, 120_000);

const check = (r: QualityReport, name: string) => {
  const c = r.checks.find((x) => x.name === name);
  if (!c) throw new Error(`no check ${name} in ${JSON.stringify(r.checks.map((x) => x.name))}`);
  return c;
};
const failing = (r: QualityReport): string[] => r.checks.filter((c) => c.status === 'fail').map((c) => c.name);
const run = (dir: string, f: Fixture, o: Partial<QualityOptions> = {}): Promise<QualityReport> => runQualityChecks({ lake: dir, now: f.lastReceived + 10 * 60_000, ...o });
const escape = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const copy = (name: string): string => {
  const d = tmp(name);
  cpSync(healthy.dir, d, { recursive: true });
  return d;
};
function files(dir: string, sub: string): string[] {
  const out: string[] = [];
  const walk = (p: string): void => {
    for (const n of readdirSync(p)) {
      const q = join(p, n);
      if (statSync(q).isDirectory()) walk(q);
      else if (n.endsWith('.parquet')) out.push(q);
    }
  };
  walk(join(dir, sub));
  return out.sort();
}
const keyOf = (dir: string, path: string): string => path.slice(dir.length + 1).split('\\').join('/');

describe('a healthy lake', () => {
  it('passes every check, with the accounting spelled out', async () => {
    const { dir, f } = healthy;
    // A small lake: judge hours from 10 events/users up, so the anomaly detector has work to do.
    const r = await run(dir, f, { anomalyMinVolume: 10 });
    expect(r.checks.map((c) => `${c.name}:${c.status}`)).toEqual([
      'files:pass', 'completeness:pass', 'uniqueness:pass', 'freshness:pass', 'gold:pass', 'sessions:pass', 'late rate:pass', 'invalid rate:pass', 'anomalies:pass', 'schema drift:pass',
    ]);
    expect(r.ok).toBe(true);
    const dups = f.bronze.filter((b) => b.duplicate).length;
    expect(check(r, 'completeness').summary).toBe(
      `bronze ${f.bronze.length} = silver ${f.events.length} + duplicates ${dups} in every receive hour, matching ${check(r, 'completeness').details!.flushRecords} flush records; ${f.dlq.length} rejected to the DLQ`,
    );
    expect(check(r, 'anomalies').details!.judged).toBeGreaterThan(20);
    expect(check(r, 'gold').details!.windows).toBeGreaterThan(100);
    expect(formatReport(r)).toMatch(/^Data quality of .* as of .*: OK\n {2}PASS {2}files/);
  });
});

describe('damage', () => {
  it('a deleted file fails files (naming it) and completeness (naming the hour)', async () => {
    const dir = copy('deleted');
    const victim = files(dir, 'silver/events')[5]!;
    unlinkSync(victim);
    const r = await run(dir, healthy.f);
    expect(r.ok).toBe(false);
    expect(check(r, 'files').problems).toEqual([expect.stringMatching(new RegExp(`^missing file: ${keyOf(dir, victim)} \\(added by commit record s\\d-\\d+-\\d+, not in the lake\\)$`))]);
    expect(check(r, 'completeness').problems[0]).toMatch(/^receive hour .*: bronze \d+ ≠ silver \d+ \+ duplicates \d+ \(\d+ events missing from silver\)$/);
  });

  // Truncated (a copy cut short: the footer is gone) or overwritten inside (the footer reads, the pages do not).
  it.each(['truncated', 'empty', 'overwritten'] as const)('a damaged file (%s) fails files, naming it; the other checks run without it and count its rows as missing', async (how) => {
    const dir = copy(`damaged-${how}`);
    const victim = files(dir, 'silver/events')[4]!;
    const bytes = readFileSync(victim);
    const rows = (await decodeParquet(bytes)).numRows;
    if (how === 'truncated') writeFileSync(victim, bytes.subarray(0, bytes.length >> 1));
    else if (how === 'empty') writeFileSync(victim, '');
    else {
      const footer = bytes.readUInt32LE(bytes.length - 8);
      bytes.fill(0x41, 4, bytes.length - 8 - footer);
      writeFileSync(victim, bytes);
    }
    const r = await run(dir, healthy.f);
    expect(r.ok).toBe(false);
    expect(check(r, 'files').problems).toEqual([expect.stringMatching(new RegExp(`^damaged file: ${keyOf(dir, victim)} cannot be read \\(.+\\); the other checks leave it out`))]);
    expect(r.checks.map((c) => c.name)).toEqual(['files', 'completeness', 'uniqueness', 'freshness', 'gold', 'sessions', 'late rate', 'invalid rate', 'anomalies', 'schema drift']);
    expect(check(r, 'completeness').problems).toContainEqual(expect.stringMatching(new RegExp(`\\(${rows} events? missing from silver\\)$`)));
    expect(check(r, 'uniqueness').status).toBe('pass');
  });

  it('a duplicated file (same rows under a new name) fails files, uniqueness and completeness', async () => {
    const dir = copy('copied');
    const source = files(dir, 'silver/events')[3]!;
    const dup = source.replace(/\.parquet$/, '-copy.parquet');
    copyFileSync(source, dup);
    const r = await run(dir, healthy.f);
    expect(failing(r)).toEqual(['files', 'completeness', 'uniqueness', 'gold']);
    expect(check(r, 'files').problems).toEqual([`file not in any commit record: ${keyOf(dir, dup)} (a stray or copied file; readers of the commit records ignore it, glob readers double-count it)`]);
    expect(check(r, 'uniqueness').problems[0]).toMatch(/^event_id e\d+ appears 2 times in silver$/);
    expect(check(r, 'completeness').problems[0]).toMatch(/rows too many in silver\)$/);
  });

  it('a stale gold partition (silver has events gold never counted) fails gold, naming the partition', async () => {
    const { f } = healthy;
    const victim = f.events.find((e) => e.event_time >= f.start + 4 * DAY + 14 * HOUR && e.event_type === 'Application Opened')!;
    const hour = Math.floor(victim.event_time / HOUR) * HOUR;
    const { dir } = await lake('stale-gold', {}, { goldExcludes: (e) => e.event_id === victim.event_id });
    const r = await run(dir, f);
    expect(failing(r)).toEqual(['gold']);
    const silver = f.events.filter((e) => e.event_time >= hour && e.event_time < hour + HOUR);
    const silverUsers = new Set(silver.map((e) => e.user_id)).size;
    const goldUsers = new Set(silver.filter((e) => e !== victim).map((e) => e.user_id)).size;
    const usersPart = goldUsers === silverUsers ? '' : `, active_users ${goldUsers} in gold vs ${silverUsers} in silver`;
    expect(check(r, 'gold').problems[0]).toBe(`stale partition gold/hourly_metrics/${partitionOf(hour, 'hour')}: events ${silver.length - 1} in gold vs ${silver.length} in silver${usersPart}`);
    expect(check(r, 'gold').problems[1]).toMatch(new RegExp(`^stale partition gold/daily_metrics/${partitionOf(hour, 'day')}: events \\d+ in gold vs \\d+ in silver`));

    // The same window with the event waiting in late/ only warns: reconciliation will fix it.
    const store = new LocalObjectStore(dir);
    const { late: _l, shard: _s, ...row } = victim;
    const key = `late/${partitionOf(hour, 'hour')}/part-s0-9-9.parquet`;
    const body = encodeParquet([rowsToBatch(silverSchema, [row as unknown as Record<string, unknown>])]);
    await store.put(key, body);
    await writeCommitRecord(store, { id: 's0-late', time: new Date(f.lastReceived).toISOString(), kind: 'flush', shard: 0, added: [{ key, rows: 1, bytes: body.byteLength }], removed: [] });
    await store.close();
    const r2 = await run(dir, f);
    expect(r2.ok).toBe(true);
    expect(check(r2, 'gold').status).toBe('warn');
    expect(check(r2, 'gold').problems[0]).toMatch(/\(1 late events await reconciliation: run sluice reconcile\)$/);
  });

  it('a missing gold partition fails gold as well as files', async () => {
    const dir = copy('gold-missing');
    const victim = files(dir, 'gold/hourly_metrics')[30]!;
    unlinkSync(victim);
    const r = await run(dir, healthy.f);
    const part = keyOf(dir, victim).replace(/\/part-w\d+\.parquet$/, '');
    expect(check(r, 'gold').problems).toEqual([expect.stringMatching(new RegExp(`^missing partition ${part}: silver has \\d+ events in this hour, gold has no row$`))]);
    expect(check(r, 'files').status).toBe('fail');
  });

  it('a lake no traffic reached for hours fails freshness of bronze and silver; gold, caught up with silver, is fresh', async () => {
    const { dir, f } = healthy;
    const r = await run(dir, f, { now: f.lastReceived + 3 * HOUR });
    expect(failing(r)).toEqual(['freshness']);
    expect(check(r, 'freshness').problems).toEqual([
      `bronze is stale: newest event received ${new Date(f.lastReceived).toISOString()}, 3 h before ${new Date(f.lastReceived + 3 * HOUR).toISOString()} (limit 1 h)`,
      expect.stringMatching(/^silver is stale: newest event received .*, 3 h before/),
    ]);
    const fresh = await run(dir, f, { now: f.lastReceived + 3 * HOUR, maxStalenessMs: 4 * HOUR });
    expect(check(fresh, 'freshness').status).toBe('pass');
  });

  it('with the lake\'s frontier, sessions are compared too (by the engine\'s count), and windows not emitted yet are not missing', async () => {
    const dir = copy('frontier');
    const { f } = healthy;
    const store = new LocalObjectStore(dir);
    const frontier = (emittedMs: number) => store.put('_sluice/frontier.json', Buffer.from(JSON.stringify({ emittedMs, emittedDailyMs: emittedMs, sessionGapMs: 30 * 60_000 })));
    await frontier(f.start + 400 * DAY);
    expect(check(await run(dir, f), 'gold').status).toBe('pass');
    // One session too many in an hour of gold.
    const victim = files(dir, 'gold/hourly_metrics')[40]!;
    const rows = decodeParquet(new Uint8Array(readFileSync(victim))).toArray().map((r) => Object.fromEntries(Object.entries(r.toJSON() as Record<string, unknown>).map(([k, v]) => [k, typeof v === 'bigint' ? Number(v) : v])));
    for (const r of rows) r.sessions = Number(r.sessions) + 1;
    writeFileSync(victim, encodeParquet([rowsToBatch(hourlyMetricsSchema, rows)]));
    const stale = await run(dir, f);
    expect(check(stale, 'gold').problems).toEqual([expect.stringMatching(/^stale partition gold\/hourly_metrics\/\S+: sessions (\d+) in gold vs (\d+) in silver$/)]);
    // A missing daily window the engine has not emitted (its day held until its sessions close) is pending, not missing.
    const dayStart = Math.floor((f.start + 2 * DAY) / DAY) * DAY;
    unlinkSync(files(dir, 'gold/daily_metrics').find((p) => p.includes(`/${partitionOf(dayStart, 'day')}/`))!);
    await frontier(dayStart);
    expect(check(await run(dir, f), 'gold').problems.filter((p) => p.includes('daily_metrics'))).toEqual([]);
    await frontier(dayStart + DAY);
    expect(check(await run(dir, f), 'gold').problems.filter((p) => p.includes('daily_metrics'))).toEqual([expect.stringMatching(/^missing partition gold\/daily_metrics\//)]);
    await store.close();
  });

  it('with the lake\'s frontier, gold\'s sessions are compared with sessions recomputed from silver\'s event times: a wrong count, a lost, a doubled and a split session are named', async () => {
    const dir = copy('sessions');
    const { f } = healthy;
    const store = new LocalObjectStore(dir);
    await store.put('_sluice/frontier.json', Buffer.from(JSON.stringify({ emittedMs: f.start + 400 * DAY, emittedDailyMs: f.start + 400 * DAY, sessionGapMs: 30 * 60_000 })));
    await store.close();
    const healthyReport = check(await run(dir, f), 'sessions');
    expect(healthyReport.status, healthyReport.problems.join('\n')).toBe('pass');
    expect(healthyReport.summary).toMatch(/^closed sessions \(ending before \S+; \d+ rows in sessions\) equal a recomputation from silver's event times with the 30-minute gap$/);
    // Damage one sessions file: one count off, one session gone, one doubled, one cut in two.
    const victim = files(dir, 'gold/sessions')[3]!;
    const table = decodeParquet(new Uint8Array(readFileSync(victim)));
    const rows = table.toArray().map((r) => Object.fromEntries(Object.entries(r.toJSON() as Record<string, unknown>).map(([k, v]) => [k, typeof v === 'bigint' ? Number(v) : v])));
    const multi = rows.filter((r) => Number(r.event_count) >= 3);
    expect(multi.length).toBeGreaterThanOrEqual(2);
    const [counted, cut] = multi as [Record<string, unknown>, Record<string, unknown>];
    counted.event_count = Number(counted.event_count) + 1;
    const lost = rows.find((r) => r !== counted && r !== cut)!;
    const doubled = rows.find((r) => r !== counted && r !== cut && r !== lost)!;
    const kept = rows.filter((r) => r !== lost);
    kept.push({ ...doubled });
    cut.session_end = cut.session_start; // as if the engine had closed it after its first event…
    cut.event_count = 1;
    writeFileSync(victim, encodeParquet([rowsToBatch(table.schema, kept)]));
    const damaged = check(await run(dir, f), 'sessions');
    expect(damaged.status).toBe('fail');
    const user = (r: Record<string, unknown>): string => `user ${JSON.stringify(String(r.user_id))}`;
    expect(damaged.problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(new RegExp(`^wrong session: ${escape(user(counted))}, starting \\S+: sessions says \\S+ – \\S+ with ${Number(counted.event_count)} events, silver \\S+ – \\S+ with ${Number(counted.event_count) - 1}$`)),
        expect.stringMatching(new RegExp(`^missing session: ${escape(user(lost))}, \\S+ – \\S+ \\(${Number(lost.event_count)} events in silver\\) has no row in sessions$`)),
        expect.stringMatching(new RegExp(`^duplicated session: ${escape(user(doubled))}, starting \\S+, has 2 rows in sessions$`)),
        expect.stringMatching(new RegExp(`^wrong session: ${escape(user(cut))}, starting \\S+: sessions says \\S+ – \\S+ with 1 events`)),
      ]),
    );
    expect(damaged.problems).toHaveLength(4);
  });

  it('a pause in event time (hours without events, so without gold rows) is not gold lagging', async () => {
    // The fixture lake minus every event of the 5 hours before its newest hour, and the newest hour
    // not in gold yet: gold's newest window is 6 h before silver's newest event, yet no silver hour
    // that should be in gold is missing from it.
    const { f } = healthy;
    const newest = Math.max(...f.events.map((e) => e.event_time));
    const lastHour = Math.floor(newest / HOUR) * HOUR;
    const { dir } = await lake('pause', {}, {});
    for (const table of ['silver/events', 'gold/hourly_metrics', 'bronze'] as const) {
      for (const p of files(dir, table)) {
        const m = /year=(\d+)\/month=(\d+)\/day=(\d+)\/hour=(\d+)\//.exec(p);
        if (!m) continue;
        const t = Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]));
        // Gold of the newest hour too: not emitted yet (the watermark is behind it by the lateness).
        if (t >= lastHour - 5 * HOUR && (t < lastHour || table === 'gold/hourly_metrics')) unlinkSync(p);
      }
    }
    const r = await run(dir, f, { now: newest + 10 * 60_000 });
    expect(check(r, 'freshness').problems.filter((p) => p.startsWith('gold'))).toEqual([]);
  });

  it('a lake without gold yet is fresh while its first hours are within the allowed lateness, and stale after', async () => {
    const dir = copy('no-gold');
    for (const p of files(dir, 'gold/hourly_metrics')) unlinkSync(p);
    const { f } = healthy;
    const span = Math.max(...f.events.map((e) => e.event_time)) - Math.min(...f.events.map((e) => e.event_time));
    // Silver's oldest hour ended less than the allowed lateness before its newest event: a young lake.
    const young = await run(dir, f, { allowedLatenessMs: span + 2 * HOUR });
    expect(check(young, 'freshness').problems).toEqual([]);
    expect(check(young, 'freshness').summary).toContain('gold has no hourly window yet');
    const stale = await run(dir, f);
    expect(check(stale, 'freshness').problems).toEqual([expect.stringMatching(/^gold is stale: gold has no hourly window; silver's events of \S+ on are in no gold window, their hour ended/)]);
  });

  it('gold behind silver fails freshness, measured from silver\'s newest event time, whatever the clock', async () => {
    const dir = copy('gold-behind');
    const hours = [...new Set(files(dir, 'gold/hourly_metrics').map((p) => p.replace(/\/[^/]+$/, '')))].sort();
    for (const p of files(dir, 'gold/hourly_metrics')) if (hours.slice(-5).some((h) => p.startsWith(`${h}/`))) unlinkSync(p);
    for (const now of [healthy.f.lastReceived + 10 * 60_000, healthy.f.lastReceived + 30 * DAY]) {
      const r = await run(dir, healthy.f, { now });
      expect(check(r, 'freshness').problems.filter((p) => p.startsWith('gold'))).toEqual([expect.stringMatching(/^gold is stale: newest hourly window ends \S+; silver's events of \S+ on are in no gold window, their hour ended \d+ (h|min) before silver's newest event time \S+ \(limit 3 h\)$/)]);
    }
  });

  it('commit-record stats that disagree with the files fail completeness, naming the record', async () => {
    const dir = copy('stats');
    const path = join(dir, '_sluice', 'commits', readdirSync(join(dir, '_sluice', 'commits')).find((n) => n.startsWith('s1-'))!);
    const record = JSON.parse(readFileSync(path, 'utf8')) as CommitRecord;
    record.stats!.duplicates += 1;
    writeFileSync(path, JSON.stringify(record));
    const r = await run(dir, healthy.f);
    expect(failing(r)).toEqual(['completeness']);
    expect(check(r, 'completeness').problems).toEqual([
      `commit record ${record.id}: stats say bronze ${record.stats!.bronzeRows} ≠ silver ${record.stats!.silverRows} + duplicates ${record.stats!.duplicates}`,
      expect.stringMatching(/^flush records count \d+ duplicates dropped; bronze holds \d+ repeated event ids$/),
    ]);
  });

  it('a file whose rows differ from its commit record fails files', async () => {
    const dir = copy('rows');
    const path = join(dir, '_sluice', 'commits', 'gold-fixture.json');
    const record = JSON.parse(readFileSync(path, 'utf8')) as CommitRecord;
    record.added[0]!.rows += 5;
    writeFileSync(path, JSON.stringify(record));
    const r = await run(dir, healthy.f);
    expect(check(r, 'files').problems).toEqual([`row count differs: ${record.added[0]!.key} has ${record.added[0]!.rows - 5} rows, its commit record says ${record.added[0]!.rows}`]);
  });
});

describe('retention', () => {
  it('layers kept for different times (silver 6 days, bronze 3, hourly gold 2) fail nothing; a file deleted after the cut still fails', async () => {
    const dir = copy('retention');
    const f = healthy.f;
    const store = new LocalObjectStore(dir);
    // After the fixture's last commit record (its gold one is stamped lastReceived + 1 ms), as in a lake retention runs on later.
    const removed = await applyRetention(store, { silver: 6, bronze: 3, tables: { hourly_metrics: 2 } }, f.lastReceived + 2);
    await store.close();
    expect(removed.partitions).toBeGreaterThan(100);
    const r = await run(dir, f, { anomalyMinVolume: 10 });
    expect(failing(r)).toEqual([]);
    const completeness = check(r, 'completeness');
    expect(completeness.summary).toMatch(/in every receive hour from .*, before which retention removed .*bronze_events before/);
    // What is still judged: the silver events received after bronze's cut + a day, by an independent count.
    const judgedFrom = Date.parse(String(completeness.details!.judgedFrom));
    const silverCut = Date.parse(String((completeness.details!.expiredThrough as Record<string, string>).events));
    // Bronze's cut (3 days before, at the newest partition that existed then) plus the dedup day; silver's 6 days before.
    expect(judgedFrom - DAY).toBeLessThanOrEqual(f.lastReceived - 3 * DAY);
    expect(judgedFrom - DAY).toBeGreaterThan(f.lastReceived - 3 * DAY - 12 * HOUR);
    expect(silverCut).toBeLessThanOrEqual(f.lastReceived - 6 * DAY);
    expect(silverCut).toBeGreaterThan(f.lastReceived - 6 * DAY - 12 * HOUR);
    const stillJudged = f.events.filter((e) => e.received_at >= judgedFrom && e.event_time >= silverCut).length;
    expect(stillJudged).toBeGreaterThan(100);
    expect(completeness.details!.silver).toBe(stillJudged);
    expect(check(r, 'gold').details!.windows).toBeGreaterThan(10);

    // Damage after the cut is still found.
    const victim = files(dir, 'silver/events').at(-3)!;
    unlinkSync(victim);
    const damaged = await run(dir, f);
    expect(failing(damaged)).toEqual(expect.arrayContaining(['files', 'completeness']));
  });
});

describe('rates, anomalies, drift', () => {
  it('too many late events (> 5 %) fail the late rate; too many invalid ones the invalid rate', async () => {
    const { dir, f } = await lake('rates', { lateRate: 0.12, invalidRate: 0.08 });
    const r = await run(dir, f);
    expect(failing(r)).toEqual(['late rate', 'invalid rate']);
    expect(check(r, 'late rate').problems[0]).toMatch(/^late rate \d+\.\d\d % > 5\.00 %: \d+ of \d+ events arrived after the watermark/);
    expect(check(r, 'invalid rate').problems[0]).toMatch(/^invalid rate \d+\.\d\d % > 5\.00 %: \d+ of \d+ events went to the DLQ/);
    // The thresholds are options.
    expect(failing(await run(dir, f, { maxLateRate: 0.5, maxInvalidRate: 0.5 }))).toEqual([]);
  });

  it('a burst of traffic in one hour is flagged as a spike', async () => {
    const hour = Date.UTC(2026, 2, 11, 14);
    const { dir, f } = await lake('spike', { spike: { hour, events: 400 } });
    const r = await run(dir, f);
    expect(failing(r)).toEqual(['anomalies']);
    expect(check(r, 'anomalies').problems).toEqual([expect.stringMatching(/^spike at 2026-03-11T14:00:00\.000Z: events \d+ vs median \d+(\.\d+)? of the same hour on 7 previous days \(robust z \d+\.\d\)$/)]);
  });

  it('robust z: median/MAD, floored at √median', () => {
    expect(robustZ(10, [10, 10, 10])).toBe(0);
    expect(robustZ(100, [50, 52, 48, 51, 49])).toBeCloseTo(50 / Math.max(1.4826, Math.sqrt(50)), 6);
    expect(robustZ(160, [100, 110, 90, 120, 80])).toBeCloseTo(60 / (1.4826 * 10), 6);
    expect(robustZ(0, [100, 110, 90, 120, 80])).toBeLessThan(-3.5);
  });

  it('new event types and property keys in the drift window warn without failing', async () => {
    const f = generateFixture({ seed: 7 });
    const since = f.lastReceived - 12 * HOUR;
    let changed = 0;
    for (const e of f.events) {
      if (e.received_at >= since && e.event_type === 'Button Clicked') {
        e.event_type = 'Wishlist Added';
        e.properties = JSON.stringify({ wishlist_id: 'w1' });
        changed++;
      }
    }
    for (const b of f.bronze) {
      const e = f.events.find((x) => x.event_id === b.event_id)!;
      b.event_type = e.event_type;
      b.properties = e.properties;
    }
    expect(changed).toBeGreaterThan(0);
    const dir = tmp('drift');
    const store = new LocalObjectStore(dir);
    await writeFixtureLake(store, f);
    await store.close();
    const r = await run(dir, f, { driftWindowMs: 12 * HOUR + 10 * 60_000 });
    expect(r.ok).toBe(true);
    expect(check(r, 'schema drift').status).toBe('warn');
    expect(check(r, 'schema drift').problems).toEqual([
      expect.stringMatching(/^new event type "Wishlist Added" first received 2026-03-1\dT/),
      expect.stringMatching(/^new property key "wishlist_id" first received 2026-03-1\dT/),
    ]);
  });
});
