/**
 * `sluice compact`: finishes interrupted compactions, merges the small Parquet files of closed
 * partitions into target-size files, and (with --retention) deletes expired partitions.
 *
 *   sluice compact [--lake DIR|s3://bucket/prefix] [--table events] [--older-than 1h]
 *                  [--target-size 128MiB] [--retention bronze=30d,silver=365d,gold=730d,dlq=30d,late=30d] [--json]
 *
 * Run one compactor per lake: a running `sluice serve` compacts in the background, so this refuses
 * while one writes the lake (`--force` runs beside it; a second compactor backs off when it
 * notices, but do not rely on it).
 */
import type { Command } from 'commander';
import { parseBytes, parseDuration } from '../common/duration.js';
import { userError } from '../common/errors.js';
import type { TableName } from '../common/lake-layout.js';
import { applyRetention, compactAll, COMPACTED_TABLES, type RetentionPolicy } from '../storage/compact.js';
import { openObjectStore } from '../storage/open-store.js';
import { requireLake } from './check-paths.js';
import { claimLakeForMaintenance } from './serve-lock.js';

const LAYERS = ['bronze', 'silver', 'gold', 'dlq', 'late'] as const;

/** Parses `bronze=30d,silver=365` (a bare number means days) into a retention policy. */
export function parseRetention(specs: string[]): RetentionPolicy {
  const policy: RetentionPolicy = {};
  for (const spec of specs.flatMap((s) => s.split(',')).filter((s) => s.trim() !== '')) {
    const [layer, age] = spec.split('=').map((s) => s.trim());
    if (!layer || !age || !(LAYERS as readonly string[]).includes(layer)) {
      throw userError('invalid_option', `--retention must look like bronze=30d,silver=365d with layers ${LAYERS.join(', ')}, got "${spec}"`);
    }
    const days = /^\d+(\.\d+)?$/.test(age) ? Number(age) : parseDuration(age, `--retention ${layer}`) / 86_400_000;
    if (!(days > 0)) throw userError('invalid_option', `--retention ${layer} must be a positive age, got "${age}"`);
    policy[layer as (typeof LAYERS)[number]] = days;
  }
  return policy;
}

interface CompactFlags {
  lake: string;
  s3Endpoint?: string;
  table?: string;
  olderThan: string;
  targetSize: string;
  retention?: string[];
  json?: boolean;
  force?: boolean;
}

export function register(program: Command): void {
  program
    .command('compact')
    .description('merge small Parquet files of closed partitions into target-size files; with --retention, delete expired partitions')
    .option('--lake <dir|s3://bucket/prefix>', 'lake root', process.env.SLUICE_LAKE ?? './lake')
    .option('--s3-endpoint <url>', 'S3-compatible endpoint', process.env.SLUICE_S3_ENDPOINT ?? process.env.AWS_ENDPOINT_URL_S3)
    .option('--table <name>', `one of ${COMPACTED_TABLES.join(', ')} (default: all of them)`)
    .option('--older-than <duration>', 'only partitions that ended at least this long ago', '1h')
    .option('--target-size <bytes>', 'merged file size to aim for', '128MiB')
    .option('--retention <layer=age,...>', `delete partitions older than age per layer (${LAYERS.join(', ')}; a bare number is days), repeatable`, (v: string, prev: string[] = []) => [...prev, v])
    .option('--json', 'print the result as JSON')
    .option('--force', 'run even while a sluice serve writes the lake (it compacts in the background itself)')
    .action(async (f: CompactFlags) => {
      if (f.table !== undefined && !(COMPACTED_TABLES as string[]).includes(f.table)) {
        throw userError('invalid_option', `--table must be one of ${COMPACTED_TABLES.join(', ')}, got ${f.table}`);
      }
      const olderThanMs = parseDuration(f.olderThan, '--older-than');
      const targetBytes = parseBytes(f.targetSize, '--target-size');
      if (!(targetBytes >= 1024 * 1024)) throw userError('invalid_option', `--target-size must be at least 1MiB, got ${f.targetSize}`);
      const retention = f.retention ? parseRetention(f.retention) : undefined;
      requireLake(f.lake);
      const store = await openObjectStore(f.lake, { s3Endpoint: f.s3Endpoint });
      try {
        const claim = await claimLakeForMaintenance(store, f.lake, 'sluice compact', f.force);
        let compacted: Awaited<ReturnType<typeof compactAll>>;
        let retained: Awaited<ReturnType<typeof applyRetention>> | undefined;
        try {
          // Closed partitions get no more flushes: merged once, whole, rather than only where small files outweigh a big one.
          compacted = await compactAll(store, { olderThanMs, targetBytes, everySmallFile: true, tables: f.table ? [f.table as TableName] : undefined });
          retained = retention ? await applyRetention(store, retention) : undefined;
        } finally {
          await claim.release();
        }
        if (f.json) {
          process.stdout.write(`${JSON.stringify({ compacted, retention: retained })}\n`);
        } else {
          const fin = compacted.finished;
          process.stdout.write(`compacted ${compacted.files} files into ${compacted.outputs} in ${compacted.partitions} partitions (${compacted.rows} rows)\n`);
          if (fin.finished + fin.aborted > 0) process.stdout.write(`finished ${fin.finished} and aborted ${fin.aborted} interrupted compactions\n`);
          if (fin.lost.length > 0) process.stderr.write(`sluice: compactions ${fin.lost.join(', ')} lost their merged file after deleting inputs; run \`sluice quality\`\n`);
          if (retained) process.stdout.write(`retention removed ${retained.files} files in ${retained.partitions} partitions\n`);
        }
        if (compacted.finished.lost.length > 0) process.exitCode = 1;
      } finally {
        await store.close();
      }
    });
}
