/**
 * `sluice loadgen`: drives a Sluice server with generated app-engagement traffic.
 */
import type { Command } from 'commander';
import { parseDuration } from '../common/duration.js';
import { runLoadgen, type LoadgenProtocol, type LoadgenSummary } from '../loadgen/run.js';

interface Flags {
  url: string;
  writeKey: string;
  protocol: LoadgenProtocol;
  rate?: string;
  duration?: string;
  events?: string;
  users: string;
  seed: string;
  workers: string;
  connections: string;
  batchSize: string;
  duplicateRate: string;
  jitter: string;
  lateRate: string;
  tooLateRate: string;
  invalidRate: string;
  clockSkew: string;
  truth?: string;
  json?: boolean;
  progress?: boolean;
}

export function formatSummary(s: LoadgenSummary): string {
  const l = s.latencyMs;
  return [
    `protocol   ${s.protocol}`,
    `acked      ${s.acked.toLocaleString('en-US')} events in ${s.elapsedS.toFixed(1)} s = ${Math.round(s.eventsPerSecond).toLocaleString('en-US')} events/s (${s.mbPerSecond.toFixed(1)} MB/s)`,
    `sent       ${s.sent.toLocaleString('en-US')} (duplicates ${s.duplicatesSent}, invalid ${s.invalidSent}); rejected ${s.rejected}, retried ${s.retried}, failed ${s.failed}`,
    `ack p50/p90/p99/p99.9/max  ${l.p50.toFixed(1)} / ${l.p90.toFixed(1)} / ${l.p99.toFixed(1)} / ${l.p999.toFixed(1)} / ${l.max.toFixed(1)} ms`,
    ...(s.truthRows !== undefined ? [`truth      ${s.truthRows} valid events written`] : []),
  ].join('\n');
}

export function register(program: Command): void {
  program
    .command('loadgen')
    .description('send realistic, seeded app-engagement traffic to a Sluice server')
    .option('--url <url>', 'server URL', process.env.SLUICE_URL ?? 'http://127.0.0.1:8080')
    .requiredOption('--write-key <key>', 'write key (sluice serve prints it)', process.env.SLUICE_WRITE_KEY)
    .option('--protocol <p>', 'http | ndjson | arrow-ws', 'http')
    .option('--rate <n>', 'events/s, open loop (default: closed loop, as fast as acks return)')
    .option('--duration <d>', 'how long to run, e.g. 30s')
    .option('--events <n>', 'stop after this many events')
    .option('--users <n>', 'distinct users', '10000')
    .option('--seed <n>', 'random seed', '1')
    .option('--workers <n>', 'generator threads', '2')
    .option('--connections <n>', 'concurrent requests / sockets per thread', '8')
    .option('--batch-size <n>', 'events per request', '50')
    .option('--duplicate-rate <f>', 'fraction of client-retry duplicates', '0.02')
    .option('--jitter <d>', 'max out-of-order jitter', '5s')
    .option('--late-rate <f>', 'fraction of events 10–90 min late', '0.01')
    .option('--too-late-rate <f>', 'fraction of events 3–5 h late', '0.001')
    .option('--invalid-rate <f>', 'fraction of invalid events', '0.005')
    .option('--clock-skew <d>', 'device clock skew', '0')
    .option('--truth <file>', 'write the ground truth (valid events, sessions) as Parquet')
    .option('--json', 'print the summary as JSON')
    .option('--progress', 'show the live progress line even when stderr is not a TTY')
    .action(async (f: Flags) => {
      const showProgress = f.progress || process.stderr.isTTY;
      const summary = await runLoadgen({
        url: f.url,
        writeKey: f.writeKey,
        protocol: f.protocol,
        rate: f.rate === undefined ? undefined : Number(f.rate),
        durationMs: f.duration === undefined ? (f.events === undefined ? 30_000 : undefined) : parseDuration(f.duration, '--duration'),
        events: f.events === undefined ? undefined : Number(f.events),
        users: Number(f.users),
        seed: Number(f.seed),
        workers: Number(f.workers),
        connections: Number(f.connections),
        batchSize: Number(f.batchSize),
        duplicateRate: Number(f.duplicateRate),
        jitterMs: parseDuration(f.jitter, '--jitter'),
        lateRate: Number(f.lateRate),
        tooLateRate: Number(f.tooLateRate),
        invalidRate: Number(f.invalidRate),
        clockSkewMs: parseDuration(f.clockSkew, '--clock-skew'),
        truth: f.truth,
        onProgress: showProgress
          ? (p) =>
              process.stderr.write(
                `\r${p.elapsedS.toFixed(0)}s  ${Math.round(p.rate).toLocaleString('en-US')} ev/s  acked ${p.acked.toLocaleString('en-US')}  rejected ${p.rejected}  p50 ${p.p50.toFixed(1)} ms  p99 ${p.p99.toFixed(1)} ms   `,
              )
          : undefined,
      });
      if (showProgress) process.stderr.write('\n');
      process.stdout.write(f.json ? `${JSON.stringify(summary)}\n` : `${formatSummary(summary)}\n`);
    });
}
