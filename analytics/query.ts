/**
 * SQL over the lake on DuckDB: views `bronze_events`, `events`, `sessions`, `hourly_metrics`,
 * `daily_metrics`, `dlq`, `late_events` over the Hive-partitioned Parquet (union_by_name, so
 * files written before a column existed still read), and the canned metrics of
 * analytics/metrics/*.sql.
 *
 * A table without files is still a view (empty, with the table's columns), so queries work on a
 * young lake. Partition columns year/month/day(/hour) are INTEGERs.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import { Type, type DataType, type Schema } from 'apache-arrow';
import { TABLES, type TableName } from '../common/lake-layout.js';
import { userError } from '../common/errors.js';
import { bronzeSchema, dailyMetricsSchema, dlqSchema, hourlyMetricsSchema, sessionsSchema, silverSchema } from '../common/schema.js';
import { Lake, type LakeOptions } from './lake.js';

const SCHEMAS: Record<TableName, Schema> = {
  bronze_events: bronzeSchema,
  events: silverSchema,
  sessions: sessionsSchema,
  hourly_metrics: hourlyMetricsSchema,
  daily_metrics: dailyMetricsSchema,
  dlq: dlqSchema,
  late_events: silverSchema,
};

function duckType(t: DataType): string {
  switch (t.typeId) {
    case Type.Utf8:
    case Type.Dictionary:
      return 'VARCHAR';
    case Type.Timestamp:
      return 'TIMESTAMPTZ';
    case Type.Int:
      return (t as unknown as { bitWidth: number }).bitWidth === 64 ? 'BIGINT' : 'INTEGER';
    case Type.Float:
      return 'DOUBLE';
    case Type.Bool:
      return 'BOOLEAN';
    default:
      return 'VARCHAR';
  }
}

const quote = (s: string): string => `'${s.replaceAll("'", "''")}'`;

export interface QueryResult {
  columns: string[];
  /** DuckDB type names (DATE, TIMESTAMP WITH TIME ZONE, BIGINT, …). */
  types: string[];
  rows: unknown[][];
}

export interface LakeQuery {
  run(sql: string): Promise<QueryResult>;
  /** Runs a canned metric (analytics/metrics/<name>.sql). */
  metric(name: string, params: MetricParams): Promise<QueryResult>;
  /** The underlying connection (COPY … TO for Parquet output). */
  readonly connection: DuckDBConnection;
  close(): Promise<void>;
}

export interface MetricParams {
  /** Inclusive first day (YYYY-MM-DD). */
  from: string;
  /** Inclusive last day (YYYY-MM-DD). */
  to: string;
  /** Dimension filters, e.g. { device_type: 'ios' }. */
  where?: Record<string, string>;
  /** Dimensions to group by. */
  by?: string[];
  /** Funnel steps (event types, in order). */
  steps?: string[];
  /** Funnel time limit in seconds. */
  withinS?: number;
}

export const METRICS_DIR = new URL('./metrics/', import.meta.url);
export const METRICS = readdirSync(METRICS_DIR)
  .filter((f) => f.endsWith('.sql'))
  .map((f) => f.slice(0, -4))
  .sort();

/** Dimensions a metric may filter or group by. */
export const DIMENSIONS = ['device_type', 'app_version', 'country', 'os', 'source'];

/** Fills a metric's template; every substituted piece is validated or quoted. */
export function renderMetric(name: string, p: MetricParams): string {
  if (!METRICS.includes(name)) throw userError('unknown_metric', `unknown metric "${name}"; choose one of ${METRICS.join(', ')}`);
  const day = (d: string, what: string): number => {
    if (!/^\d{4}-\d{2}-\d{2}$/.test(d) || Number.isNaN(Date.parse(`${d}T00:00:00Z`))) throw userError('invalid_option', `${what} must be a date like 2026-03-01, got "${d}"`);
    return Date.parse(`${d}T00:00:00Z`);
  };
  const from = day(p.from, '--from');
  const to = day(p.to, '--to') + 86_400_000;
  if (to <= from) throw userError('invalid_option', `--to (${p.to}) must not be before --from (${p.from})`);
  const ts = (ms: number): string => `TIMESTAMPTZ ${quote(new Date(ms).toISOString())}`;
  for (const d of [...Object.keys(p.where ?? {}), ...(p.by ?? [])]) {
    if (!DIMENSIONS.includes(d)) throw userError('invalid_option', `dimension must be one of ${DIMENSIONS.join(', ')}, got "${d}"`);
  }
  const filters = Object.entries(p.where ?? {}).map(([k, v]) => `${k} = ${quote(v)}`);
  const dims = (p.by ?? []).map((d) => `, ${d}`).join('');
  let sql = readFileSync(new URL(`${name}.sql`, METRICS_DIR), 'utf8');
  if (name === 'funnel') {
    if (!p.steps || p.steps.length < 2) throw userError('invalid_option', 'a funnel needs --steps with at least two event types, e.g. --steps "Application Opened,Order Completed"');
    if (!(p.withinS !== undefined && p.withinS > 0)) throw userError('invalid_option', 'a funnel needs --within, e.g. --within 1h');
    sql = sql.replaceAll('{{steps}}', `[${p.steps.map(quote).join(', ')}]::VARCHAR[]`).replaceAll('{{within_s}}', String(Math.round(p.withinS)));
  }
  return sql
    .replaceAll('{{from}}', ts(from))
    .replaceAll('{{to}}', ts(to))
    .replaceAll('{{filters}}', filters.length > 0 ? `(${filters.join(' AND ')})` : 'TRUE')
    .replaceAll('{{dims_i}}', (p.by ?? []).map((d) => `, i.${d}`).join(''))
    .replaceAll('{{dims}}', dims);
}

/** Tables a SQL text mentions (only those are synced from S3). */
function tablesIn(sql: string): TableName[] {
  return (Object.keys(TABLES) as TableName[]).filter((t) => new RegExp(`\\b${t}\\b`, 'i').test(sql));
}

export async function openLakeQuery(options: LakeOptions): Promise<LakeQuery> {
  const lake = await Lake.open(options);
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  await conn.run("SET TimeZone = 'UTC'");
  const defined = new Set<TableName>();

  const defineView = async (table: TableName, range?: { fromMs?: number; toMs?: number }): Promise<void> => {
    const paths = await lake.paths(table, range);
    const schema = SCHEMAS[table];
    const partCols = TABLES[table].granularity === 'hour' ? ['year', 'month', 'day', 'hour'] : ['year', 'month', 'day'];
    let body: string;
    if (paths.length === 0) {
      const cols = [...schema.fields.map((f) => `NULL::${duckType(f.type)} AS ${f.name}`), ...partCols.map((c) => `NULL::INTEGER AS ${c}`)];
      body = `SELECT ${cols.join(', ')} WHERE false`;
    } else {
      const hiveTypes = `{${partCols.map((c) => `'${c}': INTEGER`).join(', ')}}`;
      body = `SELECT * FROM read_parquet([${paths.map(quote).join(', ')}], hive_partitioning = true, hive_types = ${hiveTypes}, union_by_name = true)`;
    }
    await conn.run(`CREATE OR REPLACE VIEW ${table} AS ${body}`);
    defined.add(table);
  };

  const ensure = async (sql: string, range?: { fromMs?: number; toMs?: number }): Promise<void> => {
    // Local lakes: every view, always. S3 lakes: only the tables the query names (synced on demand).
    const wanted = lake.store.localPath('x') !== undefined ? (Object.keys(TABLES) as TableName[]) : tablesIn(sql);
    for (const t of wanted) if (!defined.has(t) || range) await defineView(t, range);
  };

  const run = async (sql: string): Promise<QueryResult> => {
    try {
      const reader = await conn.runAndReadAll(sql);
      return { columns: reader.columnNames(), types: reader.columnTypes().map((t) => t.toString()), rows: reader.getRowsJS() as unknown[][] };
    } catch (err) {
      throw userError('query_failed', `query failed: ${(err as Error).message}`, err);
    }
  };

  return {
    connection: conn,
    async run(sql) {
      await ensure(sql);
      return run(sql);
    },
    async metric(name, params) {
      const sql = renderMetric(name, params);
      await ensure(sql);
      return run(sql);
    },
    async close() {
      conn.closeSync();
      db.closeSync();
      await lake.close();
    },
  };
}

/** Formats a result as an aligned text table. */
/** One value as text: DATEs as YYYY-MM-DD, timestamps as ISO-8601 UTC. */
function text(v: unknown, type: string | undefined): string {
  if (v === null || v === undefined) return 'NULL';
  if (v instanceof Date) return type === 'DATE' ? v.toISOString().slice(0, 10) : v.toISOString();
  if (typeof v === 'object') return JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? Number(x) : x));
  return String(v);
}

export function formatTable(r: QueryResult): string {
  const rows = r.rows.map((row) => row.map((v, i) => text(v, r.types[i])));
  const widths = r.columns.map((c, i) => Math.max(c.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (/^-?[\d.]+$/.test(c) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(r.columns), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line), `(${rows.length} row${rows.length === 1 ? '' : 's'})`].join('\n');
}

export function formatCsv(r: QueryResult): string {
  const esc = (v: unknown, type: string | undefined): string => {
    if (v === null || v === undefined) return '';
    const s = text(v, type);
    return /[",\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
  };
  return [r.columns.join(','), ...r.rows.map((row) => row.map((v, i) => esc(v, r.types[i])).join(','))].join('\n');
}

export function formatJson(r: QueryResult): string {
  return r.rows
    .map((row) =>
      JSON.stringify(
        Object.fromEntries(r.columns.map((c, i) => [c, row[i] instanceof Date ? text(row[i], r.types[i]) : row[i]])),
        (_k, v) => (typeof v === 'bigint' ? Number(v) : v),
      ),
    )
    .join('\n');
}
