/**
 * Partition pruning of S3 reads: which time range of each table a query can touch, from DuckDB's
 * own parse tree. Table-driven; a wrong range here would make an S3 query silently miss rows,
 * so every case that must NOT prune is pinned as well.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import { parseTimeLiteral, tableRanges } from '../../analytics/prune.js';

let db: DuckDBInstance;
let conn: DuckDBConnection;
beforeAll(async () => {
  db = await DuckDBInstance.create(':memory:');
  conn = await db.connect();
});
afterAll(() => {
  conn.closeSync();
  db.closeSync();
});

const T = (s: string): number => Date.parse(s);
const ALL = 'all';
type Want = Record<string, typeof ALL | [string | null, string | null]>;

async function ranges(sql: string): Promise<Want> {
  const out: Want = {};
  for (const [t, r] of await tableRanges(conn, sql)) {
    out[t] = r === undefined ? ALL : [r.fromMs === undefined ? null : new Date(r.fromMs).toISOString(), r.toMs === undefined ? null : new Date(r.toMs).toISOString()];
  }
  return out;
}

const iso = (s: string): string => new Date(T(s)).toISOString();

describe('tableRanges', () => {
  it.each<[string, Want]>([
    ['SELECT count(*) FROM events', { events: ALL }],
    ["SELECT count(*) FROM events WHERE event_time >= '2026-03-01' AND event_time < '2026-03-02'", { events: [iso('2026-03-01T00:00Z'), iso('2026-03-02T00:00Z')] }],
    ["SELECT * FROM events WHERE event_time BETWEEN TIMESTAMP '2026-03-01 10:00:00' AND TIMESTAMPTZ '2026-03-01 12:30:00+00'", { events: [iso('2026-03-01T10:00Z'), iso('2026-03-01T12:30:00.001Z')] }],
    ["SELECT * FROM events WHERE '2026-03-05'::TIMESTAMPTZ > event_time", { events: [null, iso('2026-03-05T00:00Z')] }],
    ["SELECT * FROM events WHERE event_time >= '2026-03-01T00:00:00+02:00'", { events: [iso('2026-02-28T22:00Z'), null] }],
    ['SELECT * FROM events WHERE year = 2026 AND month = 3 AND day = 4', { events: [iso('2026-03-04T00:00Z'), iso('2026-03-05T00:00Z')] }],
    ['SELECT * FROM events WHERE year = 2026 AND month BETWEEN 2 AND 3', { events: [iso('2026-02-01T00:00Z'), iso('2026-04-01T00:00Z')] }],
    ['SELECT * FROM events WHERE year = 2026 AND month = 12 AND day >= 30 AND hour < 6', { events: [iso('2026-12-30T00:00Z'), iso('2027-01-01T00:00Z')] }],
    ['SELECT * FROM events WHERE year = 2026 AND month = 3 AND day = 4 AND hour >= 6 AND hour < 9', { events: [iso('2026-03-04T06:00Z'), iso('2026-03-04T09:00Z')] }],
    ['SELECT * FROM events WHERE year >= 2026', { events: [iso('2026-01-01T00:00Z'), null] }],
    ["SELECT * FROM sessions WHERE session_start >= '2026-03-01' AND year = 2026 AND month = 3", { sessions: [iso('2026-03-01T00:00Z'), iso('2026-04-01T00:00Z')] }],
    ["SELECT sum(events) FROM hourly_metrics WHERE window_start >= '2026-03-01'", { hourly_metrics: [iso('2026-03-01T00:00Z'), null] }],
    // Bronze is partitioned by receive time: an event_time bound says nothing about its files.
    ["SELECT * FROM bronze_events WHERE event_time >= '2026-03-01'", { bronze_events: ALL }],
    ["SELECT * FROM bronze_events WHERE received_at >= '2026-03-01'", { bronze_events: [iso('2026-03-01T00:00Z'), null] }],
    // Conditions that do not bound the table.
    ["SELECT * FROM events WHERE event_time >= '2026-03-01' OR user_id = 'u1'", { events: ALL }],
    ["SELECT * FROM events WHERE event_time >= now() - INTERVAL 1 DAY", { events: ALL }],
    ["SELECT * FROM events WHERE date_trunc('day', event_time) = '2026-03-01'", { events: ALL }],
    ['SELECT * FROM events WHERE month = 3', { events: ALL }],
    ['SELECT * FROM events WHERE NOT (year = 2026)', { events: ALL }],
    // Joins: unqualified columns are ambiguous, qualified ones count for their table only.
    ["SELECT * FROM events e JOIN sessions s USING (session_id) WHERE event_time >= '2026-03-01'", { events: ALL, sessions: ALL }],
    ["SELECT * FROM events e JOIN sessions s USING (session_id) WHERE e.event_time >= '2026-03-01'", { events: [iso('2026-03-01T00:00Z'), null], sessions: ALL }],
    ["SELECT * FROM events JOIN sessions USING (session_id) WHERE sessions.session_start < '2026-03-02' AND events.year = 2026", { events: [iso('2026-01-01T00:00Z'), iso('2027-01-01T00:00Z')], sessions: [null, iso('2026-03-02T00:00Z')] }],
    // Each reference gets its own range; the table is read for their union, and one unbounded reference reads all.
    [
      "SELECT * FROM events WHERE event_time < '2026-03-02' UNION ALL SELECT * FROM events WHERE event_time >= '2026-03-05' AND event_time < '2026-03-06'",
      { events: [null, iso('2026-03-06T00:00Z')] },
    ],
    ["WITH a AS (SELECT * FROM events WHERE event_time >= '2026-03-01') SELECT * FROM a JOIN events USING (event_id)", { events: ALL }],
    [
      "WITH a AS (SELECT user_id FROM events WHERE year = 2026 AND month = 3) SELECT count(*) FROM sessions WHERE user_id IN (SELECT user_id FROM a) AND session_start >= '2026-03-10'",
      { events: [iso('2026-03-01T00:00Z'), iso('2026-04-01T00:00Z')], sessions: [iso('2026-03-10T00:00Z'), null] },
    ],
    ["SELECT * FROM (SELECT * FROM events) WHERE event_time >= '2026-03-01'", { events: ALL }],
    // Not a SELECT DuckDB serializes: every table named in the text, whole.
    ['DESCRIBE events', { events: ALL }],
    ["PRAGMA table_info('late_events')", { late_events: ALL }],
    ["SELECT 1 AS events", {}],
  ])('%s', async (sql, want) => {
    expect(await ranges(sql)).toEqual(want);
  });
});

describe('parseTimeLiteral', () => {
  it.each<[string, string | undefined]>([
    ['2026-03-01', '2026-03-01T00:00:00.000Z'],
    ['2026-03-01 10:11:12', '2026-03-01T10:11:12.000Z'],
    ['2026-03-01T10:11:12.123456', '2026-03-01T10:11:12.123Z'],
    ['2026-03-01 10:11:12+02', '2026-03-01T08:11:12.000Z'],
    ['2026-03-01T10:11Z', '2026-03-01T10:11:00.000Z'],
    ['yesterday', undefined],
    ['2026-13-45', undefined],
  ])('%s', (text, want) => {
    const t = parseTimeLiteral(text);
    expect(t === undefined ? undefined : new Date(t).toISOString()).toBe(want);
  });
});
