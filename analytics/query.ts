/**
 * SQL over the lake on DuckDB (embedded, in-memory catalog, TimeZone UTC).
 *
 * Views `bronze_events`, `events`, `sessions`, `hourly_metrics`, `daily_metrics`, `dlq`,
 * `late_events` read the tables' Parquet files with `hive_partitioning` (year, month, day and,
 * for hourly tables, hour as INTEGER columns) and `union_by_name` (files written before a column
 * existed still read). A table with no files yet is an empty view with the table's columns
 * (common/schema.ts), so queries never fail on a young lake.
 *
 * Which files (analytics/lake.ts): the committed ones. Local lakes are read in place and the
 * views are rebuilt when the commit records change (each `run` sees the lake as of its start).
 * S3 lakes are copied into a local cache first, only the partitions a query can touch
 * (analytics/prune.ts) — so the views of an S3 lake exist only for the tables the current
 * query names.
 */
import { DuckDBInstance, type DuckDBConnection, type DuckDBType, type DuckDBValue } from '@duckdb/node-api';
import { Type, type DataType, type Schema } from 'apache-arrow';
import { TABLES, type TableName } from '../common/lake-layout.js';
import { externalError, SluiceError, userError } from '../common/errors.js';
import { bronzeSchema, dailyMetricsSchema, dlqSchema, hourlyMetricsSchema, sessionAliasesSchema, sessionsSchema, silverSchema } from '../common/schema.js';
import { resolveSessionIds } from '../engine/gold-sql.js';
import { Lake, type LakeOptions, type TimeRange } from './lake.js';
import { prepareMetric, type MetricParams } from './metrics.js';
import { tableRanges } from './prune.js';

/** The schema of every view (what an empty table looks like). */
export const TABLE_SCHEMAS: Record<TableName, Schema> = {
  bronze_events: bronzeSchema,
  events: silverSchema,
  sessions: sessionsSchema,
  session_aliases: sessionAliasesSchema,
  hourly_metrics: hourlyMetricsSchema,
  daily_metrics: dailyMetricsSchema,
  dlq: dlqSchema,
  late_events: silverSchema,
};

/** Views in definition order: `session_aliases` before `events`, which reads it. */
const TABLE_NAMES = (Object.keys(TABLES) as TableName[]).sort((a, b) => Number(a === 'events') - Number(b === 'events'));

/** DuckDB type of an Arrow field type as the engine writes it to Parquet. */
export function duckType(t: DataType): string {
  switch (t.typeId) {
    case Type.Utf8:
    case Type.Dictionary:
      return 'VARCHAR';
    case Type.Timestamp:
      return 'TIMESTAMP WITH TIME ZONE';
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

export const partitionColumns = (table: TableName): string[] => (TABLES[table].granularity === 'hour' ? ['year', 'month', 'day', 'hour'] : ['year', 'month', 'day']);

const quote = (s: string): string => `'${s.replaceAll("'", "''")}'`;


/** A query's result, fully materialized. Values as @duckdb/node-api's `getRowsJS` gives them (BIGINT → bigint, DATE/TIMESTAMP → Date, DECIMAL → number). */
export interface QueryResult {
  columns: string[];
  /** DuckDB type names (DATE, TIMESTAMP WITH TIME ZONE, BIGINT, …), one per column. */
  types: string[];
  rows: unknown[][];
}

export type LakeQueryOptions = LakeOptions;

/** DuckDB's words for a Parquet file it cannot decode (truncated, overwritten, bit rot), not for a mistake in the SQL. */
const DAMAGE = /No magic bytes|too small to be a Parquet file|Footer length error|TProtocolException|Failed to read file|Decompression failure|Corrupt|Invalid Error/i;

/** Whether a DuckDB error says a lake file cannot be read. */
export function isLakeDamage(err: unknown): boolean {
  return err instanceof Error && DAMAGE.test(err.message);
}

/** DuckDB's words for a file that is gone (a compaction or retention deleted it after the views were defined). */
const VANISHED = /No files found that match|Cannot open file|No such file or directory/i;

/** Whether a DuckDB error says a file under `root` (the lake's directory, or its S3 cache) is gone. */
export function isVanished(err: unknown, root: string): boolean {
  return err instanceof Error && VANISHED.test(err.message) && err.message.includes(root);
}

/** How often a statement is run again over the lake's new files when one it read vanished under it. */
const VANISHED_RETRIES = 3;

/** A damaged file is the lake's problem (exit 1), not the query's: say so in one line and how to find it. */
function damaged(lake: Lake, err: unknown): Error {
  const first = (err as Error).message.split('\n')[0]!;
  return externalError(
    'lake_file_damaged',
    `a Parquet file of the lake cannot be read (${first}); \`sluice quality --lake ${lake.location}\` names every damaged file: restore it or move it away, then run again`,
    err,
  );
}

/** An open SQL session over one lake. Not safe for concurrent `run`s; close it when done. */
export interface LakeQuery {
  /** Runs SQL (several statements allowed; the last one's result is returned). Bad SQL → a user error `query_failed`. */
  run(sql: string): Promise<QueryResult>;
  /** Runs a canned metric (analytics/metrics/<name>.sql). */
  metric(name: string, params: MetricParams): Promise<QueryResult>;
  /** Writes the result of one SELECT or of a metric to a Parquet file (ZSTD); returns the rows written. */
  exportParquet(source: { sql: string } | { metric: string; params: MetricParams }, file: string): Promise<number>;
  /** The lake's files (and, for S3, what was downloaded). */
  readonly lake: Lake;
  /** The underlying DuckDB connection (views already defined for the last query). */
  readonly connection: DuckDBConnection;
  close(): Promise<void>;
}

export async function openLakeQuery(options: LakeQueryOptions): Promise<LakeQuery> {
  const lake = await Lake.open(options);
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  await conn.run("SET TimeZone = 'UTC'");
  let localViewsFresh = false;
  const defined = new Set<TableName>();
  /** DuckDB's error as Sluice's: a damaged file, a vanished one (run again), or else `otherwise`. */
  const classify = (err: unknown, otherwise: (err: unknown) => unknown): unknown => {
    if (isLakeDamage(err)) return damaged(lake, err);
    if (isVanished(err, lake.readRoot)) return externalError('lake_file_vanished', `a file of lake ${lake.location} disappeared while it was read (a compaction or retention ran): ${(err as Error).message.split('\n')[0]}; run the query again`, err);
    return otherwise(err);
  };

  const defineView = async (table: TableName, range?: TimeRange): Promise<void> => {
    const paths = await lake.paths(table, range);
    const parts = partitionColumns(table);
    let body: string;
    if (paths.length === 0) {
      const cols = [...TABLE_SCHEMAS[table].fields.map((f) => `NULL::${duckType(f.type)} AS ${f.name}`), ...parts.map((c) => `NULL::INTEGER AS ${c}`)];
      body = `SELECT ${cols.join(', ')} WHERE false`;
    } else {
      const hiveTypes = `{${parts.map((c) => `'${c}': INTEGER`).join(', ')}}`;
      // Partition columns last, in layout order (DuckDB puts them in no useful order).
      body = `SELECT * EXCLUDE (${parts.join(', ')}), ${parts.join(', ')} FROM read_parquet([${paths.map(quote).join(', ')}], hive_partitioning = true, hive_types = ${hiveTypes}, union_by_name = true)`;
    }
    // Silver rows keep the session id they were stamped with while their session was open; a
    // session whose start moved (a late event, a merge) lists those ids in session_aliases.
    if (table === 'events') body = resolveSessionIds(`(${body})`, 'session_aliases');
    // DuckDB reads the files' footers here (union_by_name): a truncated file fails already.
    await conn.run(`CREATE OR REPLACE VIEW ${table} AS ${body}`).catch((err: unknown) => {
      throw classify(err, (e) => e);
    });
    defined.add(table);
  };

  /** Defines the views a statement needs: every table (local) or the named ones over their needed partitions (S3). */
  const prepareViews = async (reads: () => Promise<Map<TableName, TimeRange | undefined>>): Promise<void> => {
    if (lake.isLocal) {
      // Views follow the commit records; without records (or reading every file present) they are rebuilt each time.
      const changed = await lake.refresh();
      if (changed || !localViewsFresh || lake.mode === 'present' || lake.commitRecords.length === 0) {
        for (const t of TABLE_NAMES) await defineView(t);
        localViewsFresh = true;
      }
      return;
    }
    await lake.refresh();
    const wanted = new Map(await reads());
    // `events` resolves session ids through session_aliases (all of it: the table is small, and a
    // session may have started long before the events a range selects), defined before it.
    if (wanted.has('events')) {
      const range = wanted.get('events');
      wanted.delete('events');
      wanted.set('session_aliases', undefined);
      wanted.set('events', range);
    }
    for (const t of [...defined]) {
      if (!wanted.has(t)) {
        await conn.run(`DROP VIEW IF EXISTS ${t}`);
        defined.delete(t);
      }
    }
    for (const [t, range] of wanted) await defineView(t, range);
  };

  const readsOfSql = (sql: string): Promise<Map<TableName, TimeRange | undefined>> => tableRanges(conn, sql);

  const execute = async (sql: string, values?: Record<string, DuckDBValue>, types?: Record<string, DuckDBType>): Promise<QueryResult> => {
    try {
      const reader = await conn.runAndReadAll(sql, values, types);
      return { columns: reader.columnNames(), types: reader.columnTypes().map((t) => t.toString()), rows: reader.getRowsJS() as unknown[][] };
    } catch (err) {
      throw classify(err, (e) => userError('query_failed', `query failed: ${(e as Error).message}`, e));
    }
  };

  /**
   * Defines the views, then runs. A compaction (the server's, in the background) deletes the
   * files it merged once its merged file is visible: a statement planned over them finds one gone.
   * It is run again over the lake as it is now, up to VANISHED_RETRIES times.
   */
  const withViews = async <T>(prepare: () => Promise<void>, exec: () => Promise<T>): Promise<T> => {
    for (let attempt = 0; ; attempt++) {
      try {
        await prepare();
        return await exec();
      } catch (err) {
        if (!(err instanceof SluiceError && err.code === 'lake_file_vanished') || attempt >= VANISHED_RETRIES) throw err;
        localViewsFresh = false;
      }
    }
  };

  const copyTo = (sql: string, file: string): string => `COPY (${sql.replace(/;\s*$/, '')}) TO ${quote(file)} (FORMAT parquet, COMPRESSION zstd)`;
  const written = (r: QueryResult): number => Number(r.rows[0]?.[0] ?? 0);

  return {
    lake,
    connection: conn,
    async run(sql) {
      return withViews(
        () => prepareViews(() => readsOfSql(sql)),
        () => execute(sql),
      );
    },
    async metric(name, params) {
      const m = prepareMetric(name, params);
      return withViews(
        () => prepareViews(async () => m.reads),
        () => execute(m.sql, m.values, m.types),
      );
    },
    async exportParquet(source, file) {
      if ('sql' in source) {
        return written(await withViews(() => prepareViews(() => readsOfSql(source.sql)), () => execute(copyTo(source.sql, file))));
      }
      const m = prepareMetric(source.metric, source.params);
      return written(await withViews(() => prepareViews(async () => m.reads), () => execute(copyTo(m.sql, file), m.values, m.types)));
    },
    async close() {
      conn.closeSync();
      db.closeSync();
      await lake.close();
    },
  };
}

export { formatCsv, formatJson, formatTable } from './format.js';
export { METRICS, type MetricParams } from './metrics.js';
