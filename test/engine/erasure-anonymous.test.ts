/**
 * Erasure by an anonymousId whose events sit on another user's shard, on the real server (both
 * engine modes: in process mode ingest seals the involved shard's log over IPC; 2 shards, real
 * LMDB and Parquet): user U (`idf-1`, shard 1) sent events carrying
 * anonymousId A (`anon-idf`, shard 0) — a session made only of them, and a session whose first
 * event carries A and whose later ones do not — plus a session without A in the same hour, and A
 * sent one event with no userId (its own, on shard 0). Other users share the hours and the cells.
 * After `POST /v1/admin/erasures {"users":[A]}` reaches `done`, checked with this file's own DuckDB
 * queries over the Parquet files (no code of the job): no bronze/silver row with anonymous_id A or
 * A in raw, no session row built from an erased event, every other row (other users', U's rows
 * without A) unchanged, gold hourly/daily counts equal to a recomputation from the remaining silver
 * written here, and no byte of A in any file of the lake or the data directory (logs included).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { composeServeConfig } from '../../cli/config.js';
import { startSluice, type RunningSluice } from '../../cli/serve.js';
import { shardOfUser } from '../../common/hash.js';
import type { TableName } from '../../common/lake-layout.js';
import type { ErasureJob } from '../../storage/erasure-store.js';
import { eraseAndWait, filesHolding, postJson, segmentEvents } from '../helpers/erasure.js';
import { openLakeReader, untilDailyWindowMerged, type LakeReader } from '../helpers/lake.js';

const ev = segmentEvents('anon-');
const U = 'idf-1';
const A = 'anon-idf';
const ADMIN = 'admin-anon-key';
const MIN = 60_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;
const D = Math.floor(Date.now() / DAY) * DAY - 2 * DAY;
const others = Array.from({ length: 8 }, (_, i) => `anon-test-other-${i}`);

const root = mkdtempSync(join(tmpdir(), 'sluice-erase-anon-'));
afterAll(() => {
  if (!process.env.KEEP_LAKE) rmSync(root, { recursive: true, force: true });
});

const ctx = (device: string): Record<string, unknown> => ({ context: { device: { type: device }, app: { version: '3.0' }, location: { country: 'DE' } } });

/** A's events: the times of U's events that carry A (and A's own one). */
const withA = [D + HOUR + 2 * MIN, D + HOUR + 7 * MIN, D + HOUR + 12 * MIN, D + 2 * HOUR + 50 * MIN];
const ownA = D + HOUR + 20 * MIN;

function traffic(): Array<ReturnType<typeof ev>> {
  const out: Array<ReturnType<typeof ev>> = [];
  others.forEach((u, i) => {
    for (let h = 1; h <= 3; h++) {
      const t = D + h * HOUR + i * MIN;
      for (const m of [0, 6, 11]) out.push(ev(u, t + m * MIN, { ...ctx(i % 2 ? 'ios' : 'android'), anonymousId: `anon-other-${i}`, event: m === 6 ? 'Push Notification Tapped' : 'Push Notification Received' }));
    }
  });
  // U, ios: session 1 (hour 1) only events with A; session 2 (hour 1, after a 33 min gap) without A;
  // session 3 starts with A (hour 2) and goes on without it (hour 3).
  for (const t of withA) out.push(ev(U, t, { ...ctx('ios'), anonymousId: A, event: 'Application Opened' }));
  for (const t of [D + HOUR + 45 * MIN, D + 3 * HOUR + 5 * MIN, D + 3 * HOUR + 15 * MIN]) out.push(ev(U, t, { ...ctx('ios'), event: 'Application Opened' }));
  // A alone (no userId: user_id = A, A's own shard), in a cell it shares.
  out.push(ev(U, ownA, { ...ctx('android'), userId: undefined, anonymousId: A, event: 'Application Installed' }));
  return out;
}

/** Inline: drain and checkpoint now; process: the engine checkpoints every 250 ms, wait for about two rounds. */
async function settle(s: RunningSluice): Promise<void> {
  if (s.coordinator) {
    await s.coordinator.drain();
    await s.coordinator.checkpointNow(true);
  } else await new Promise((r) => setTimeout(r, 600));
}

type Row = Record<string, unknown>;
const plain = (r: Row): Row => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, typeof v === 'bigint' ? Number(v) : v instanceof Date ? v.getTime() : v]));

/** The table's files as one relation, read here (not through the engine's views). */
function files(lake: LakeReader, table: TableName): string {
  const f = lake.files(table);
  return f.length === 0 ? '(SELECT NULL AS x WHERE false)' : `read_parquet([${f.map((p) => `'${p}'`).join(', ')}], union_by_name = true)`;
}

const all = async (lake: LakeReader, sql: string): Promise<Row[]> => (await lake.rows<Row>(sql)).map(plain);

/**
 * The oracle: gold counts of each window per cell, from silver alone — sessions resolved through
 * session_aliases, a session counted in the window and cell of its first event (looking back a day).
 */
async function recomputed(lake: LakeReader, unit: 'hour' | 'day', start: number): Promise<Map<string, Row>> {
  const aliases = lake.files('session_aliases').length === 0 ? '(SELECT NULL::VARCHAR AS alias_id, NULL::VARCHAR AS session_id WHERE false)' : files(lake, 'session_aliases');
  const end = start + (unit === 'hour' ? HOUR : DAY);
  const sql = `
    WITH e AS (
      SELECT s.event_id, s.user_id, s.event_type, epoch_ms(s.event_time) AS t, coalesce(a.session_id, s.session_id) AS sid,
             coalesce(s.device_type, 'unknown') AS dv, coalesce(s.app_version, 'unknown') AS av, coalesce(s.country, 'unknown') AS co
      FROM ${files(lake, 'events')} s LEFT JOIN (SELECT DISTINCT alias_id, session_id FROM ${aliases}) a ON a.alias_id = s.session_id
      WHERE epoch_ms(s.event_time) >= ${start - DAY} AND epoch_ms(s.event_time) < ${end + DAY}
    ),
    firsts AS (SELECT sid, arg_min(event_id, (t, event_id)) AS first_id FROM e WHERE sid IS NOT NULL GROUP BY sid),
    w AS (SELECT e.*, e.event_id IN (SELECT first_id FROM firsts) AS starts FROM e WHERE t >= ${start} AND t < ${end})
    SELECT CASE WHEN grouping(dv) = 1 THEN 'ALL' ELSE dv END AS device_type,
           CASE WHEN grouping(av) = 1 THEN 'ALL' ELSE av END AS app_version,
           CASE WHEN grouping(co) = 1 THEN 'ALL' ELSE co END AS country,
           count(*)::INTEGER AS events, count(DISTINCT user_id)::INTEGER AS active_users,
           count(*) FILTER (WHERE starts)::INTEGER AS sessions,
           count(*) FILTER (WHERE event_type = 'Application Installed')::INTEGER AS installs,
           count(*) FILTER (WHERE event_type = 'Push Notification Received')::INTEGER AS notification_views,
           count(*) FILTER (WHERE event_type = 'Push Notification Tapped')::INTEGER AS notification_opens
    FROM w GROUP BY CUBE (dv, av, co)`;
  return new Map((await all(lake, sql)).map((r) => [`${String(r.device_type)}/${String(r.app_version)}/${String(r.country)}`, r]));
}

async function gold(lake: LakeReader, unit: 'hour' | 'day', start: number): Promise<Map<string, Row>> {
  const rows = await all(lake, `SELECT * FROM ${files(lake, unit === 'hour' ? 'hourly_metrics' : 'daily_metrics')} WHERE epoch_ms(window_start) = ${start}`);
  return new Map(rows.map((r) => [`${String(r.device_type)}/${String(r.app_version)}/${String(r.country)}`, r]));
}

const FIELDS = ['events', 'active_users', 'sessions', 'installs', 'notification_views', 'notification_opens'] as const;
const windows: Array<readonly ['hour' | 'day', number]> = [...[1, 2, 3].map((h) => ['hour', D + h * HOUR] as const), ['day', D] as const];

/** Snapshot of what must not change: every row without A, by table. */
async function untouched(lake: LakeReader): Promise<Record<string, Row[]>> {
  const notA = `anonymous_id IS DISTINCT FROM '${A}' AND user_id <> '${A}'`;
  const overlapsA = [...withA, ownA].map((t) => `(epoch_ms(session_start) <= ${t} AND epoch_ms(session_end) >= ${t} AND user_id = '${U}')`).join(' OR ');
  return {
    silver: await all(lake, `SELECT * EXCLUDE (session_id) FROM ${files(lake, 'events')} WHERE ${notA} ORDER BY event_id`),
    bronze: await all(lake, `SELECT event_id, user_id, anonymous_id, event_time, raw FROM ${files(lake, 'bronze_events')} WHERE ${notA} ORDER BY event_id, log_offset`),
    sessions: await all(lake, `SELECT * FROM ${files(lake, 'sessions')} WHERE NOT (${overlapsA}) AND user_id <> '${A}' ORDER BY session_id`),
  };
}

describe.each(['inline', 'process'] as const)('erasure by anonymousId (engine %s)', (engineMode) => {
  it("finds A's rows on U's shard, drops the sessions built from them, keeps everything else, and gold equals silver recomputed", async () => {
    expect(shardOfUser(U, 2), 'U and A on different shards').not.toBe(shardOfUser(A, 2));
    const d = { data: join(root, engineMode, 'data'), lake: join(root, engineMode, 'lake') };
    const s = await startSluice(
      composeServeConfig({ port: 0, data: d.data, lake: d.lake, shards: 2, workers: 1, flushInterval: '250ms', allowedLateness: '10m', sessionGap: '30m', engineMode, compression: 'none', writeKeys: ['wk-anon'], adminKeys: [ADMIN] }, {}),
      pino({ level: 'warn' }),
    );
    let id = '';
    let before: Record<string, Row[]> = {};
    try {
      expect((await postJson(s.url, '/v1/batch', { batch: traffic() }, 'wk-anon')).status).toBe(200);
      // The watermark passes day D: its windows are emitted and merged, its sessions closed.
      expect((await postJson(s.url, '/v1/batch', { batch: [...others, U].map((u) => ev(u, Date.now() - MIN)) }, 'wk-anon')).status).toBe(200);
      expect(await untilDailyWindowMerged(d.lake, D, () => settle(s)), 'daily window D merged').toBe(true);

      const lake = await openLakeReader(d.lake);
      try {
        // The fixture does what it says: A's rows in silver and bronze, on both shards; sessions built from them.
        const silverA = await all(lake, `SELECT count(*)::INTEGER AS n, count(DISTINCT user_id)::INTEGER AS users FROM ${files(lake, 'events')} WHERE anonymous_id = '${A}'`);
        expect(silverA[0]).toEqual({ n: withA.length + 1, users: 2 });
        const shardsA = await all(lake, `SELECT DISTINCT shard FROM ${files(lake, 'bronze_events')} WHERE anonymous_id = '${A}' ORDER BY shard`);
        expect(shardsA.map((r) => r.shard)).toEqual([0, 1]);
        const sessionsOfA = await all(lake, `SELECT count(*)::INTEGER AS n FROM ${files(lake, 'sessions')} WHERE user_id = '${U}' AND (${withA.map((t) => `(epoch_ms(session_start) <= ${t} AND epoch_ms(session_end) >= ${t})`).join(' OR ')})`);
        expect(sessionsOfA[0]!.n, "U's sessions holding A's events").toBe(2);
        before = await untouched(lake);
        expect(before.sessions!.filter((r) => r.user_id === U).length, "U's session without A").toBe(1);
      } finally {
        lake.close();
      }

      const erased = await eraseAndWait(s.url, ADMIN, [A], 'anonymous id test', () => settle(s));
      id = erased.id;
      expect(erased.state).toBe('done');
    } finally {
      await s.close();
    }

    const lake = await openLakeReader(d.lake);
    try {
      for (const t of ['events', 'bronze_events', 'late_events'] as const) {
        if (lake.files(t).length === 0) continue;
        const left = await all(lake, `SELECT count(*)::INTEGER AS n FROM ${files(lake, t)} WHERE anonymous_id = '${A}' OR user_id = '${A}' OR contains(coalesce(properties, ''), '"${A}"')`);
        expect(left[0]!.n, `${t}: rows of A`).toBe(0);
      }
      expect((await all(lake, `SELECT count(*)::INTEGER AS n FROM ${files(lake, 'bronze_events')} WHERE contains(coalesce(raw, ''), '${A}')`))[0]!.n).toBe(0);
      const sessionsLeft = await all(lake, `SELECT count(*)::INTEGER AS n FROM ${files(lake, 'sessions')} WHERE user_id = '${A}' OR (user_id = '${U}' AND (${withA.map((t) => `(epoch_ms(session_start) <= ${t} AND epoch_ms(session_end) >= ${t})`).join(' OR ')}))`);
      expect(sessionsLeft[0]!.n, 'sessions built from erased events').toBe(0);
      // Every other row is as it was (silver's session ids aside: an alias may resolve them).
      expect(await untouched(lake)).toEqual(before);
      // Gold: each touched window per cell equals this file's recomputation from the remaining silver.
      for (const [unit, start] of windows) {
        const g = await gold(lake, unit, start);
        const want = await recomputed(lake, unit, start);
        expect([...g.keys()].sort(), `${unit} ${start}: cells`).toEqual([...want.keys()].sort());
        for (const [c, w] of want) for (const f of FIELDS) expect(Number(g.get(c)![f]), `${unit} ${start} ${c} ${f}`).toBe(w[f]);
      }
      // U stays active in hour 1 (a session without A) and in hour 3; not in hour 2 (only A's event there).
      const u = async (start: number): Promise<number> => Number((await all(lake, `SELECT count(*)::INTEGER AS n FROM ${files(lake, 'events')} WHERE user_id = '${U}' AND epoch_ms(event_time) >= ${start} AND epoch_ms(event_time) < ${start + HOUR}`))[0]!.n);
      expect([await u(D + HOUR), await u(D + 2 * HOUR), await u(D + 3 * HOUR)]).toEqual([1, 0, 2]);
      expect(Number((await gold(lake, 'hour', D + HOUR)).get('ALL/ALL/ALL')!.active_users)).toBe(others.length + 1);
      expect(Number((await gold(lake, 'hour', D + 2 * HOUR)).get('ALL/ALL/ALL')!.active_users)).toBe(others.length);
    } finally {
      lake.close();
    }
    // No byte of A anywhere: lake, logs, LMDB state, erasure files.
    expect(filesHolding([d.lake, d.data], [A])).toEqual([]);
    // The job's report agrees.
    const job = JSON.parse(readFileSync(join(d.data, 'erasure', 'jobs', `${id}.json`), 'utf8')) as ErasureJob & { involved?: Record<string, number> };
    expect(job.layers.events?.rowsRemoved).toBe(withA.length + 1);
    // U's two sessions holding A's events, and A's own (its one event without a userId).
    expect(job.layers.sessions?.rowsRemoved).toBe(3);
    expect(Object.keys(job.involved ?? {}), "U's shard involved: its log sealed and truncated").toEqual([String(shardOfUser(U, 2))]);
  }, 240_000);
});
