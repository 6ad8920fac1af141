/**
 * `sluice reconcile`: folds late/ events into the gold windows they belong to (also run
 * periodically by `sluice serve`).
 */
import type { Command } from 'commander';
import { reconcileLate } from '../engine/reconcile.js';
import { openObjectStore } from '../storage/open-store.js';
import { requireLake } from './check-paths.js';
import { claimLakeForMaintenance } from './serve-lock.js';

export function register(program: Command): void {
  program
    .command('reconcile')
    .description('rewrite gold windows touched by too-late events from silver, then clear late/')
    .option('--lake <dir|s3://bucket/prefix>', 'lake root', process.env.SLUICE_LAKE ?? './lake')
    .option('--s3-endpoint <url>', 'S3-compatible endpoint', process.env.SLUICE_S3_ENDPOINT ?? process.env.AWS_ENDPOINT_URL_S3)
    .option('--json', 'print the result as JSON')
    .option('--force', 'run even while a sluice serve writes the lake (it reconciles in the background itself)')
    .action(async (flags: { lake: string; s3Endpoint?: string; json?: boolean; force?: boolean }) => {
      requireLake(flags.lake);
      const store = await openObjectStore(flags.lake, { s3Endpoint: flags.s3Endpoint });
      try {
        const claim = await claimLakeForMaintenance(store, flags.lake, 'sluice reconcile', flags.force);
        const r = await reconcileLate(store).finally(() => claim.release());
        if (flags.json) process.stdout.write(`${JSON.stringify(r)}\n`);
        else
          process.stdout.write(
            `reconciled ${r.hourlyWindows.length} hourly and ${r.dailyWindows.length} daily windows; removed ${r.lateFilesRemoved} late files\n`,
          );
      } finally {
        await store.close();
      }
    });
}
