/**
 * `sluice query`: SQL or a canned metric over the lake, printed as an aligned table, CSV or JSON,
 * or written as Parquet. Bad SQL or bad options exit with code 2 and a one-line message.
 */
import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { parseDuration } from '../common/duration.js';
import { userError } from '../common/errors.js';
import { formatCsv, formatJson, formatTable } from '../analytics/format.js';
import { checkMetricName, METRICS, type MetricParams } from '../analytics/metrics.js';
import { openLakeQuery, type QueryResult } from '../analytics/query.js';
import { checkOutFile } from './check-paths.js';

const FORMATS = ['table', 'csv', 'json', 'parquet'] as const;
type Format = (typeof FORMATS)[number];

interface Flags {
  lake: string;
  s3Endpoint?: string;
  cacheDir?: string;
  format: string;
  out?: string;
  metric?: string;
  from?: string;
  to?: string;
  where?: string[];
  by?: string[];
  steps?: string;
  within?: string;
  cohort?: string;
}

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

/** Turns the metric flags into `MetricParams` (validation of values happens in `prepareMetric`). */
export function metricParams(f: Pick<Flags, 'from' | 'to' | 'where' | 'by' | 'steps' | 'within' | 'cohort'>): MetricParams {
  if (!f.from) throw userError('invalid_option', '--metric needs --from DAY (and optionally --to DAY), e.g. --from 2026-03-01 --to 2026-03-31');
  const where: Record<string, string[]> = {};
  for (const w of f.where ?? []) {
    const i = w.indexOf('=');
    if (i <= 0) throw userError('invalid_option', `--where must look like device_type=ios, got "${w}"`);
    (where[w.slice(0, i).trim()] ??= []).push(w.slice(i + 1));
  }
  const by = (f.by ?? []).flatMap((b) => b.split(',')).map((b) => b.trim()).filter(Boolean);
  let withinS: number | undefined;
  if (f.within !== undefined) {
    const ms = parseDuration(f.within, '--within');
    if (ms < 1000 || ms % 1000 !== 0) throw userError('invalid_option', `--within must be whole seconds of at least 1s, e.g. 30m or 1h; got "${f.within}"`);
    withinS = ms / 1000;
  }
  if (f.cohort !== undefined && f.cohort !== 'install' && f.cohort !== 'first_seen') throw userError('invalid_option', `--cohort must be install or first_seen, got "${f.cohort}"`);
  return {
    from: f.from,
    to: f.to,
    where,
    by,
    steps: f.steps?.split(',').map((s) => s.trim()).filter(Boolean),
    withinS,
    cohortBy: f.cohort as MetricParams['cohortBy'],
  };
}

/** Writes `--out`; a path that cannot be written is the user's to fix. */
function writeOut(path: string, text: string): void {
  try {
    writeFileSync(path, text);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT' || e.code === 'ENOTDIR' || e.code === 'EISDIR' || e.code === 'EACCES' || e.code === 'EPERM' || e.code === 'EROFS') {
      throw userError('invalid_option', `cannot write --out ${path}: ${e.code}`, err);
    }
    throw err;
  }
}

export function register(program: Command): void {
  program
    .command('query')
    .description('run SQL over the lake (views: bronze_events, events, sessions, session_aliases, hourly_metrics, daily_metrics, dlq, late_events) or a canned --metric')
    .argument('[sql]', 'the SQL to run')
    .option('--lake <dir|s3://bucket/prefix>', 'lake root (env SLUICE_LAKE)', process.env.SLUICE_LAKE ?? './lake')
    .option('--s3-endpoint <url>', 'S3-compatible endpoint (env SLUICE_S3_ENDPOINT)', process.env.SLUICE_S3_ENDPOINT ?? process.env.AWS_ENDPOINT_URL_S3)
    .option('--cache-dir <dir>', 'local cache for S3 lakes (default: <tmp>/sluice-cache/<hash>)')
    .option('--format <f>', 'table | csv | json | parquet', 'table')
    .option('--out <file>', 'write the result to a file (required for parquet)')
    .option('--metric <name>', `a canned metric: ${METRICS.join(', ')}`)
    .option('--from <day>', 'metrics: first UTC day, e.g. 2026-03-01')
    .option('--to <day>', 'metrics: last UTC day, inclusive (default: --from)')
    .option('--where <dim=value>', 'metrics: dimension filter, repeatable (same dimension twice = either value)', collect)
    .option('--by <dim>', 'metrics: group by a dimension, repeatable', collect)
    .option('--steps <list>', 'funnel: comma-separated event types, in order')
    .option('--within <duration>', 'funnel: time limit from the first step, e.g. 1h')
    .option('--cohort <kind>', 'retention: install (first install event, default) or first_seen')
    .action(async (sql: string | undefined, f: Flags) => {
      if (!(FORMATS as readonly string[]).includes(f.format)) throw userError('invalid_option', `--format must be table, csv, json or parquet, got "${f.format}"`);
      const format = f.format as Format;
      if (format === 'parquet' && !f.out) throw userError('invalid_option', '--format parquet needs --out FILE');
      if (sql && f.metric) throw userError('invalid_option', 'give either SQL or --metric NAME, not both');
      if (!sql && !f.metric) throw userError('invalid_option', `give SQL to run, e.g. sluice query "SELECT count(*) FROM events", or --metric NAME (${METRICS.join(', ')})`);
      if (f.metric) checkMetricName(f.metric); // before its flags: a misspelt name is the first thing to hear about
      const params = f.metric ? metricParams(f) : undefined;
      // Before the query runs (it may take long): a result with nowhere to go is the user's typo.
      if (f.out) checkOutFile(f.out);
      const q = await openLakeQuery({ lake: f.lake, s3Endpoint: f.s3Endpoint, cacheDir: f.cacheDir });
      try {
        if (format === 'parquet') {
          const rows = await q.exportParquet(f.metric ? { metric: f.metric, params: params! } : { sql: sql! }, f.out!);
          process.stderr.write(`wrote ${rows} row${rows === 1 ? '' : 's'} to ${f.out}\n`);
          return;
        }
        const result: QueryResult = f.metric ? await q.metric(f.metric, params!) : await q.run(sql!);
        const text = format === 'csv' ? formatCsv(result) : format === 'json' ? formatJson(result) : formatTable(result);
        if (f.out) writeOut(f.out, `${text}\n`);
        else process.stdout.write(`${text}\n`);
      } finally {
        await q.close();
      }
    });
}
