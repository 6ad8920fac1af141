/**
 * Partition pruning for S3 lakes: which time range of each table a query can possibly read, from
 * DuckDB's own parse tree of the query (`json_serialize_sql`), so that only those partitions are
 * synced into the local cache.
 *
 * Deliberately simple and conservative — a table gets a range only from top-level AND-ed
 * conditions of a SELECT whose FROM names it directly:
 *
 *   <time column> (>=, >, <, <=, =, BETWEEN) <constant>   time column: the one the table is partitioned by
 *   year / month / day / hour (same operators) <integer>    month needs year fixed, day needs month fixed, …
 *
 * An unqualified column counts only when that FROM has the table alone; a qualified one
 * (`e.event_time`) counts for the table with that alias or name. Each place a table is referenced
 * gets its own range, and the table is synced for the union of them; any reference without
 * usable conditions (or a query DuckDB cannot serialize) means the whole table. Anything else —
 * OR, functions of the column, `now() - INTERVAL …` — simply gives no bound.
 */
import type { DuckDBConnection } from '@duckdb/node-api';
import { TABLES, type TableName } from '../common/lake-layout.js';
import type { TimeRange } from './lake.js';

/** The column each table is partitioned by (the engine writes rows under the partition of this time). */
export const PARTITION_TIME_COLUMN: Record<TableName, string> = {
  bronze_events: 'received_at',
  events: 'event_time',
  sessions: 'session_start',
  session_aliases: 'session_start',
  hourly_metrics: 'window_start',
  daily_metrics: 'window_start',
  dlq: 'received_at',
  late_events: 'event_time',
};

const TABLE_NAMES = Object.keys(TABLES) as TableName[];
const isTable = (name: string): name is TableName => (TABLE_NAMES as string[]).includes(name);

type Node = Record<string, unknown>;
const isNode = (x: unknown): x is Node => typeof x === 'object' && x !== null && !Array.isArray(x);

/** Union of ranges (the smallest single range covering all). `undefined` = whole table. */
function union(a: TimeRange | undefined, b: TimeRange | undefined): TimeRange | undefined {
  if (a === undefined || b === undefined) return undefined;
  const fromMs = a.fromMs === undefined || b.fromMs === undefined ? undefined : Math.min(a.fromMs, b.fromMs);
  const toMs = a.toMs === undefined || b.toMs === undefined ? undefined : Math.max(a.toMs, b.toMs);
  return fromMs === undefined && toMs === undefined ? undefined : { fromMs, toMs };
}

function intersect(a: TimeRange, b: TimeRange): TimeRange {
  const fromMs = a.fromMs === undefined ? b.fromMs : b.fromMs === undefined ? a.fromMs : Math.max(a.fromMs, b.fromMs);
  const toMs = a.toMs === undefined ? b.toMs : b.toMs === undefined ? a.toMs : Math.min(a.toMs, b.toMs);
  return { fromMs, toMs };
}

/** A time literal as epoch ms: DuckDB reads zone-less literals in the session zone, which `sluice query` sets to UTC. */
export function parseTimeLiteral(text: string): number | undefined {
  let s = text.trim().replace(' ', 'T');
  if (/^\d{4}-\d{2}-\d{2}$/.test(s)) s += 'T00:00:00';
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}(:\d{2}(:\d{2}(\.\d+)?)?)?/.test(s)) return undefined;
  s = s.replace(/(\.\d{3})\d+/, '$1');
  if (/T\d{2}$/.test(s)) s += ':00';
  if (!/(Z|[+-]\d{2}(:?\d{2})?)$/i.test(s)) s += 'Z';
  else s = s.replace(/([+-]\d{2})$/, '$1:00');
  const t = Date.parse(s);
  return Number.isNaN(t) ? undefined : t;
}

/** A constant (possibly under CASTs) as a string or number; undefined when the expression is not one. */
function constantOf(e: unknown): string | number | undefined {
  if (!isNode(e)) return undefined;
  if (e.class === 'CAST') return constantOf(e.child);
  if (e.class !== 'CONSTANT') return undefined;
  const v = e.value as { is_null?: boolean; value?: unknown } | undefined;
  if (!v || v.is_null) return undefined;
  return typeof v.value === 'number' || typeof v.value === 'string' ? v.value : undefined;
}

interface Condition {
  /** Column reference parts, lower case: ['event_time'] or ['e', 'event_time']. */
  column: string[];
  lo?: string | number;
  loStrict?: boolean;
  hi?: string | number;
  hiStrict?: boolean;
}

function columnOf(e: unknown): string[] | undefined {
  if (!isNode(e) || e.class !== 'COLUMN_REF') return undefined;
  const parts = e.column_names as string[];
  return parts.map((p) => p.toLowerCase());
}

const FLIP: Record<string, string> = {
  COMPARE_GREATERTHAN: 'COMPARE_LESSTHAN',
  COMPARE_GREATERTHANOREQUALTO: 'COMPARE_LESSTHANOREQUALTO',
  COMPARE_LESSTHAN: 'COMPARE_GREATERTHAN',
  COMPARE_LESSTHANOREQUALTO: 'COMPARE_GREATERTHANOREQUALTO',
  COMPARE_EQUAL: 'COMPARE_EQUAL',
};

/** Top-level AND conjuncts of a WHERE clause that compare a column with constants. */
function conditions(where: unknown): Condition[] {
  if (!isNode(where)) return [];
  if (where.class === 'CONJUNCTION' && where.type === 'CONJUNCTION_AND') return (where.children as unknown[]).flatMap(conditions);
  if (where.class === 'BETWEEN') {
    const column = columnOf(where.input);
    const lo = constantOf(where.lower);
    const hi = constantOf(where.upper);
    return column && lo !== undefined && hi !== undefined ? [{ column, lo, hi }] : [];
  }
  if (where.class !== 'COMPARISON') return [];
  let type = where.type as string;
  let column = columnOf(where.left);
  let value = constantOf(where.right);
  if (!column) {
    column = columnOf(where.right);
    value = constantOf(where.left);
    type = FLIP[type] ?? '';
  }
  if (!column || value === undefined) return [];
  switch (type) {
    case 'COMPARE_EQUAL':
      return [{ column, lo: value, hi: value }];
    case 'COMPARE_GREATERTHAN':
      return [{ column, lo: value, loStrict: true }];
    case 'COMPARE_GREATERTHANOREQUALTO':
      return [{ column, lo: value }];
    case 'COMPARE_LESSTHAN':
      return [{ column, hi: value, hiStrict: true }];
    case 'COMPARE_LESSTHANOREQUALTO':
      return [{ column, hi: value }];
    default:
      return [];
  }
}

const LEVELS = ['year', 'month', 'day', 'hour'] as const;
type Level = (typeof LEVELS)[number];

/** The time range the conditions allow for rows of a table (unbounded sides stay undefined). */
function rangeFor(table: TableName, conds: Condition[]): TimeRange {
  let range: TimeRange = {};
  const timeColumn = PARTITION_TIME_COLUMN[table];
  const ints: Partial<Record<Level, { lo?: number; hi?: number }>> = {};
  for (const c of conds) {
    const name = c.column[c.column.length - 1]!;
    if (name === timeColumn) {
      const lo = typeof c.lo === 'string' ? parseTimeLiteral(c.lo) : undefined;
      const hi = typeof c.hi === 'string' ? parseTimeLiteral(c.hi) : undefined;
      // `< t` excludes t itself unless t had sub-millisecond digits (then rows at its millisecond pass).
      const exact = typeof c.hi === 'string' && !/\.\d{3}\d*[1-9]/.test(c.hi);
      range = intersect(range, { fromMs: lo, toMs: hi === undefined ? undefined : c.hiStrict && exact ? hi : hi + 1 });
    } else if ((LEVELS as readonly string[]).includes(name) && (name !== 'hour' || TABLES[table].granularity === 'hour')) {
      const b = (ints[name as Level] ??= {});
      const lo = toInt(c.lo, c.loStrict ? 1 : 0);
      const hi = toInt(c.hi, c.hiStrict ? -1 : 0);
      if (lo !== undefined) b.lo = b.lo === undefined ? lo : Math.max(b.lo, lo);
      if (hi !== undefined) b.hi = b.hi === undefined ? hi : Math.min(b.hi, hi);
    }
  }
  // year, then month when the year is fixed, then day when the month is fixed, then hour.
  const fixed: number[] = [];
  for (let i = 0; i < LEVELS.length; i++) {
    const b = ints[LEVELS[i]!];
    if (!b || (b.lo === undefined && b.hi === undefined)) break;
    const start = (v: number): number => utc([...fixed, v]);
    const parentEnd = (): number | undefined => (fixed.length === 0 ? undefined : utc([...fixed.slice(0, -1), fixed[fixed.length - 1]! + 1]));
    range = intersect(range, {
      fromMs: b.lo === undefined ? undefined : start(b.lo),
      toMs: b.hi === undefined ? parentEnd() : start(b.hi + 1),
    });
    if (b.lo === undefined || b.lo !== b.hi) break;
    fixed.push(b.lo);
  }
  return range;
}

function toInt(v: string | number | undefined, adjust: number): number | undefined {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : undefined;
  return n === undefined || !Number.isInteger(n) ? undefined : n + adjust;
}

/** Epoch ms of [year, month, day, hour] (month and day 1-based; missing parts are their first value; overflow rolls over). */
function utc(parts: number[]): number {
  return Date.UTC(parts[0]!, (parts[1] ?? 1) - 1, parts[2] ?? 1, parts[3] ?? 0);
}

interface TableRef {
  table: TableName;
  alias: string;
}

/** Base tables directly in a FROM (through joins); `others` counts every other kind of source. */
function fromTables(from: unknown, out: { refs: TableRef[]; nodes: Set<unknown>; others: number }): void {
  if (!isNode(from)) return;
  if (from.type === 'JOIN') {
    fromTables(from.left, out);
    fromTables(from.right, out);
    return;
  }
  if (from.type === 'BASE_TABLE') {
    const name = String(from.table_name).toLowerCase();
    if (isTable(name)) {
      out.refs.push({ table: name, alias: String(from.alias ?? '').toLowerCase() || name });
      out.nodes.add(from);
      return;
    }
  }
  out.others++;
}

/**
 * For each lake table a parsed query references: the range it can read (`undefined` = all of it).
 * `ast` is the parsed JSON of `json_serialize_sql(sql)`.
 */
export function tableRangesFromAst(ast: unknown): Map<TableName, TimeRange | undefined> {
  const result = new Map<TableName, TimeRange | undefined>();
  const add = (t: TableName, r: TimeRange | undefined): void => {
    result.set(t, result.has(t) ? union(result.get(t), r) : r);
  };
  const handled = new Set<unknown>();
  const walk = (x: unknown): void => {
    if (Array.isArray(x)) {
      for (const y of x) walk(y);
      return;
    }
    if (!isNode(x)) return;
    if (x.type === 'SELECT_NODE') {
      const from = { refs: [] as TableRef[], nodes: handled, others: 0 };
      fromTables(x.from_table, from);
      const conds = conditions(x.where_clause);
      const alone = from.refs.length === 1 && from.others === 0;
      for (const ref of from.refs) {
        const mine = conds.filter((c) => (c.column.length === 1 ? alone : c.column[c.column.length - 2] === ref.alias));
        const r = rangeFor(ref.table, mine);
        add(ref.table, r.fromMs === undefined && r.toMs === undefined ? undefined : r);
      }
    } else if (x.type === 'BASE_TABLE' && !handled.has(x)) {
      const name = String(x.table_name).toLowerCase();
      if (isTable(name)) add(name, undefined);
    }
    for (const v of Object.values(x)) if (typeof v === 'object' && v !== null) walk(v);
  };
  walk(ast);
  return result;
}

/** Tables whose names appear as words in the SQL text: the fallback when DuckDB cannot serialize the statement. */
export function tablesNamedIn(sql: string): TableName[] {
  return TABLE_NAMES.filter((t) => new RegExp(`\\b${t}\\b`, 'i').test(sql));
}

/**
 * The lake tables a SQL text reads and the time range of each (`undefined` = all of it), parsed
 * by DuckDB on `conn`. When DuckDB cannot serialize the statement (only SELECTs serialize), every
 * table named in the text is read whole.
 */
export async function tableRanges(conn: DuckDBConnection, sql: string): Promise<Map<TableName, TimeRange | undefined>> {
  try {
    const r = await conn.runAndReadAll(`SELECT json_serialize_sql('${sql.replaceAll("'", "''")}')`);
    const ast = JSON.parse(String(r.getRowsJS()[0]![0])) as { error?: boolean };
    if (!ast.error) return tableRangesFromAst(ast);
  } catch {
    // Not serializable (e.g. PRAGMA): the names in the text decide below.
  }
  const ranges = new Map<TableName, TimeRange | undefined>();
  for (const t of tablesNamedIn(sql)) ranges.set(t, undefined);
  return ranges;
}
