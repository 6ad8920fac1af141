/**
 * `sluice compact`: merges small files of closed partitions and applies retention.
 */
import type { Command } from 'commander';
import { parseDuration } from '../common/duration.js';
import { TABLES, type TableName } from '../common/lake-layout.js';
import { userError } from '../common/errors.js';
import { applyRetention, compactAll, COMPACTED_TABLES } from '../storage/compact.js';
import { openObjectStore } from '../storage/open-store.js';

export function register(program: Command): void {
  program
    .command('compact')
    .description('merge small Parquet files of closed partitions (and delete expired partitions with --retention)')
    .option('--lake <dir|s3://bucket/prefix>', 'lake root', process.env.SLUICE_LAKE ?? './lake')
    .option('--s3-endpoint <url>', 'S3-compatible endpoint', process.env.SLUICE_S3_ENDPOINT ?? process.env.AWS_ENDPOINT_URL_S3)
    .option('--table <name>', `one of ${COMPACTED_TABLES.join(', ')} (default: all)`)
    .option('--older-than <duration>', 'only partitions that ended at least this long ago', '1h')
    .option('--retention <table=age...>', 'delete partitions older than age, e.g. bronze_events=30d (repeatable)', (v: string, prev: string[] = []) => [...prev, v])
    .action(async (f: { lake: string; s3Endpoint?: string; table?: string; olderThan: string; retention?: string[] }) => {
      if (f.table !== undefined && !(COMPACTED_TABLES as string[]).includes(f.table)) {
        throw userError('invalid_option', `--table must be one of ${COMPACTED_TABLES.join(', ')}, got ${f.table}`);
      }
      const store = await openObjectStore(f.lake, { s3Endpoint: f.s3Endpoint });
      try {
        const r = await compactAll(store, { olderThanMs: parseDuration(f.olderThan, '--older-than'), tables: f.table ? [f.table as TableName] : undefined });
        process.stdout.write(`compacted ${r.files} files in ${r.partitions} partitions\n`);
        if (f.retention) {
          const ages: Partial<Record<TableName, number>> = {};
          for (const spec of f.retention) {
            const [table, age] = spec.split('=');
            if (!table || !age || !(table in TABLES)) throw userError('invalid_option', `--retention must look like events=90d with a table of ${Object.keys(TABLES).join(', ')}, got ${spec}`);
            ages[table as TableName] = parseDuration(age, '--retention');
          }
          process.stdout.write(`retention removed ${await applyRetention(store, ages)} files\n`);
        }
      } finally {
        await store.close();
      }
    });
}
