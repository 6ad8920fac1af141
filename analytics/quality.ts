/**
 * `sluice quality`: data-quality checks over a lake. Each check passes, warns or fails with a
 * one-line summary and, when something is wrong, one line per problem (naming the file, hour or
 * event id). The report is `ok` when no check fails.
 *
 * | check        | fails when |
 * |--------------|------------|
 * | files        | a Parquet file cannot be read (its footer, or, once a check trips on it, its pages; it is then left out of the other checks); a file a commit record added is missing; a Parquet file no record added (a stray or copied file) or one a record removed is present; a file's row count differs from its record |
 * | completeness | per hour of receive time, bronze rows ≠ silver rows + duplicates dropped; or the flush commit records' `stats` disagree with their files or with the lake (see below). After retention (`compact --retention`), only receive hours from bronze's cut + 1 day (the dedup window) and events from silver's cut are compared |
 * | uniqueness   | an event_id appears twice in silver |
 * | freshness    | now − newest received_at of bronze or silver > maxStalenessMs; silver has events after gold's newest hourly window in an hour that ended more than maxStalenessMs + allowedLatenessMs before silver's newest event time (or now, if that is earlier) |
 * | gold         | a closed hour/day (older than the newest event − goldDelayMs) has no gold row (unless the lake's frontier says it is not emitted yet) or its counts differ from silver ("stale partition"; sessions too when the frontier gives the gap); windows with late events awaiting reconciliation only warn; windows before a retention cut of silver or of their gold table are not compared |
 * | sessions     | (with the lake's frontier) a closed session in gold's `sessions` differs from the sessions recomputed from silver's event times by the gap rule alone (missing, extra, duplicated, other end or count) |
 * | late rate    | too-late events / silver events over the last rateWindowMs > maxLateRate (5 %) |
 * | invalid rate | dead-lettered / received events over the last rateWindowMs > maxInvalidRate |
 * | anomalies    | an hourly events or active_users total is more than anomalyZ robust z-scores (median/MAD, see `robustZ`) from the same hour on previous days, and differs from that median by ≥ anomalyMinChange of it (hours where value and median are both below anomalyMinVolume are not judged) |
 * | schema drift | (warns only) event types, property keys or columns first seen in the last driftWindowMs |
 *
 * Completeness, exactly: DLQ rows never reach bronze (they are rejected before the log), so
 * per receive hour `bronze = silver + duplicates`, where a duplicate is a bronze row that is not
 * the first copy of its event_id in log order (shard, log_offset). Independently, every shard
 * flush commit record carries `stats: { bronzeRows, silverRows, duplicates, tooLate }` (what the
 * engine counted), and the check requires, per record, bronzeRows = silverRows + duplicates and
 * that the record's bronze/silver files hold bronzeRows/silverRows rows; and over the lake
 * (unless retention has removed files), Σ stats equal the rows and duplicates found in the files.
 *
 * Queries read every Parquet file present (not only committed ones), so a deleted or copied file
 * shows up in the numbers as well as in the files check.
 */
import { partitionOf, partitionTimeOfKey, TABLES, type TableName } from '../common/lake-layout.js';
import { SluiceError, userError } from '../common/errors.js';
import { DEFAULT_METRIC_EVENT_TYPES, sessionsSql } from '../engine/gold-sql.js';
import { readFrontier, type Frontier } from '../engine/reconcile.js';
import { foldCommitRecords, type CommitRecord } from '../storage/commit-record.js';
import { isLakeDamage, isVanished, openLakeQuery, partitionColumns, TABLE_SCHEMAS, type LakeQuery } from './query.js';

const HOUR = 3_600_000;
const DAY = 86_400_000;

export type CheckStatus = 'pass' | 'warn' | 'fail';

/** One check's outcome. */
export interface CheckResult {
  /** Stable name: files, completeness, uniqueness, freshness, gold, sessions, late rate, invalid rate, anomalies, schema drift. */
  name: string;
  status: CheckStatus;
  /** One line for people. */
  summary: string;
  /** One line per problem found (empty when it passed). */
  problems: string[];
  /** Numbers behind the verdict, for machines. */
  details?: Record<string, unknown>;
}

export interface QualityReport {
  lake: string;
  /** ISO-8601 time the checks were evaluated as of. */
  now: string;
  /** No check failed. */
  ok: boolean;
  checks: CheckResult[];
}

/** Options of `runQualityChecks`; every threshold has a default (`QUALITY_DEFAULTS`). Times in ms. */
export interface QualityOptions {
  lake: string;
  s3Endpoint?: string;
  cacheDir?: string;
  /** Evaluate as of this time (epoch ms). Default: Date.now(). */
  now?: number;
  /** Bronze/silver newest receive time older than this fails freshness. */
  maxStalenessMs?: number;
  /** The engine's allowed lateness: gold may lag silver by this much more. */
  allowedLatenessMs?: number;
  /** Hours ending more than this before the newest silver event time must have matching gold. */
  goldDelayMs?: number;
  /** Late and invalid rates are computed over receive times in [now − rateWindowMs, now]. */
  rateWindowMs?: number;
  /** Fail above this fraction of too-late events. */
  maxLateRate?: number;
  /** Fail above this fraction of dead-lettered events. */
  maxInvalidRate?: number;
  /** |robust z| above this flags an hourly anomaly. */
  anomalyZ?: number;
  /** …and only when the value also differs from the median by at least this fraction of it. */
  anomalyMinChange?: number;
  /** Hours where both the value and the median are below this are not judged (too few events to tell noise from change). */
  anomalyMinVolume?: number;
  /** Same-hour history used as the baseline, in days. */
  anomalyHistoryDays?: number;
  /** Fewer same-hour history points than this: the hour is not judged. */
  anomalyMinHistory?: number;
  /** Hours judged: those starting within this much before the newest gold hour. */
  anomalyWindowMs?: number;
  /** Event types / property keys / columns first seen within this much before now count as drift. */
  driftWindowMs?: number;
}

export const QUALITY_DEFAULTS = {
  maxStalenessMs: HOUR,
  allowedLatenessMs: 2 * HOUR,
  goldDelayMs: 3 * HOUR,
  rateWindowMs: DAY,
  maxLateRate: 0.05,
  maxInvalidRate: 0.05,
  anomalyZ: 3.5,
  anomalyMinChange: 0.2,
  anomalyMinVolume: 50,
  anomalyHistoryDays: 7,
  anomalyMinHistory: 3,
  anomalyWindowMs: DAY,
  driftWindowMs: DAY,
} as const;

type ResolvedQualityOptions = QualityOptions & typeof QUALITY_DEFAULTS & { now: number };

export function validateQualityOptions(o: QualityOptions): ResolvedQualityOptions {
  const defined = Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
  const v = { ...QUALITY_DEFAULTS, now: Date.now(), ...defined } as ResolvedQualityOptions;
  if (!Number.isFinite(v.now)) throw userError('invalid_option', `quality now must be a time, got ${String(o.now)}`);
  for (const k of ['maxStalenessMs', 'allowedLatenessMs', 'goldDelayMs', 'rateWindowMs', 'anomalyWindowMs', 'driftWindowMs', 'anomalyZ', 'anomalyMinChange'] as const) {
    if (!(typeof v[k] === 'number' && v[k] >= 0)) throw userError('invalid_option', `quality option ${k} must be a number ≥ 0, got ${String(v[k])}`);
  }
  for (const k of ['maxLateRate', 'maxInvalidRate'] as const) {
    if (!(typeof v[k] === 'number' && v[k] >= 0 && v[k] <= 1)) throw userError('invalid_option', `quality option ${k} must be a fraction between 0 and 1 (e.g. 0.05 for 5 %), got ${String(v[k])}`);
  }
  for (const k of ['anomalyHistoryDays', 'anomalyMinHistory', 'anomalyMinVolume'] as const) {
    if (!(Number.isInteger(v[k]) && v[k] >= 1)) throw userError('invalid_option', `quality option ${k} must be a positive integer, got ${String(v[k])}`);
  }
  return v;
}

const num = (v: unknown): number => (v === null || v === undefined ? 0 : Number(v));
const iso = (ms: number): string => new Date(ms).toISOString();
const ts = (ms: number): string => `TIMESTAMPTZ '${iso(ms)}'`;
const pct = (x: number): string => `${(x * 100).toFixed(2)} %`;
const minutes = (ms: number): string => (ms % HOUR === 0 ? `${ms / HOUR} h` : `${Math.round(ms / 60_000)} min`);
const timeOf = (v: unknown): number | undefined => (v instanceof Date ? v.getTime() : undefined);

function result(name: string, problems: string[], okSummary: string, failSummary: string, status: CheckStatus = 'fail', details?: Record<string, unknown>): CheckResult {
  return problems.length === 0 ? { name, status: 'pass', summary: okSummary, problems, details } : { name, status, summary: failSummary, problems, details };
}

export async function runQualityChecks(options: QualityOptions): Promise<QualityReport> {
  const o = validateQualityOptions(options);
  const q = await openLakeQuery({ lake: o.lake, s3Endpoint: o.s3Endpoint, cacheDir: o.cacheDir, mode: 'present' });
  try {
    const rows = async (sql: string): Promise<Array<Record<string, unknown>>> => {
      const r = await q.run(sql);
      return r.rows.map((row) => Object.fromEntries(r.columns.map((c, i) => [c, row[i]])));
    };
    const records = q.lake.commitRecords.filter((r) => !r.aborted);
    const files = await checkFiles(q, records);
    const checks: CheckResult[] = [files];
    const frontier = await readFrontier(q.lake.store).catch(() => undefined);
    const run = (name: string, check: () => Promise<CheckResult | CheckResult[]>): Promise<void> => runCheck(q, files, checks, name, check);
    await run('completeness', () => checkCompleteness(rows, records));
    await run('uniqueness', () => checkUniqueness(rows));
    await run('freshness', () => checkFreshness(rows, o));
    await run('gold', () => checkGold(rows, records, o, frontier));
    await run('sessions', () => checkSessions(rows, records, o, frontier));
    await run('rates', () => checkRates(rows, records, o));
    await run('anomalies', () => checkAnomalies(rows, o));
    await run('schema drift', () => checkDrift(q, rows, o));
    return { lake: o.lake, now: iso(o.now), ok: !checks.some((c) => c.status === 'fail'), checks };
  } finally {
    await q.close();
  }
}

/**
 * Runs one check. A file damaged inside (its footer reads, a page does not) makes the first check
 * that decodes it fail: the files are then read whole to find which, each one found is reported
 * by the files check and left out, and the check runs again over the files that can be read.
 * Should none be found, the check fails with DuckDB's words instead of ending the report.
 */
async function runCheck(q: LakeQuery, files: CheckResult, checks: CheckResult[], name: string, check: () => Promise<CheckResult | CheckResult[]>): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      const r = await check();
      checks.push(...(Array.isArray(r) ? r : [r]));
      return;
    } catch (err) {
      if (!(err instanceof SluiceError && err.code === 'lake_file_damaged')) throw err;
      if (attempt > 0 || (await leaveOutDamaged(q, files, 'decode')) === 0) {
        checks.push({ name, status: 'fail', summary: `could not run: ${err.message}`, problems: [] });
        return;
      }
    }
  }
}

/**
 * Reads the footers (`how` = 'footer') or every column (`how` = 'decode') of each Parquet file
 * present, a table at a time and file by file only in a table that fails as a whole. Each file
 * that cannot be read becomes a problem of the files check and is left out of every later query.
 * Returns how many were found; with 'footer', also the row count of each readable file.
 */
async function leaveOutDamaged(q: LakeQuery, files: CheckResult, how: 'footer' | 'decode', rowsOf?: Map<string, number>): Promise<number> {
  const sql = (paths: string[]): string => {
    const list = paths.map((p) => `'${p.replaceAll("'", "''")}'`).join(', ');
    return how === 'footer' ? `SELECT file_name, num_rows FROM parquet_file_metadata([${list}])` : `SELECT count(COLUMNS(*)) FROM read_parquet([${list}], union_by_name = true)`;
  };
  let found = 0;
  for (const table of Object.keys(TABLES) as TableName[]) {
    const keys = (await q.lake.keys(table)).map((o) => o.key);
    if (keys.length === 0) continue;
    await q.lake.paths(table);
    const keyOf = new Map(keys.map((k) => [q.lake.pathOf(k), k]));
    const record = (rows: unknown[][]): void => {
      if (how === 'footer') for (const [file, n] of rows) rowsOf?.set(keyOf.get(String(file))!, num(n));
    };
    try {
      record((await q.connection.runAndReadAll(sql([...keyOf.keys()]))).getRowsJS() as unknown[][]);
      continue;
    } catch {
      // Some file of this table is damaged: find which.
    }
    for (const [path, key] of keyOf) {
      try {
        record((await q.connection.runAndReadAll(sql([path]))).getRowsJS() as unknown[][]);
      } catch (err) {
        if (isVanished(err, q.lake.readRoot)) continue; // compacted away meanwhile: its rows are in the merged file
        if (!isLakeDamage(err)) throw err;
        const why = (err as Error).message.split('\n')[0]!;
        q.lake.leaveOut(key, why);
        files.problems.push(`damaged file: ${key} cannot be read (${why}); the other checks leave it out — restore it from a copy or move it away`);
        files.status = 'fail';
        files.summary = `${files.problems.length} file problem${files.problems.length === 1 ? '' : 's'}`;
        found++;
      }
    }
  }
  return found;
}

async function checkFiles(q: LakeQuery, records: CommitRecord[]): Promise<CheckResult> {
  const check: CheckResult = { name: 'files', status: 'pass', summary: '', problems: [] };
  const rowsOf = new Map<string, number>();
  await leaveOutDamaged(q, check, 'footer', rowsOf);
  const problems = check.problems;
  if (records.length === 0) {
    if (problems.length > 0) return check;
    return { name: 'files', status: 'warn', summary: 'no commit records under _sluice/commits/: cannot tell committed files from stray ones', problems };
  }
  const removedBy = new Map<string, string>();
  const addedBy = new Map<string, string>();
  for (const r of records) {
    for (const f of r.added) addedBy.set(f.key, r.id);
    for (const f of r.removed) removedBy.set(f.key, r.id);
  }
  let files = 0;
  for (const table of Object.keys(TABLES) as TableName[]) {
    const present = await q.lake.present(table);
    files += present.length;
    const presentKeys = new Set(present.map((p) => p.key));
    const live = foldCommitRecords(records, `${TABLES[table].prefix}/`, presentKeys);
    for (const [key, rows] of live) {
      if (!key.endsWith('.parquet')) continue;
      if (!presentKeys.has(key)) problems.push(`missing file: ${key} (added by commit record ${addedBy.get(key)}, not in the lake)`);
      else if (rows > 0 && rowsOf.has(key) && rowsOf.get(key) !== rows) problems.push(`row count differs: ${key} has ${rowsOf.get(key)} rows, its commit record says ${rows}`);
    }
    for (const key of presentKeys) {
      if (live.has(key)) continue;
      const by = removedBy.get(key);
      problems.push(
        by === undefined
          ? `file not in any commit record: ${key} (a stray or copied file; readers of the commit records ignore it, glob readers double-count it)`
          : `file removed by commit record ${by} is still present: ${key} (an unfinished compaction or retention; run sluice compact)`,
      );
    }
  }
  return Object.assign(check, result('files', problems, `${files} files, each added by a commit record, none missing, row counts as recorded`, `${problems.length} file problem${problems.length === 1 ? '' : 's'}`, 'fail', { files, records: records.length }));
}

type Rows = (sql: string) => Promise<Array<Record<string, unknown>>>;

/** The engine's default dedup window (a repeat received later than this after the first is not dropped). */
const DEDUP_MARGIN_MS = DAY;

/**
 * Per table, the end of the newest partition a retention record removed: the table's data before
 * it is gone on purpose (`sluice compact --retention`), so checks comparing layers start there.
 */
function expiredThrough(records: CommitRecord[]): Partial<Record<TableName, number>> {
  const out: Partial<Record<TableName, number>> = {};
  const tables = Object.entries(TABLES) as Array<[TableName, (typeof TABLES)[TableName]]>;
  for (const r of records) {
    if (r.kind !== 'retention') continue;
    for (const f of r.removed) {
      const hit = tables.find(([, spec]) => f.key.startsWith(`${spec.prefix}/`));
      const start = partitionTimeOfKey(f.key);
      if (hit === undefined || start === undefined) continue;
      const end = start + (hit[1].granularity === 'day' ? DAY : HOUR);
      if (end > (out[hit[0]] ?? -Infinity)) out[hit[0]] = end;
    }
  }
  return out;
}

const expiredSummary = (e: Partial<Record<TableName, number>>): string =>
  Object.entries(e)
    .map(([t, end]) => `${t} before ${iso(end)}`)
    .join(', ');

async function checkCompleteness(rows: Rows, records: CommitRecord[]): Promise<CheckResult> {
  // After retention, judge only what both layers still hold: receive hours from bronze's cut plus
  // the dedup window (a repeat's first copy may have expired with its bronze partition), and on
  // both sides only events whose silver partition (by event time) was not expired.
  const expired = expiredThrough(records);
  const judgedFrom = Math.max(expired.bronze_events === undefined ? -Infinity : expired.bronze_events + DEDUP_MARGIN_MS, expired.events ?? -Infinity);
  const receivedFrom = Number.isFinite(judgedFrom) ? `WHERE received_at >= ${ts(judgedFrom)}` : '';
  const eventsFrom = expired.events === undefined ? '' : `${receivedFrom === '' ? 'WHERE' : 'AND'} event_time >= ${ts(expired.events)}`;
  const perHour = await rows(`
    WITH b AS (
      SELECT date_trunc('hour', received_at) AS h, received_at, event_time,
             row_number() OVER (PARTITION BY event_id ORDER BY shard, log_offset, received_at) > 1 AS dup
      FROM bronze_events),
    bh AS (SELECT h, count(*) AS bronze, count(*) FILTER (WHERE dup) AS duplicates FROM b ${receivedFrom} ${eventsFrom} GROUP BY h),
    sh AS (SELECT date_trunc('hour', received_at) AS h, count(*) AS silver FROM events ${receivedFrom} ${eventsFrom} GROUP BY h),
    dh AS (SELECT date_trunc('hour', received_at) AS h, count(*) AS dlq FROM dlq ${receivedFrom} GROUP BY h)
    SELECT h, coalesce(bronze, 0) AS bronze, coalesce(silver, 0) AS silver, coalesce(duplicates, 0) AS duplicates, coalesce(dlq, 0) AS dlq
    FROM bh FULL JOIN sh USING (h) FULL JOIN dh USING (h)
    ORDER BY h`);
  const problems: string[] = [];
  const totals = { bronze: 0, silver: 0, duplicates: 0, dlq: 0 };
  for (const r of perHour) {
    const [b, s, d] = [num(r.bronze), num(r.silver), num(r.duplicates)];
    totals.bronze += b;
    totals.silver += s;
    totals.duplicates += d;
    totals.dlq += num(r.dlq);
    if (b !== s + d) problems.push(`receive hour ${iso(timeOf(r.h)!)}: bronze ${b} ≠ silver ${s} + duplicates ${d} (${b > s + d ? `${b - s - d} events missing from silver` : `${s + d - b} rows too many in silver`})`);
  }
  const flushes = records.filter((r) => r.kind === 'flush' && r.stats);
  const inTable = (r: CommitRecord, t: TableName): number => r.added.filter((f) => f.key.startsWith(`${TABLES[t].prefix}/`)).reduce((n, f) => n + f.rows, 0);
  const sum = { bronze: 0, silver: 0, duplicates: 0, tooLate: 0 };
  for (const r of flushes) {
    const st = r.stats!;
    sum.bronze += st.bronzeRows;
    sum.silver += st.silverRows;
    sum.duplicates += st.duplicates;
    sum.tooLate += st.tooLate;
    if (st.bronzeRows !== st.silverRows + st.duplicates) problems.push(`commit record ${r.id}: stats say bronze ${st.bronzeRows} ≠ silver ${st.silverRows} + duplicates ${st.duplicates}`);
    if (inTable(r, 'bronze_events') !== st.bronzeRows) problems.push(`commit record ${r.id}: its bronze files hold ${inTable(r, 'bronze_events')} rows, its stats say ${st.bronzeRows}`);
    if (inTable(r, 'events') !== st.silverRows) problems.push(`commit record ${r.id}: its silver files hold ${inTable(r, 'events')} rows, its stats say ${st.silverRows}`);
  }
  const retention = records.some((r) => r.kind === 'retention');
  // Erasure rewrites (kind 'erase'): rows removed on purpose, subtracted from what the flushes recorded.
  const erases = records.filter((r) => r.kind === 'erase');
  const removedFrom = (r: CommitRecord, t: TableName): number => r.removed.filter((f) => f.key.startsWith(`${TABLES[t].prefix}/`)).reduce((n, f) => n + f.rows, 0);
  const erased = (t: TableName): number => erases.reduce((n, r) => n + removedFrom(r, t) - inTable(r, t), 0);
  const want = { bronze: sum.bronze - erased('bronze_events'), silver: sum.silver - erased('events') };
  if (flushes.length > 0 && !retention) {
    if (want.bronze !== totals.bronze) problems.push(`flush records count ${sum.bronze} bronze rows${erases.length > 0 ? ` (${want.bronze} after erasures)` : ''}; the lake holds ${totals.bronze}`);
    if (want.silver !== totals.silver) problems.push(`flush records count ${sum.silver} silver rows${erases.length > 0 ? ` (${want.silver} after erasures)` : ''}; the lake holds ${totals.silver}`);
    // An erased user's duplicates went with their bronze rows (bronze erased = silver erased + their duplicates).
    const dups = sum.duplicates - (erased('bronze_events') - erased('events'));
    if (dups !== totals.duplicates) problems.push(`flush records count ${sum.duplicates} duplicates dropped${erases.length > 0 ? ` (${dups} after erasures)` : ''}; bronze holds ${totals.duplicates} repeated event ids`);
  }
  const dlqRecorded = records.filter((r) => r.kind === 'flush' && r.id.startsWith('dlq-')).reduce((n, r) => n + inTable(r, 'dlq'), 0) - erased('dlq');
  if (!retention && dlqRecorded > 0 && dlqRecorded !== totals.dlq) problems.push(`dlq commit records count ${dlqRecorded} rejected events${erases.length > 0 ? ' (after erasures)' : ''}; the lake holds ${totals.dlq}`);
  return result(
    'completeness',
    problems,
    Number.isFinite(judgedFrom)
      ? `bronze ${totals.bronze} = silver ${totals.silver} + duplicates ${totals.duplicates} in every receive hour from ${iso(judgedFrom)}${expired.events === undefined ? '' : ` (events from ${iso(expired.events)})`}, before which retention removed ${expiredSummary(expired)}; ${totals.dlq} rejected to the DLQ`
      : `bronze ${totals.bronze} = silver ${totals.silver} + duplicates ${totals.duplicates} in every receive hour${flushes.length > 0 ? `, matching ${flushes.length} flush records` : ' (no flush stats to compare)'}; ${totals.dlq} rejected to the DLQ`,
    `${problems.length} accounting mismatch${problems.length === 1 ? '' : 'es'}`,
    'fail',
    { ...totals, flushRecords: flushes.length, statsTotals: sum, ...(Number.isFinite(judgedFrom) ? { judgedFrom: iso(judgedFrom), expiredThrough: Object.fromEntries(Object.entries(expired).map(([t, end]) => [t, iso(end)])) } : {}) },
  );
}

async function checkUniqueness(rows: Rows): Promise<CheckResult> {
  const dups = await rows(`SELECT event_id, count(*) AS n FROM events GROUP BY event_id HAVING count(*) > 1 ORDER BY n DESC, event_id`);
  const shown = dups.slice(0, 20).map((d) => `event_id ${String(d.event_id)} appears ${num(d.n)} times in silver`);
  if (dups.length > shown.length) shown.push(`… and ${dups.length - shown.length} more duplicated event ids`);
  return result('uniqueness', shown, 'no event_id appears twice in silver', `${dups.length} event id${dups.length === 1 ? '' : 's'} duplicated in silver`, 'fail', { duplicatedIds: dups.length });
}

async function checkFreshness(rows: Rows, o: ResolvedQualityOptions): Promise<CheckResult> {
  const [r] = await rows(`SELECT
      (SELECT max(received_at) FROM bronze_events) AS bronze,
      (SELECT max(received_at) FROM events) AS silver,
      (SELECT max(event_time) FROM events) AS silver_event,
      (SELECT max(window_start) FROM hourly_metrics) AS gold`);
  const ev = timeOf(r!.silver_event);
  // Bronze and silver are judged against the clock (is traffic arriving?), gold against silver's
  // newest event time (is gold keeping up with silver?): events of a backfill, or a lake whose
  // traffic paused, end their hours long before now without gold being behind.
  // Gold is behind by the age of the oldest silver hour it does not cover yet (hours without events
  // have no gold row to look for: a pause in event time is not a lag).
  const goldReference = ev === undefined ? o.now : Math.min(o.now, ev);
  const goldEnd = timeOf(r!.gold) === undefined ? undefined : timeOf(r!.gold)! + HOUR;
  const layers: Array<[string, number | undefined, string]> = [
    ['bronze', timeOf(r!.bronze), 'newest event received'],
    ['silver', timeOf(r!.silver), 'newest event received'],
    ['gold', goldEnd, 'newest hourly window ends'],
  ];
  const problems: string[] = [];
  const parts: string[] = [];
  for (const [layer, newest, what] of layers) {
    if (layer !== 'gold') {
      if (newest === undefined) problems.push(`${layer} has no data`);
      else {
        parts.push(`${layer} ${what} ${iso(newest)}`);
        if (o.now - newest > o.maxStalenessMs) problems.push(`${layer} is stale: ${what} ${iso(newest)}, ${minutes(o.now - newest)} before ${iso(o.now)} (limit ${minutes(o.maxStalenessMs)})`);
      }
      continue;
    }
    // A young lake has no gold yet: its first hours wait for the allowed lateness like any other.
    parts.push(newest === undefined ? 'gold has no hourly window yet' : `gold ${what} ${iso(newest)}`);
    if (ev === undefined) continue;
    const limit = o.maxStalenessMs + o.allowedLatenessMs;
    const [u] = await rows(`SELECT min(event_time) AS t FROM events${newest === undefined ? '' : ` WHERE event_time >= ${ts(newest)}`}`);
    const uncovered = timeOf(u!.t);
    if (uncovered === undefined) continue;
    const hour = Math.floor(uncovered / HOUR) * HOUR;
    const age = goldReference - (hour + HOUR);
    if (age > limit) {
      const has = newest === undefined ? 'gold has no hourly window' : `newest hourly window ends ${iso(newest)}`;
      problems.push(`gold is stale: ${has}; silver's events of ${iso(hour)} on are in no gold window, their hour ended ${minutes(age)} before silver's newest event time ${iso(goldReference)} (limit ${minutes(limit)})`);
    }
  }
  return result('freshness', problems, parts.join('; '), `${problems.length} stale layer${problems.length === 1 ? '' : 's'}`, 'fail', {
    newest: Object.fromEntries(layers.map(([l, t]) => [l, t === undefined ? null : iso(t)])),
    newestEventTime: ev === undefined ? null : iso(ev),
  });
}

async function checkGold(rows: Rows, records: CommitRecord[], o: ResolvedQualityOptions, frontier: Frontier | undefined): Promise<CheckResult> {
  const expired = expiredThrough(records);
  // With the lake's frontier: windows the engine has not emitted yet (a day held until its sessions
  // close) are not missing, and sessions are compared too — counted from silver as the engine
  // counts them (pieces of one user less than the session gap apart are one session), by start.
  // Sessions that began before silver's retention cut are gone from it: their windows' days are not compared.
  const emitted = (unit: 'hour' | 'day', w: number): boolean =>
    frontier === undefined || (unit === 'hour' ? frontier.emittedMs : (frontier.emittedDailyMs ?? frontier.emittedMs)) >= w + (unit === 'hour' ? HOUR : DAY);
  const sessionsFrom = expired.events === undefined ? -Infinity : expired.events + DAY;
  const [nr] = await rows(`SELECT max(event_time) AS t FROM events`);
  const newest = timeOf(nr!.t);
  if (newest === undefined) return { name: 'gold', status: 'pass', summary: 'no silver events yet', problems: [] };
  const closedBefore = Math.min(o.now, newest) - o.goldDelayMs;
  const t = DEFAULT_METRIC_EVENT_TYPES;
  const list = (xs: string[]): string => xs.map((x) => `'${x.replaceAll("'", "''")}'`).join(', ');
  const problems: string[] = [];
  const warnings: string[] = [];
  let windows = 0;
  for (const [unit, table, step, margin] of [
    ['hour', 'hourly_metrics', HOUR, 0],
    ['day', 'daily_metrics', DAY, HOUR],
  ] as const) {
    const sessions =
      frontier === undefined
        ? ''
        : `,
      ev AS (SELECT event_id, user_id, event_time::TIMESTAMP AS t, session_id FROM events),
      ${sessionsSql(frontier.sessionGapMs)},
      ss AS (SELECT date_trunc('${unit}', first_t)::TIMESTAMPTZ AS w, count(*) AS sessions FROM (SELECT DISTINCT first_event_id, first_t FROM sess) GROUP BY 1)`;
    const cmp = await rows(`
      WITH s0 AS (
        SELECT date_trunc('${unit}', event_time) AS w, count(*) AS events, count(DISTINCT user_id) AS active_users,
               count(*) FILTER (WHERE event_type IN (${list(t.installs)})) AS installs,
               count(*) FILTER (WHERE event_type IN (${list(t.screen_views)})) AS screen_views,
               count(*) FILTER (WHERE event_type IN (${list(t.notification_views)})) AS notification_views,
               count(*) FILTER (WHERE event_type IN (${list(t.notification_opens)})) AS notification_opens
        FROM events GROUP BY 1)${sessions},
      s AS (SELECT s0.*, ${frontier === undefined ? 'NULL' : 'coalesce(ss.sessions, 0)'} AS sessions FROM s0${frontier === undefined ? '' : ' LEFT JOIN ss USING (w)'}),
      g AS (
        SELECT window_start AS w, sum(events) AS events, sum(active_users) AS active_users, sum(installs) AS installs, sum(screen_views) AS screen_views,
               sum(notification_views) AS notification_views, sum(notification_opens) AS notification_opens, sum(sessions) AS sessions, count(*) AS n
        FROM ${table} WHERE device_type = 'ALL' AND app_version = 'ALL' AND country = 'ALL' GROUP BY 1),
      l AS (SELECT date_trunc('${unit}', event_time) AS w, count(*) AS late FROM late_events GROUP BY 1)
      SELECT coalesce(s.w, g.w) AS w, s.events, s.active_users, s.installs, s.screen_views, s.notification_views, s.notification_opens, s.sessions,
             g.events AS g_events, g.active_users AS g_active_users, g.installs AS g_installs, g.screen_views AS g_screen_views,
             g.notification_views AS g_notification_views, g.notification_opens AS g_notification_opens, g.sessions AS g_sessions, g.n AS g_rows, coalesce(l.late, 0) AS late
      FROM s FULL JOIN g USING (w) LEFT JOIN l USING (w)
      WHERE coalesce(s.w, g.w) + INTERVAL ${step / 1000} SECOND <= ${ts(closedBefore - margin)}
      ORDER BY 1`);
    for (const r of cmp) {
      windows++;
      const w = timeOf(r.w)!;
      const where = `${TABLES[table].prefix}/${partitionOf(w, unit)}`;
      const late = num(r.late);
      // Retention removed this window's silver (events before its cut) or its gold file: nothing to compare.
      if (w < (expired.events ?? -Infinity) || w < (expired[table] ?? -Infinity)) {
        windows--;
        continue;
      }
      let problem: string | undefined;
      const compared = ['events', 'active_users', 'installs', 'screen_views', 'notification_views', 'notification_opens', ...(frontier !== undefined && w >= sessionsFrom ? ['sessions'] : [])];
      if (r.events === null || r.events === undefined) problem = `orphan partition ${where}: gold counts ${num(r.g_events)} events in this ${unit}, silver has none`;
      else if (r.g_rows === null || r.g_rows === undefined) {
        if (!emitted(unit, w)) {
          windows--;
          continue;
        }
        problem = `missing partition ${where}: silver has ${num(r.events)} events in this ${unit}, gold has no row`;
      } else if (num(r.g_rows) > 1) problem = `duplicated partition ${where}: ${num(r.g_rows)} total rows for one window`;
      else {
        const diffs = compared
          .filter((c) => num(r[c]) !== num(r[`g_${c}`]))
          .map((c) => `${c} ${num(r[`g_${c}`])} in gold vs ${num(r[c])} in silver`);
        if (diffs.length > 0) problem = `stale partition ${where}: ${diffs.join(', ')}`;
      }
      if (problem === undefined) continue;
      if (late > 0) warnings.push(`${problem} (${late} late events await reconciliation: run sluice reconcile)`);
      else problems.push(problem);
    }
  }
  if (problems.length === 0 && warnings.length > 0) {
    return { name: 'gold', status: 'warn', summary: `${warnings.length} window${warnings.length === 1 ? '' : 's'} awaiting reconciliation of late events`, problems: warnings };
  }
  return result(
    'gold',
    [...problems, ...warnings],
    `${windows} closed hourly and daily windows (ending before ${iso(closedBefore)}) equal a recomputation from silver`,
    `${problems.length} gold window${problems.length === 1 ? '' : 's'} missing or stale`,
    'fail',
    { windows, closedBefore: iso(closedBefore) },
  );
}

/** Most sessions named one by one in the sessions check's problems (the rest are counted). */
const MAX_SESSION_PROBLEMS = 20;

/**
 * Gold's `sessions` against sessions recomputed from silver by the gap rule alone — per user, the
 * events (those with a session, so not the too-late ones) in (event_time, event_id) order, cut
 * wherever two consecutive ones are the gap or more apart. It shares nothing with how the engine
 * sessionizes (its kernels merge session windows as events arrive; gold's SQL merges the pieces
 * silver's ids name): events arriving out of order that the engine failed to merge, a session
 * written twice or not at all show up here. Compared: sessions whose end + gap is behind both the
 * lake's frontier (the engine has written them) and the gold delay, that begin after silver's and
 * the sessions table's retention cuts.
 */
async function checkSessions(rows: Rows, records: CommitRecord[], o: ResolvedQualityOptions, frontier: Frontier | undefined): Promise<CheckResult> {
  if (frontier === undefined) return { name: 'sessions', status: 'pass', summary: 'not compared: the lake has no frontier (_sluice/frontier.json), so its session gap is unknown', problems: [] };
  const gap = frontier.sessionGapMs;
  const expired = expiredThrough(records);
  const from = Math.max(expired.events ?? -Infinity, expired.sessions ?? -Infinity);
  const [nr] = await rows(`SELECT epoch_ms(max(event_time)) AS t FROM events`);
  if (nr?.t === null || nr?.t === undefined) return { name: 'sessions', status: 'pass', summary: 'no silver events yet', problems: [] };
  const closedBy = Math.min(frontier.emittedMs, Math.min(o.now, num(nr.t)) - o.goldDelayMs);
  const compared = (alias: string): string => `${alias}.e + ${gap} <= ${closedBy}${Number.isFinite(from) ? ` AND ${alias}.s >= ${from}` : ''}`;
  const diffs = await rows(`
    WITH ev AS (
      SELECT user_id, epoch_ms(event_time) AS t, event_id,
             lag(epoch_ms(event_time)) OVER (PARTITION BY user_id ORDER BY event_time, event_id) AS prev
      FROM events WHERE session_id IS NOT NULL),
    runs AS (
      SELECT user_id, t, sum(CASE WHEN prev IS NULL OR t - prev >= ${gap} THEN 1 ELSE 0 END)
             OVER (PARTITION BY user_id ORDER BY t, event_id ROWS UNBOUNDED PRECEDING) AS run
      FROM ev),
    a AS (SELECT user_id, min(t) AS s, max(t) AS e, count(*) AS n FROM runs GROUP BY user_id, run),
    b AS (SELECT user_id, epoch_ms(session_start) AS s, max(epoch_ms(session_end)) AS e, max(event_count) AS n, count(*) AS copies FROM sessions GROUP BY user_id, session_start)
    SELECT coalesce(a.user_id, b.user_id) AS user_id, a.s AS a_s, a.e AS a_e, a.n AS a_n, b.s AS b_s, b.e AS b_e, b.n AS b_n, b.copies
    FROM a FULL JOIN b ON a.user_id = b.user_id AND a.s = b.s
    WHERE (a.s IS NULL OR (${compared('a')})) AND (b.s IS NULL OR (${compared('b')}))
      AND (a.s IS NULL OR b.s IS NULL OR a.e <> b.e OR a.n <> b.n OR b.copies > 1)
    ORDER BY coalesce(a.s, b.s), 1
    LIMIT ${MAX_SESSION_PROBLEMS + 1}`);
  const [total] = await rows(`SELECT count(*) AS n FROM sessions`);
  const span = (start: unknown, end: unknown): string => `${iso(num(start))} – ${iso(num(end))}`;
  const problems = diffs.slice(0, MAX_SESSION_PROBLEMS).map((r) => {
    const user = `user ${JSON.stringify(String(r.user_id))}`;
    if (r.b_s === null || r.b_s === undefined) return `missing session: ${user}, ${span(r.a_s, r.a_e)} (${num(r.a_n)} events in silver) has no row in sessions`;
    if (r.a_s === null || r.a_s === undefined) return `session without its events: ${user}, ${span(r.b_s, r.b_e)} in sessions (${num(r.b_n)} events) is not a run of silver events ${gap / 60_000} minutes apart`;
    if (num(r.copies) > 1) return `duplicated session: ${user}, starting ${iso(num(r.b_s))}, has ${num(r.copies)} rows in sessions`;
    return `wrong session: ${user}, starting ${iso(num(r.a_s))}: sessions says ${span(r.b_s, r.b_e)} with ${num(r.b_n)} events, silver ${span(r.a_s, r.a_e)} with ${num(r.a_n)}`;
  });
  if (diffs.length > MAX_SESSION_PROBLEMS) problems.push(`… and more (the first ${MAX_SESSION_PROBLEMS} shown)`);
  return result(
    'sessions',
    problems,
    `closed sessions (ending before ${iso(closedBy - gap)}; ${num(total!.n)} rows in sessions) equal a recomputation from silver's event times with the ${gap / 60_000}-minute gap`,
    `sessions disagree with silver's event times (${gap / 60_000}-minute gap)`,
    'fail',
    { closedBefore: iso(closedBy - gap), gapMs: gap },
  );
}

async function checkRates(rows: Rows, records: CommitRecord[], o: ResolvedQualityOptions): Promise<CheckResult[]> {
  const from = o.now - o.rateWindowMs;
  const window = `[${iso(from)}, ${iso(o.now)}]`;
  const recent = records.filter((r) => r.kind === 'flush' && r.stats && Date.parse(r.time) >= from && Date.parse(r.time) <= o.now);
  const tooLate = recent.reduce((n, r) => n + r.stats!.tooLate, 0);
  const silver = recent.reduce((n, r) => n + r.stats!.silverRows, 0);
  const lateRate = silver > 0 ? tooLate / silver : 0;
  const late: CheckResult = {
    name: 'late rate',
    status: lateRate > o.maxLateRate ? 'fail' : 'pass',
    summary: silver === 0 ? `no flushed events in ${window}` : `${pct(lateRate)} of events flushed in ${window} arrived too late for their gold window (${tooLate} of ${silver}; limit ${pct(o.maxLateRate)})`,
    problems: lateRate > o.maxLateRate ? [`late rate ${pct(lateRate)} > ${pct(o.maxLateRate)}: ${tooLate} of ${silver} events arrived after the watermark (max event time − allowed lateness)`] : [],
    details: { tooLate, silver, rate: lateRate },
  };
  const [c] = await rows(`SELECT
      (SELECT count(*) FROM dlq WHERE received_at >= ${ts(from)} AND received_at <= ${ts(o.now)}) AS dlq,
      (SELECT count(*) FROM bronze_events WHERE received_at >= ${ts(from)} AND received_at <= ${ts(o.now)}) AS bronze`);
  const dlq = num(c!.dlq);
  const received = dlq + num(c!.bronze);
  const invalidRate = received > 0 ? dlq / received : 0;
  const invalid: CheckResult = {
    name: 'invalid rate',
    status: invalidRate > o.maxInvalidRate ? 'fail' : 'pass',
    summary: received === 0 ? `no events received in ${window}` : `${pct(invalidRate)} of events received in ${window} were rejected (${dlq} of ${received}; limit ${pct(o.maxInvalidRate)})`,
    problems: invalidRate > o.maxInvalidRate ? [`invalid rate ${pct(invalidRate)} > ${pct(o.maxInvalidRate)}: ${dlq} of ${received} events went to the DLQ (see SELECT code, count(*) FROM dlq GROUP BY 1)`] : [],
    details: { dlq, received, rate: invalidRate },
  };
  return [late, invalid];
}

/** Median of a non-empty list. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * Robust z-score of `x` against `history`: (x − median) / (1.4826 · MAD), the MAD-based estimate
 * of the standard deviation, floored at √median (the Poisson noise of a count) and at 1, so sparse
 * or perfectly regular series do not flag tiny changes.
 */
export function robustZ(x: number, history: readonly number[]): number {
  const med = median(history);
  const mad = median(history.map((h) => Math.abs(h - med)));
  return (x - med) / Math.max(1.4826 * mad, Math.sqrt(Math.max(med, 0)), 1);
}

async function checkAnomalies(rows: Rows, o: ResolvedQualityOptions): Promise<CheckResult> {
  const hourly = await rows(`SELECT window_start AS w, sum(events) AS events, sum(active_users) AS active_users FROM hourly_metrics
    WHERE device_type = 'ALL' AND app_version = 'ALL' AND country = 'ALL' GROUP BY 1 ORDER BY 1`);
  const series = new Map<number, { events: number; active_users: number }>();
  for (const r of hourly) series.set(timeOf(r.w)!, { events: num(r.events), active_users: num(r.active_users) });
  if (series.size === 0) return { name: 'anomalies', status: 'pass', summary: 'no hourly metrics yet', problems: [] };
  const newest = Math.max(...series.keys());
  const problems: string[] = [];
  let judged = 0;
  for (const [w, v] of series) {
    if (w < newest - o.anomalyWindowMs) continue;
    for (const metric of ['events', 'active_users'] as const) {
      const history: number[] = [];
      for (let d = 1; d <= o.anomalyHistoryDays; d++) {
        const h = series.get(w - d * DAY);
        if (h) history.push(h[metric]);
      }
      if (history.length < o.anomalyMinHistory) continue;
      const med = median(history);
      if (Math.max(v[metric], med) < o.anomalyMinVolume) continue;
      judged++;
      const z = robustZ(v[metric], history);
      if (Math.abs(z) > o.anomalyZ && Math.abs(v[metric] - med) >= o.anomalyMinChange * med) {
        problems.push(`${v[metric] > med ? 'spike' : 'drop'} at ${iso(w)}: ${metric} ${v[metric]} vs median ${med} of the same hour on ${history.length} previous days (robust z ${z.toFixed(1)})`);
      }
    }
  }
  return result(
    'anomalies',
    problems,
    judged === 0
      ? `nothing to judge (needs ${o.anomalyMinHistory} previous days of the same hour and at least ${o.anomalyMinVolume} events or users)`
      : `${judged} hourly totals within ${o.anomalyZ} robust z-scores of the same hour on previous days`,
    `${problems.length} hourly anomal${problems.length === 1 ? 'y' : 'ies'}`,
    'fail',
    { judged },
  );
}

async function checkDrift(q: LakeQuery, rows: Rows, o: ResolvedQualityOptions): Promise<CheckResult> {
  const since = ts(o.now - o.driftWindowMs);
  const [hist] = await rows(`SELECT count(*) AS n FROM events WHERE received_at < ${since}`);
  const problems: string[] = [];
  if (num(hist!.n) > 0) {
    const types = await rows(`SELECT event_type, min(received_at) AS first FROM events GROUP BY 1 HAVING min(received_at) >= ${since} ORDER BY 2, 1`);
    for (const r of types) problems.push(`new event type "${String(r.event_type)}" first received ${iso(timeOf(r.first)!)}`);
    const keys = await rows(`
      WITH k AS (
        SELECT received_at, unnest(json_keys(properties)) AS key FROM events
        WHERE properties IS NOT NULL AND json_valid(properties) AND json_type(properties) = 'OBJECT')
      SELECT key, min(received_at) AS first FROM k GROUP BY 1 HAVING min(received_at) >= ${since} ORDER BY 2, 1`);
    for (const r of keys) problems.push(`new property key "${String(r.key)}" first received ${iso(timeOf(r.first)!)}`);
  }
  for (const table of Object.keys(TABLES) as TableName[]) {
    const known = new Set([...TABLE_SCHEMAS[table].fields.map((f) => f.name), ...partitionColumns(table)]);
    const described = await q.run(`DESCRIBE ${table}`);
    for (const [name] of described.rows) if (!known.has(String(name))) problems.push(`new column ${table}.${String(name)} (not in common/schema.ts)`);
  }
  return result('schema drift', problems, `no new event types, property keys or columns in the last ${minutes(o.driftWindowMs)}`, `${problems.length} new name${problems.length === 1 ? '' : 's'} (informational)`, 'warn');
}

/** The report as text: one line per check, then its problems indented. */
export function formatReport(r: QualityReport): string {
  const mark = { pass: 'PASS', warn: 'WARN', fail: 'FAIL' } as const;
  const lines = [`Data quality of ${r.lake} as of ${r.now}: ${r.ok ? 'OK' : 'FAILED'}`];
  for (const c of r.checks) {
    lines.push(`  ${mark[c.status]}  ${c.name.padEnd(12)}  ${c.summary}`);
    for (const p of c.problems.slice(0, 50)) lines.push(`          - ${p}`);
    if (c.problems.length > 50) lines.push(`          - … ${c.problems.length - 50} more (see --json)`);
  }
  return lines.join('\n');
}
