/**
 * `sluice query`: SQL (or a canned metric) over the lake, printed as a table, CSV, JSON lines,
 * or written as Parquet.
 */
import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { parseDuration } from '../common/duration.js';
import { userError } from '../common/errors.js';
import { formatCsv, formatJson, formatTable, METRICS, openLakeQuery, type QueryResult } from '../analytics/query.js';

interface Flags {
  lake: string;
  s3Endpoint?: string;
  format: 'table' | 'csv' | 'json' | 'parquet';
  out?: string;
  metric?: string;
  from?: string;
  to?: string;
  where?: string[];
  by?: string[];
  steps?: string;
  within?: string;
}

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

export function register(program: Command): void {
  program
    .command('query')
    .description('run SQL over the lake (views: bronze_events, events, sessions, hourly_metrics, daily_metrics, dlq, late_events)')
    .argument('[sql]', 'the SQL to run')
    .option('--lake <dir|s3://bucket/prefix>', 'lake root', process.env.SLUICE_LAKE ?? './lake')
    .option('--s3-endpoint <url>', 'S3-compatible endpoint', process.env.SLUICE_S3_ENDPOINT ?? process.env.AWS_ENDPOINT_URL_S3)
    .option('--format <f>', 'table | csv | json | parquet', 'table')
    .option('--out <file>', 'write the result to a file (required for parquet)')
    .option('--metric <name>', `a canned metric: ${METRICS.join(', ')}`)
    .option('--from <date>', 'first day, e.g. 2026-03-01 (metrics)')
    .option('--to <date>', 'last day, inclusive (metrics; default: --from)')
    .option('--where <dim=value>', 'dimension filter, repeatable (metrics)', collect)
    .option('--by <dim>', 'group by a dimension, repeatable (metrics)', collect)
    .option('--steps <list>', 'funnel steps, comma-separated event types')
    .option('--within <duration>', 'funnel time limit, e.g. 1h')
    .action(async (sql: string | undefined, f: Flags) => {
      if (!['table', 'csv', 'json', 'parquet'].includes(f.format)) throw userError('invalid_option', `--format must be table, csv, json or parquet, got ${f.format}`);
      if (f.format === 'parquet' && !f.out) throw userError('invalid_option', '--format parquet needs --out FILE');
      if (!sql && !f.metric) throw userError('invalid_option', 'give SQL to run or --metric NAME');
      const q = await openLakeQuery({ lake: f.lake, s3Endpoint: f.s3Endpoint });
      try {
        let result: QueryResult;
        if (f.metric) {
          if (!f.from) throw userError('invalid_option', '--metric needs --from (and optionally --to)');
          const where: Record<string, string> = {};
          for (const w of f.where ?? []) {
            const i = w.indexOf('=');
            if (i <= 0) throw userError('invalid_option', `--where must look like device_type=ios, got "${w}"`);
            where[w.slice(0, i)] = w.slice(i + 1);
          }
          result = await q.metric(f.metric, {
            from: f.from,
            to: f.to ?? f.from,
            where,
            by: f.by,
            steps: f.steps?.split(',').map((s) => s.trim()).filter(Boolean),
            withinS: f.within ? parseDuration(f.within, '--within') / 1000 : undefined,
          });
        } else result = await q.run(sql!);
        if (f.format === 'parquet') {
          const inner = sql ?? '';
          if (!inner) throw userError('invalid_option', '--format parquet works with SQL, not --metric');
          await q.connection.run(`COPY (${inner.replace(/;\s*$/, '')}) TO '${f.out!.replaceAll("'", "''")}' (FORMAT parquet, COMPRESSION zstd)`);
          process.stdout.write(`wrote ${result.rows.length} rows to ${f.out}\n`);
          return;
        }
        const text = f.format === 'csv' ? formatCsv(result) : f.format === 'json' ? formatJson(result) : formatTable(result);
        if (f.out) writeFileSync(f.out, `${text}\n`);
        else process.stdout.write(`${text}\n`);
      } finally {
        await q.close();
      }
    });
}
