/**
 * `sluice quality`: the data-quality report of a lake (analytics/quality.ts). Exit code 1 when a
 * check fails, 2 on bad options; `--json` prints the QualityReport.
 */
import type { Command } from 'commander';
import { formatDuration, parseDuration } from '../common/duration.js';
import { userError } from '../common/errors.js';
import { formatReport, QUALITY_DEFAULTS, runQualityChecks } from '../analytics/quality.js';

interface Flags {
  lake: string;
  s3Endpoint?: string;
  cacheDir?: string;
  json?: boolean;
  now?: string;
  maxStaleness: string;
  allowedLateness: string;
  goldDelay: string;
  rateWindow: string;
  maxLateRate: string;
  maxInvalidRate: string;
  anomalyZ: string;
  anomalyWindow: string;
  anomalyMinVolume: string;
  driftWindow: string;
}

function fraction(text: string, flag: string): number {
  const v = text.endsWith('%') ? Number(text.slice(0, -1)) / 100 : Number(text);
  if (!(Number.isFinite(v) && v >= 0 && v <= 1)) throw userError('invalid_option', `${flag} must be a fraction like 0.05 or a percentage like 5%, got "${text}"`);
  return v;
}

export function register(program: Command): void {
  const d = QUALITY_DEFAULTS;
  program
    .command('quality')
    .description('data-quality checks: files vs commit records, completeness, uniqueness, freshness, gold staleness, late/invalid rates, anomalies, schema drift')
    .option('--lake <dir|s3://bucket/prefix>', 'lake root (env SLUICE_LAKE)', process.env.SLUICE_LAKE ?? './lake')
    .option('--s3-endpoint <url>', 'S3-compatible endpoint (env SLUICE_S3_ENDPOINT)', process.env.SLUICE_S3_ENDPOINT ?? process.env.AWS_ENDPOINT_URL_S3)
    .option('--cache-dir <dir>', 'local cache for S3 lakes')
    .option('--json', 'print the report as JSON')
    .option('--now <iso>', 'evaluate as of this time (default: now)')
    .option('--max-staleness <duration>', 'freshness limit for bronze/silver (gold gets --allowed-lateness more)', formatDuration(d.maxStalenessMs))
    .option('--allowed-lateness <duration>', "the engine's allowed lateness", formatDuration(d.allowedLatenessMs))
    .option('--gold-delay <duration>', 'windows ending this long before the newest event must have matching gold', formatDuration(d.goldDelayMs))
    .option('--rate-window <duration>', 'late and invalid rates over this much receive time before --now', formatDuration(d.rateWindowMs))
    .option('--max-late-rate <fraction>', 'fail above this share of too-late events', String(d.maxLateRate))
    .option('--max-invalid-rate <fraction>', 'fail above this share of rejected events', String(d.maxInvalidRate))
    .option('--anomaly-z <z>', 'flag hourly totals beyond this robust z-score', String(d.anomalyZ))
    .option('--anomaly-window <duration>', 'judge the hours within this much of the newest one', formatDuration(d.anomalyWindowMs))
    .option('--anomaly-min-volume <n>', 'do not judge hours where value and median are both below this', String(d.anomalyMinVolume))
    .option('--drift-window <duration>', 'names first seen within this much before --now are drift', formatDuration(d.driftWindowMs))
    .action(async (f: Flags) => {
      const now = f.now === undefined ? Date.now() : Date.parse(f.now);
      if (Number.isNaN(now)) throw userError('invalid_option', `--now must be an ISO-8601 time like 2026-03-01T12:00:00Z, got "${f.now}"`);
      const z = Number(f.anomalyZ);
      if (!(z > 0)) throw userError('invalid_option', `--anomaly-z must be a positive number, got "${f.anomalyZ}"`);
      const minVolume = Number(f.anomalyMinVolume);
      if (!(Number.isInteger(minVolume) && minVolume >= 1)) throw userError('invalid_option', `--anomaly-min-volume must be a positive whole number, got "${f.anomalyMinVolume}"`);
      const report = await runQualityChecks({
        lake: f.lake,
        s3Endpoint: f.s3Endpoint,
        cacheDir: f.cacheDir,
        now,
        maxStalenessMs: parseDuration(f.maxStaleness, '--max-staleness'),
        allowedLatenessMs: parseDuration(f.allowedLateness, '--allowed-lateness'),
        goldDelayMs: parseDuration(f.goldDelay, '--gold-delay'),
        rateWindowMs: parseDuration(f.rateWindow, '--rate-window'),
        maxLateRate: fraction(f.maxLateRate, '--max-late-rate'),
        maxInvalidRate: fraction(f.maxInvalidRate, '--max-invalid-rate'),
        anomalyZ: z,
        anomalyWindowMs: parseDuration(f.anomalyWindow, '--anomaly-window'),
        anomalyMinVolume: minVolume,
        driftWindowMs: parseDuration(f.driftWindow, '--drift-window'),
      });
      process.stdout.write(f.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatReport(report)}\n`);
      if (!report.ok) process.exitCode = 1;
    });
}
