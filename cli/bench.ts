/**
 * `sluice bench` (`npm run bench`): the end-to-end benchmark (bench/e2e-bench.ts) — a real
 * server in a child process driven by the load generator per protocol, at max and at fractions
 * of it, plus worker and user scaling. Prints tables, or the whole report as JSON with --json.
 */
import { writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { parseBytes, parseDuration } from '../common/duration.js';
import { userError } from '../common/errors.js';
import { formatE2eReport, runE2eBench } from '../bench/e2e-bench.js';
import { parseCount, parseList, type E2eBenchOptions } from '../bench/e2e-options.js';
import type { LoadgenProtocol } from '../loadgen/options.js';
import { formatProgress } from './loadgen.js';

interface Flags {
  protocols: string;
  runs: string;
  duration: string;
  warmup: string;
  rates: string;
  /** false with --no-light-loop. */
  lightLoop?: boolean;
  users: string;
  workerScale: string;
  userScale: string;
  scalingProtocol: string;
  shards?: string;
  workers?: string;
  flushInterval: string;
  loadgenWorkers: string;
  connections?: string;
  batchSize?: string;
  pipeline: string;
  seed: string;
  dir?: string;
  keep?: boolean;
  settleTimeout?: string;
  maxRss: string;
  json?: boolean;
  out?: string;
  progress?: boolean;
  serveArg?: string[];
}

function integer(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (text.trim() === '' || !Number.isInteger(n)) throw userError('invalid_option', `${flag} must be an integer, got ${JSON.stringify(text)}`);
  return n;
}

function fraction(text: string, flag: string): number {
  const n = Number(text);
  if (text.trim() === '' || !Number.isFinite(n)) throw userError('invalid_option', `${flag} must list fractions like 0.5,0.9, got ${JSON.stringify(text)}`);
  return n;
}

/** Flags → options (validated by runE2eBench). Exported for the tests. */
export function benchOptionsFromFlags(f: Flags): Partial<E2eBenchOptions> {
  return {
    protocols: parseList(f.protocols, '--protocols', (p) => p as LoadgenProtocol),
    runs: integer(f.runs, '--runs'),
    durationMs: parseDuration(f.duration, '--duration'),
    warmupMs: parseDuration(f.warmup, '--warmup'),
    rateFractions: parseList(f.rates, '--rates', (x) => fraction(x, '--rates')),
    lightLoop: f.lightLoop !== false,
    users: parseCount(f.users, '--users'),
    workerScale: parseList(f.workerScale, '--worker-scale', (x) => integer(x, '--worker-scale')!),
    userScale: parseList(f.userScale, '--user-scale', (x) => parseCount(x, '--user-scale')),
    scalingProtocol: f.scalingProtocol as LoadgenProtocol,
    shards: integer(f.shards, '--shards'),
    workers: integer(f.workers, '--workers'),
    flushIntervalMs: parseDuration(f.flushInterval, '--flush-interval'),
    loadgenWorkers: integer(f.loadgenWorkers, '--loadgen-workers'),
    connections: integer(f.connections, '--connections'),
    batchSize: integer(f.batchSize, '--batch-size'),
    pipeline: integer(f.pipeline, '--pipeline'),
    seed: integer(f.seed, '--seed'),
    dir: f.dir,
    keep: f.keep === true,
    settleTimeoutMs: f.settleTimeout === undefined ? undefined : parseDuration(f.settleTimeout, '--settle-timeout'),
    maxServerRssBytes: parseBytes(f.maxRss, '--max-rss'),
    serveArgs: f.serveArg ?? [],
  };
}

export const BENCH_FLAG_DEFAULTS = {
  protocols: 'http,ndjson,arrow-ws',
  runs: '1',
  duration: '20s',
  warmup: '3s',
  rates: '0.5,0.9',
  users: '100K',
  workerScale: '1,2',
  userScale: '10K,100K,1M,10M',
  scalingProtocol: 'arrow-ws',
  flushInterval: '5s',
  loadgenWorkers: '2',
  pipeline: '4',
  seed: '1',
  maxRss: '8GiB',
} as const;

export function register(program: Command): void {
  const d = BENCH_FLAG_DEFAULTS;
  program
    .command('bench')
    .description('end-to-end benchmark: start a server, drive it with the load generator per protocol, report throughput, latency, freshness, memory, disk and scaling')
    .option('--protocols <list>', 'protocols to measure, comma-separated: http, ndjson, arrow-ws', d.protocols)
    .option('--duration <d>', 'load per run', d.duration)
    .option('--warmup <d>', 'first part of each load kept out of the latency percentiles (reported apart)', d.warmup)
    .option('--runs <n>', 'repeat every run n times and report the median one', d.runs)
    .option('--rates <list>', 'open-loop runs at these fractions of the closed-loop max (none = skip)', d.rates)
    .option('--no-light-loop', 'skip the light closed loop per protocol (one loadgen thread, 4 requests or 1 Arrow batch in flight)')
    .option('--users <n>', 'distinct users of the protocol and worker-scaling runs (10K, 1M…)', d.users)
    .option('--worker-scale <list>', 'engine worker counts to compare (none = skip)', d.workerScale)
    .option('--user-scale <list>', 'distinct-user counts of the cost curve (none = skip)', d.userScale)
    .option('--scaling-protocol <p>', 'protocol of the scaling runs', d.scalingProtocol)
    .option('--shards <n>', 'engine shards (default: the cores, as serve)')
    .option('--workers <n>', 'engine worker threads of the protocol and user-scaling runs (default cores)')
    .option('--flush-interval <d>', 'server checkpoint / flush interval', d.flushInterval)
    .option('--loadgen-workers <n>', 'load generator threads', d.loadgenWorkers)
    .option('--connections <n>', 'requests / WebSockets per loadgen thread (default 32 for HTTP, 4 for arrow-ws)')
    .option('--batch-size <n>', 'events per request / Arrow batch (default 50 for HTTP, 1000 for arrow-ws)')
    .option('--pipeline <n>', 'Arrow batches in flight per WebSocket', d.pipeline)
    .option('--seed <n>', 'load generator seed', d.seed)
    .option('--dir <dir>', 'where each run’s data and lake go (default a temp directory, deleted)')
    .option('--keep', 'keep every run’s data and lake (with --dir)')
    .option('--settle-timeout <d>', 'longest wait for silver after a load (default 3 × flush interval + 60s)')
    .option('--max-rss <bytes>', 'stop a run’s load when the server’s RSS passes this', d.maxRss)
    .option('--json', 'print the report as JSON')
    .option('--out <file>', 'also write the JSON report to this file')
    .option('--progress', 'show the load generator’s progress line even when stderr is not a TTY')
    .option('--serve-arg <flag>', 'one more `sluice serve` flag for every run, repeatable, e.g. --serve-arg=--max-lag=0', (v: string, all: string[] = []) => [...all, v])
    .action(async (f: Flags) => {
      const options = benchOptionsFromFlags(f);
      const tty = f.progress === true || process.stderr.isTTY === true;
      const abort = new AbortController();
      const onSigint = (): void => {
        if (abort.signal.aborted) process.exit(130);
        process.stderr.write('\nstopping after the current run’s load (Ctrl-C again to quit at once)\n');
        abort.abort(userError('interrupted', 'benchmark interrupted'));
      };
      process.on('SIGINT', onSigint);
      try {
        const report = await runE2eBench(options, {
          log: (line) => process.stderr.write(`${tty ? '\r\x1b[K' : ''}${line}\n`),
          progress: tty ? (p) => process.stderr.write(`\r\x1b[K  ${formatProgress(p)}`) : undefined,
          signal: abort.signal,
        });
        if (f.out) await writeFile(f.out, `${JSON.stringify(report, null, 2)}\n`);
        process.stdout.write(f.json ? `${JSON.stringify(report)}\n` : `${formatE2eReport(report)}\n`);
      } finally {
        process.off('SIGINT', onSigint);
      }
    });
}
