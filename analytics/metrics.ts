/**
 * Canned metrics: each is one SQL file in analytics/metrics/<name>.sql that analysts can read and
 * reuse. Values reach the SQL only as DuckDB prepared-statement parameters ($from_time, $steps,
 * $where_0, …); the only text substituted is a few templates built from validated dimension
 * names ({{dims}}, {{first_dims}}, {{filters}}). A header line `-- @reads <table> <window>` says
 * which partitions the metric reads, so an S3 lake syncs only those:
 *
 *   -- @reads events from-27d to        [from − 27 days, to)
 *   -- @reads events from to+within     [from, to + the funnel's time limit)
 *   -- @reads events all                the whole table
 */
import { readdirSync, readFileSync } from 'node:fs';
import { INTEGER, LIST, TIMESTAMPTZ, VARCHAR, listValue, timestampTZValue, type DuckDBType, type DuckDBValue } from '@duckdb/node-api';
import { userError } from '../common/errors.js';
import type { TableName } from '../common/lake-layout.js';
import type { TimeRange } from './lake.js';

const DAY = 86_400_000;

export const METRICS_DIR = new URL('./metrics/', import.meta.url);

/** Names of the canned metrics (the SQL files in analytics/metrics/, without `.sql`). */
export const METRICS: readonly string[] = readdirSync(METRICS_DIR)
  .filter((f) => f.endsWith('.sql'))
  .map((f) => f.slice(0, -4))
  .sort();

/** Dimensions `--where` and `--by` accept, per table a metric reads. */
export const METRIC_DIMENSIONS: Partial<Record<TableName, readonly string[]>> = {
  events: ['device_type', 'os', 'app_version', 'country', 'source'],
  sessions: ['device_type', 'app_version', 'country'],
};

/** Event types the metrics count; defaults follow the design's metric mapping. */
export interface MetricEventTypes {
  installs: string[];
  notificationViews: string[];
  notificationOpens: string[];
}

export const DEFAULT_METRIC_EVENT_TYPES: MetricEventTypes = {
  installs: ['install', 'Application Installed'],
  notificationViews: ['notification_view', 'Push Notification Received'],
  notificationOpens: ['notification_open', 'Push Notification Tapped'],
};

/** Parameters of a canned metric. Days are UTC calendar days. */
export interface MetricParams {
  /** First day, inclusive, `YYYY-MM-DD`. */
  from: string;
  /** Last day, inclusive, `YYYY-MM-DD`. Default: `from`. */
  to?: string;
  /** Dimension filters; several values for one dimension mean any of them. */
  where?: Record<string, string | string[]>;
  /** Dimensions to group by, in output order. */
  by?: string[];
  /** Funnel: the ordered, distinct event types. */
  steps?: string[];
  /** Funnel: time limit from the entry event, in seconds (> 0). */
  withinS?: number;
  /** Retention: cohort by first install event (default) or by first event of any type. */
  cohortBy?: 'install' | 'first_seen';
  /** Event type mapping (defaults: `DEFAULT_METRIC_EVENT_TYPES`). */
  eventTypes?: Partial<MetricEventTypes>;
}

/** A metric ready to run: SQL with `$name` parameters, their values and types, and what it reads. */
export interface PreparedMetric {
  name: string;
  sql: string;
  values: Record<string, DuckDBValue>;
  types: Record<string, DuckDBType>;
  /** Table → time range it reads (`undefined` = the whole table). */
  reads: Map<TableName, TimeRange | undefined>;
}

interface MetricFile {
  text: string;
  reads: Array<{ table: TableName; all: boolean; fromDays: number; toDays: number; toWithin: boolean }>;
}

const files = new Map<string, MetricFile>();

/** Throws `unknown_metric`, listing the metrics, unless `name` is one. */
export function checkMetricName(name: string): void {
  if (!METRICS.includes(name)) throw userError('unknown_metric', `unknown metric "${name}"; choose one of ${METRICS.join(', ')}`);
}

function metricFile(name: string): MetricFile {
  let f = files.get(name);
  if (f) return f;
  checkMetricName(name);
  const text = readFileSync(new URL(`${name}.sql`, METRICS_DIR), 'utf8');
  const reads: MetricFile['reads'] = [];
  for (const m of text.matchAll(/^-- @reads (\w+) (all|from(?:-(\d+)d)? to(?:\+(\d+)d|\+(within))?)$/gm)) {
    reads.push({ table: m[1] as TableName, all: m[2] === 'all', fromDays: Number(m[3] ?? 0), toDays: Number(m[4] ?? 0), toWithin: m[5] !== undefined });
  }
  if (reads.length === 0) throw userError('invalid_metric', `analytics/metrics/${name}.sql needs a "-- @reads <table> <window>" header line`);
  f = { text, reads };
  files.set(name, f);
  return f;
}

function day(text: string, what: string): number {
  const t = /^\d{4}-\d{2}-\d{2}$/.test(text) ? Date.parse(`${text}T00:00:00Z`) : Number.NaN;
  if (Number.isNaN(t) || new Date(t).toISOString().slice(0, 10) !== text) throw userError('invalid_option', `${what} must be a date like 2026-03-01, got "${text}"`);
  return t;
}

const tsValue = (ms: number): DuckDBValue => timestampTZValue(BigInt(ms) * 1000n);

/** Validates the parameters and builds the metric's SQL and bound values. */
export function prepareMetric(name: string, p: MetricParams): PreparedMetric {
  const file = metricFile(name);
  const from = day(p.from, '--from');
  const to = day(p.to ?? p.from, '--to') + DAY;
  if (to <= from) throw userError('invalid_option', `--to (${p.to}) must not be before --from (${p.from})`);
  const mainTable = file.reads[0]!.table;
  const allowed = METRIC_DIMENSIONS[mainTable] ?? [];
  const where = Object.entries(p.where ?? {}).map(([k, v]) => [k, Array.isArray(v) ? v : [v]] as const);
  const by = p.by ?? [];
  for (const d of [...where.map(([k]) => k), ...by]) {
    if (!allowed.includes(d)) throw userError('invalid_option', `metric ${name} filters and groups by ${allowed.join(', ')}; got "${d}"`);
  }
  if (new Set(by).size !== by.length) throw userError('invalid_option', `--by lists a dimension twice: ${by.join(', ')}`);
  for (const [k, vs] of where) if (vs.length === 0) throw userError('invalid_option', `--where ${k}= needs a value`);

  const values: Record<string, DuckDBValue> = { from_time: tsValue(from), to_time: tsValue(to) };
  const types: Record<string, DuckDBType> = { from_time: TIMESTAMPTZ, to_time: TIMESTAMPTZ };
  const filters: string[] = [];
  let n = 0;
  for (const [k, vs] of where) {
    const names = vs.map((v) => {
      const param = `where_${n++}`;
      values[param] = v;
      types[param] = VARCHAR;
      return `$${param}`;
    });
    filters.push(`(${k} IN (${names.join(', ')}))`);
  }
  const firstDims = [...new Set([...by, ...where.map(([k]) => k)])];
  let sql = file.text
    .replaceAll('{{dims}}', by.map((d) => `, ${d}`).join(''))
    .replaceAll('{{first_dims}}', firstDims.map((d) => `, coalesce(arg_min(${d}, (event_time, event_id)), 'unknown') AS ${d}`).join(''))
    .replaceAll('{{filters}}', filters.length > 0 ? filters.join(' AND ') : 'TRUE');

  const types_ = { ...DEFAULT_METRIC_EVENT_TYPES, ...p.eventTypes };
  const lists: Record<string, string[]> = { install_events: types_.installs, view_events: types_.notificationViews, open_events: types_.notificationOpens };
  for (const [k, v] of Object.entries(lists)) {
    values[k] = listValue(v);
    types[k] = LIST(VARCHAR);
  }
  const cohortBy = p.cohortBy ?? 'install';
  if (cohortBy !== 'install' && cohortBy !== 'first_seen') throw userError('invalid_option', `--cohort must be install or first_seen, got ${String(cohortBy)}`);
  values.cohort_by = cohortBy;
  types.cohort_by = VARCHAR;

  let withinMs = 0;
  if (sql.includes('$steps')) {
    const steps = p.steps ?? [];
    if (steps.length < 2) throw userError('invalid_option', 'a funnel needs --steps with at least two event types, e.g. --steps "Application Opened,Order Completed"');
    if (new Set(steps).size !== steps.length) throw userError('invalid_option', `funnel steps must be distinct event types, got ${steps.join(', ')}`);
    if (!(typeof p.withinS === 'number' && Number.isInteger(p.withinS) && p.withinS > 0)) throw userError('invalid_option', `a funnel needs --within, a positive whole number of seconds or a duration like 1h; got ${String(p.withinS)}`);
    values.steps = listValue(steps);
    types.steps = LIST(VARCHAR);
    values.within_s = p.withinS;
    types.within_s = INTEGER;
    withinMs = p.withinS * 1000;
  }
  // Bind only what the SQL uses (DuckDB rejects unknown parameters).
  for (const k of Object.keys(values)) {
    if (!new RegExp(`\\$${k}\\b`).test(sql)) {
      delete values[k];
      delete types[k];
    }
  }
  sql = sql.replace(/;\s*$/, '');

  const reads = new Map<TableName, TimeRange | undefined>();
  for (const r of file.reads) reads.set(r.table, r.all ? undefined : { fromMs: from - r.fromDays * DAY, toMs: to + r.toDays * DAY + (r.toWithin ? withinMs : 0) });
  return { name, sql, values, types, reads };
}
