/**
 * Text renderings of a query result: an aligned table for people, CSV (RFC 4180) and JSON for
 * programs. Dates print as YYYY-MM-DD, timestamps as ISO-8601 UTC, NULL as `NULL` in tables and
 * empty in CSV.
 */
import type { QueryResult } from './query.js';

/** Options of `formatTable`. */
export interface TableFormatOptions {
  /** Longer cell texts are cut to this many characters, ending in '…'. Default 80; 0 = never cut. */
  maxCellWidth?: number;
}

const isNumericType = (t: string | undefined): boolean =>
  t !== undefined && /^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT|FLOAT|DOUBLE|DECIMAL)/.test(t);

/** A JSON-safe value: bigint → number when exact, else string; DATE → YYYY-MM-DD; timestamps → ISO. */
export function jsonValue(v: unknown, type: string | undefined): unknown {
  if (v === null || v === undefined) return null;
  if (typeof v === 'bigint') return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString();
  if (v instanceof Date) return type === 'DATE' ? v.toISOString().slice(0, 10) : v.toISOString();
  if (Array.isArray(v)) return v.map((x) => jsonValue(x, undefined));
  if (typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, jsonValue(x, undefined)]));
  if (typeof v === 'number' && !Number.isFinite(v)) return String(v);
  return v;
}

/** One value as display text. */
export function cellText(v: unknown, type: string | undefined): string {
  if (v === null || v === undefined) return 'NULL';
  const j = jsonValue(v, type);
  return typeof j === 'string' ? j : typeof j === 'object' ? JSON.stringify(j) : String(j);
}

export function formatTable(r: QueryResult, options: TableFormatOptions = {}): string {
  const max = options.maxCellWidth ?? 80;
  const cut = (s: string): string => {
    const flat = s.replace(/[\r\n\t]/g, ' ');
    return max > 0 && flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
  };
  const rows = r.rows.map((row) => row.map((v, i) => cut(cellText(v, r.types[i]))));
  const widths = r.columns.map((c, i) => Math.max(c.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[], header = false): string =>
    cells.map((c, i) => (!header && isNumericType(r.types[i]) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [
    line(r.columns, true),
    widths.map((w) => '-'.repeat(w)).join('  '),
    ...rows.map((row) => line(row)),
    `(${rows.length} row${rows.length === 1 ? '' : 's'})`,
  ].join('\n');
}

export function formatCsv(r: QueryResult): string {
  const esc = (v: unknown, type: string | undefined): string => {
    if (v === null || v === undefined) return '';
    const s = cellText(v, type);
    return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
  };
  return [r.columns.map((c) => esc(c, undefined)).join(','), ...r.rows.map((row) => row.map((v, i) => esc(v, r.types[i])).join(','))].join('\n');
}

/** A JSON array of row objects, one row per line. */
export function formatJson(r: QueryResult): string {
  if (r.rows.length === 0) return '[]';
  const lines = r.rows.map((row) => JSON.stringify(Object.fromEntries(r.columns.map((c, i) => [c, jsonValue(row[i], r.types[i])]))));
  return `[\n${lines.join(',\n')}\n]`;
}
