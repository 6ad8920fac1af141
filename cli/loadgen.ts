/**
 * `sluice loadgen`: drives a Sluice server with seeded, realistic app-engagement traffic and
 * prints a summary (text, or JSON with --json). Ctrl-C stops sending early and still prints it.
 */
import type { Command } from 'commander';
import { parseDuration } from '../common/duration.js';
import { userError } from '../common/errors.js';
import { runLoadgen, type LoadgenProgress, type LoadgenProtocol, type LoadgenSummary } from '../loadgen/run.js';

interface Flags {
  url: string;
  writeKey?: string;
  protocol: LoadgenProtocol;
  rate?: string;
  duration?: string;
  warmup: string;
  events?: string;
  users: string;
  seed: string;
  workers: string;
  connections: string;
  batchSize: string;
  pipeline: string;
  duplicateRate: string;
  jitter: string;
  lateRate: string;
  tooLateRate: string;
  invalidRate: string;
  clockSkew: string;
  zipf: string;
  sessionGap: string;
  startTime?: string;
  maxRetries: string;
  truth?: string;
  json?: boolean;
  progress?: boolean;
}

const int = (n: number): string => Math.round(n).toLocaleString('en-US');

export function formatSummary(s: LoadgenSummary): string {
  const l = s.latencyMs;
  const lines = [
    `protocol   ${s.protocol} (${s.workers} worker${s.workers === 1 ? '' : 's'})`,
    `acked      ${int(s.acked)} events + ${s.rejected} rejected in ${s.elapsedS.toFixed(1)} s = ${int(s.eventsPerSecond)} events/s (${s.mbPerSecond.toFixed(1)} MB/s)`,
    `sent       ${int(s.sent)} (duplicates ${s.duplicatesSent}, invalid ${s.invalidSent}, late ${s.lateSent}, too late ${s.tooLateSent}); retried ${s.retried} (throttled ${s.throttled}), failed ${s.failed}`,
    `ack p50/p90/p99/p99.9/max  ${l.p50.toFixed(1)} / ${l.p90.toFixed(1)} / ${l.p99.toFixed(1)} / ${l.p999.toFixed(1)} / ${l.max.toFixed(1)} ms over ${l.count} requests`,
  ];
  const w = s.warmupLatencyMs;
  if (w.count > 0) lines.push(`warm-up    p50/p99/max  ${w.p50.toFixed(1)} / ${w.p99.toFixed(1)} / ${w.max.toFixed(1)} ms over ${w.count} requests (not in the line above)`);
  if (s.rejectedValid > 0 || s.acceptedInvalid > 0) lines.push(`MISMATCH   server rejected ${s.rejectedValid} valid events and accepted ${s.acceptedInvalid} invalid ones`);
  if (s.generator.compressed > 0 || s.generator.extended > 0) {
    lines.push(`note       too few --users for this rate: ${s.generator.compressed} in-session gaps shortened, ${s.generator.extended} sessions extended`);
  }
  if (s.truthRows !== undefined) lines.push(`truth      ${s.truthRows} valid events in ${s.truthFile}`);
  for (const e of s.errors) lines.push(`error      ${e}`);
  return lines.join('\n');
}

export function formatProgress(p: LoadgenProgress): string {
  return `${p.elapsedS.toFixed(0)}s  ${int(p.rate)} ev/s  acked ${int(p.acked)}  rejected ${p.rejected}  retried ${p.retried}  p50 ${p.p50.toFixed(1)} ms  p99 ${p.p99.toFixed(1)} ms`;
}

function number(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (text.trim() === '' || !Number.isFinite(n)) throw userError('invalid_option', `${flag} must be a number, got ${JSON.stringify(text)}`);
  return n;
}

function time(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const t = /^\d+$/.test(text) ? Number(text) : Date.parse(text);
  if (!Number.isFinite(t)) throw userError('invalid_option', `--start-time must be ISO-8601 (2026-03-01T08:00:00Z) or epoch ms, got ${JSON.stringify(text)}`);
  return t;
}

export function register(program: Command): void {
  program
    .command('loadgen')
    .description('send seeded, realistic app-engagement traffic to a Sluice server and report throughput and ack latency')
    .option('--url <url>', 'server URL (env SLUICE_URL)', process.env.SLUICE_URL ?? 'http://127.0.0.1:8080')
    .option('--write-key <key>', 'write key; sluice serve prints it (env SLUICE_WRITE_KEY)', process.env.SLUICE_WRITE_KEY)
    .option('--protocol <p>', 'http (Segment /v1/batch) | ndjson (/v1/events) | arrow-ws (/v1/stream)', 'http')
    .option('--rate <n>', 'events/s over all workers, open loop (default: closed loop, as fast as acks return)')
    .option('--duration <d>', 'how long to send, e.g. 30s (default 30s unless --events is given)')
    .option('--warmup <d>', 'ack latency of batches due in the first <d> (cold connections and code) is reported apart, not in the percentiles', '0')
    .option('--events <n>', 'stop after this many events')
    .option('--users <n>', 'distinct users (zipf-skewed activity)', '10000')
    .option('--seed <n>', 'random seed: the same seed sends the same events', '1')
    .option('--workers <n>', 'generator/sender threads', '2')
    .option('--connections <n>', 'concurrent requests (or WebSockets) per worker', '8')
    .option('--batch-size <n>', 'events per request / Arrow batch', '50')
    .option('--pipeline <n>', 'Arrow batches in flight per WebSocket', '4')
    .option('--duplicate-rate <f>', 'fraction of client-retry duplicates (same messageId)', '0.02')
    .option('--jitter <d>', 'max out-of-order hold-back of an event', '5s')
    .option('--late-rate <f>', 'fraction of events from offline sessions 10–90 min late', '0.01')
    .option('--too-late-rate <f>', 'fraction of events from offline sessions 3–5 h late', '0.001')
    .option('--invalid-rate <f>', 'fraction of invalid events (no user, bad/future timestamp, no name)', '0.005')
    .option('--clock-skew <d>', 'device clock ahead by this much (http only; sentAt lets the server correct it)', '0')
    .option('--zipf <s>', 'zipf exponent of user activity', '1.1')
    .option('--session-gap <d>', "a user's sessions are more than this apart (match the server's --session-gap)", '30m')
    .option('--start-time <t>', 'event time of the first event, ISO-8601 or epoch ms (default now)')
    .option('--max-retries <n>', 'retries per batch (429/503 honour Retry-After)', '10')
    .option('--truth <file>', 'write the ground truth as Parquet: FILE (events), .sessions.parquet, .summary.json')
    .option('--json', 'print the summary as JSON')
    .option('--progress', 'show the live progress line even when stderr is not a TTY')
    .action(async (f: Flags) => {
      if (f.writeKey === undefined) throw userError('invalid_option', '--write-key is required (sluice serve prints the key it created; or set SLUICE_WRITE_KEY)');
      const showProgress = f.progress === true || process.stderr.isTTY === true;
      const abort = new AbortController();
      const onSigint = (): void => {
        if (abort.signal.aborted) process.exit(130);
        process.stderr.write('\nstopping: waiting for in-flight batches (Ctrl-C again to quit at once)\n');
        abort.abort();
      };
      process.on('SIGINT', onSigint);
      try {
        const summary = await runLoadgen({
          url: f.url,
          writeKey: f.writeKey,
          protocol: f.protocol,
          rate: number(f.rate, '--rate'),
          durationMs: f.duration === undefined ? (f.events === undefined ? 30_000 : undefined) : parseDuration(f.duration, '--duration'),
          warmupMs: parseDuration(f.warmup, '--warmup'),
          events: number(f.events, '--events'),
          users: number(f.users, '--users'),
          seed: number(f.seed, '--seed'),
          workers: number(f.workers, '--workers'),
          connections: number(f.connections, '--connections'),
          batchSize: number(f.batchSize, '--batch-size'),
          pipeline: number(f.pipeline, '--pipeline'),
          duplicateRate: number(f.duplicateRate, '--duplicate-rate'),
          jitterMs: parseDuration(f.jitter, '--jitter'),
          lateRate: number(f.lateRate, '--late-rate'),
          tooLateRate: number(f.tooLateRate, '--too-late-rate'),
          invalidRate: number(f.invalidRate, '--invalid-rate'),
          clockSkewMs: parseDuration(f.clockSkew, '--clock-skew'),
          zipf: number(f.zipf, '--zipf'),
          sessionGapMs: parseDuration(f.sessionGap, '--session-gap'),
          startTime: time(f.startTime),
          maxRetries: number(f.maxRetries, '--max-retries'),
          truth: f.truth,
          signal: abort.signal,
          onProgress: showProgress ? (p) => process.stderr.write(`\r${formatProgress(p)}   `) : undefined,
        });
        if (showProgress) process.stderr.write('\n');
        process.stdout.write(f.json ? `${JSON.stringify(summary)}\n` : `${formatSummary(summary)}\n`);
        // Events given up on (retries exhausted, refused) are a failed run for a script that checks the exit code.
        if (summary.failed > 0) process.exitCode = 1;
      } finally {
        process.off('SIGINT', onSigint);
      }
    });
}
