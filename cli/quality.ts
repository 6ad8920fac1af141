/**
 * `sluice quality`: data-quality report over a lake; exit code 1 when a check fails.
 */
import type { Command } from 'commander';
import { parseDuration } from '../common/duration.js';
import { userError } from '../common/errors.js';
import { formatReport, runQualityChecks } from '../analytics/quality.js';

export function register(program: Command): void {
  program
    .command('quality')
    .description('completeness, uniqueness, freshness, coverage, rates, anomalies and schema drift of a lake')
    .option('--lake <dir|s3://bucket/prefix>', 'lake root', process.env.SLUICE_LAKE ?? './lake')
    .option('--s3-endpoint <url>', 'S3-compatible endpoint', process.env.SLUICE_S3_ENDPOINT ?? process.env.AWS_ENDPOINT_URL_S3)
    .option('--now <iso>', 'evaluate as of this time (default: now)')
    .option('--max-staleness <duration>', 'freshness threshold', '1h')
    .option('--max-late-rate <f>', 'fail above this too-late fraction', '0.05')
    .option('--max-invalid-rate <f>', 'fail above this rejected fraction', '0.05')
    .option('--json', 'print the report as JSON')
    .action(async (f: { lake: string; s3Endpoint?: string; now?: string; maxStaleness: string; maxLateRate: string; maxInvalidRate: string; json?: boolean }) => {
      const now = f.now === undefined ? Date.now() : Date.parse(f.now);
      if (Number.isNaN(now)) throw userError('invalid_option', `--now must be an ISO-8601 time, got ${f.now}`);
      const report = await runQualityChecks({
        lake: f.lake,
        s3Endpoint: f.s3Endpoint,
        now,
        maxStalenessMs: parseDuration(f.maxStaleness, '--max-staleness'),
        maxLateRate: Number(f.maxLateRate),
        maxInvalidRate: Number(f.maxInvalidRate),
      });
      process.stdout.write(f.json ? `${JSON.stringify(report)}\n` : `${formatReport(report)}\n`);
      if (!report.ok) process.exitCode = 1;
    });
}
