/**
 * Test helpers: read a local lake's tables with DuckDB, the way analysts would.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import { TABLES, type TableName } from '../../common/lake-layout.js';
import { NO_SESSION_ALIASES, resolveSessionIds } from '../../engine/gold-sql.js';

export interface LakeReader {
  conn: DuckDBConnection;
  /** `read_parquet(...)` over a table (for `events`, with session ids resolved through session_aliases, as the view does). */
  rel(table: TableName): string;
  files(table: TableName): string[];
  rows<T = Record<string, unknown>>(sql: string): Promise<T[]>;
  close(): void;
}

function walk(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (name.endsWith('.parquet')) out.push(p);
  }
  return out.sort();
}

export async function openLakeReader(lakeDir: string): Promise<LakeReader> {
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  await conn.run("SET TimeZone = 'UTC'");
  const files = (table: TableName): string[] => walk(join(lakeDir, TABLES[table].prefix));
  return {
    conn,
    files,
    rel(table) {
      const f = files(table);
      if (f.length === 0) throw new Error(`table ${table} has no files in ${lakeDir}`);
      const hiveTypes = TABLES[table].granularity === 'hour' ? "{'year': INTEGER, 'month': INTEGER, 'day': INTEGER, 'hour': INTEGER}" : "{'year': INTEGER, 'month': INTEGER, 'day': INTEGER}";
      const raw = `read_parquet([${f.map((p) => `'${p}'`).join(', ')}], hive_partitioning = true, hive_types = ${hiveTypes}, union_by_name = true)`;
      if (table !== 'events') return raw;
      const a = files('session_aliases');
      const aliases = a.length === 0 ? NO_SESSION_ALIASES : `read_parquet([${a.map((p) => `'${p}'`).join(', ')}])`;
      return `(${resolveSessionIds(`(SELECT * FROM ${raw})`, aliases)})`;
    },
    async rows<T>(sql: string): Promise<T[]> {
      const r = await conn.runAndReadAll(sql);
      return r.getRowObjectsJS() as T[];
    },
    close() {
      conn.closeSync();
      db.closeSync();
    },
  };
}

/** event_id → times it appears in the lake's silver events (empty before the first commit). */
export async function silverCounts(lakeDir: string): Promise<Map<string, number>> {
  const r = await openLakeReader(lakeDir);
  try {
    if (r.files('events').length === 0) return new Map();
    const rows = await r.rows<{ event_id: string; n: bigint | number }>(`SELECT event_id, count(*) AS n FROM ${r.rel('events')} GROUP BY event_id`);
    return new Map(rows.map((x) => [x.event_id, Number(x.n)]));
  } finally {
    r.close();
  }
}

/**
 * Calls `settle` (drain and checkpoint, or wait for a round) until the merged daily gold window of
 * the day starting at `dayStart` is in the lake, at most `tries` times; true once it is.
 */
export async function untilDailyWindowMerged(lakeDir: string, dayStart: number, settle: () => Promise<void>, tries = 60): Promise<boolean> {
  for (let i = 0; i < tries; i++) {
    await settle();
    if (walk(join(lakeDir, TABLES.daily_metrics.prefix)).some((f) => f.endsWith(`part-w${dayStart}.parquet`))) return true;
  }
  return false;
}

/** Gold's hourly totals (the ALL × ALL × ALL row of each hour): [hour of day (UTC), events, active users], in time order. */
export async function hourlyTotals(r: LakeReader): Promise<Array<[number, number, number]>> {
  const rows = await r.rows<{ h: number; events: bigint; users: bigint }>(`
    SELECT hour(window_start) AS h, events, active_users AS users FROM ${r.rel('hourly_metrics')}
    WHERE device_type = 'ALL' AND app_version = 'ALL' AND country = 'ALL' ORDER BY window_start`);
  return rows.map((g) => [Number(g.h), Number(g.events), Number(g.users)]);
}
