/**
 * Options of the end-to-end benchmark (`sluice bench`), their defaults and the validator.
 * Only cli/bench.ts reads flags; everything else passes a `Partial<E2eBenchOptions>`.
 */
import { availableParallelism } from 'node:os';
import { userError } from '../common/errors.js';
import { LOADGEN_PROTOCOLS, type LoadgenProtocol } from '../loadgen/options.js';

/**
 * One benchmark session. Durations in ms, rates in events/s, fractions of the measured maximum
 * in (0, 1]. Every load is bounded by `durationMs`; every wait by `settleTimeoutMs`.
 */
export interface E2eBenchOptions {
  /** Protocols measured at max and at each `rateFractions` of that max, in this order. */
  protocols: LoadgenProtocol[];
  /** Repeats of every run; each table row is the median repeat. */
  runs: number;
  /** Length of every load (closed and open loop). */
  durationMs: number;
  /**
   * The first part of every load, kept out of the ack-latency percentiles and the lag statistics
   * (thread start-up, JIT warm-up); its ack latency is reported apart.
   */
  warmupMs: number;
  /** Open-loop runs at these fractions of the protocol's closed-loop max (latency percentiles). */
  rateFractions: number[];
  /**
   * Per protocol, a light closed loop too (issue 13's "p99 ack ≤ 20 ms under a light closed
   * loop"): one load-generator thread with few requests in flight ({@link loadShape}), as fast as
   * its acks return.
   */
  lightLoop: boolean;
  /** Distinct users of the per-protocol runs and of the worker-scaling runs. */
  users: number;
  /** Engine worker counts of the scaling table (closed loop, `scalingProtocol`, `users`); empty = skip. */
  workerScale: number[];
  /** Distinct-user counts of the cost curve (closed loop, `scalingProtocol`, `workers`); empty = skip. */
  userScale: number[];
  /** Protocol of both scaling tables. */
  scalingProtocol: LoadgenProtocol;
  /** Engine shards (fixed for every run so runs compare). Default: the cores, like `sluice serve`. */
  shards: number;
  /** Engine worker threads of the per-protocol and user-scaling runs. Default cores. */
  workers: number;
  /** Server checkpoint / flush interval; silver freshness is measured against it. */
  flushIntervalMs: number;
  /** Load-generator threads (in this process). */
  loadgenWorkers: number;
  /** Concurrent requests (WebSockets for arrow-ws) per load-generator thread; undefined = per protocol (32 HTTP, 4 WebSockets). */
  connections?: number;
  /** Events per request / Arrow batch; undefined = per protocol (50 for Segment and NDJSON, 1000 for Arrow). */
  batchSize?: number;
  /** Arrow batches in flight per WebSocket. */
  pipeline: number;
  seed: number;
  /** Where each run's data directory and lake go (a fresh subdirectory per run); undefined = a new temp directory. */
  dir?: string;
  /** Keep every run's data and lake instead of deleting them. */
  keep: boolean;
  /** Longest wait after a load for the engine to process and commit everything acknowledged. Default 3 × flush interval + 60 s. */
  settleTimeoutMs?: number;
  /** Monitor sampling period (acked, live, committed counters; process stats). */
  sampleMs: number;
  /** A run stops its load early when the server's resident memory passes this many bytes (the machine is shared). */
  maxServerRssBytes: number;
  /** More `sluice serve` flags for every run's server (`--serve-arg`, repeatable), e.g. `--max-lag=0` to compare a setting. */
  serveArgs: string[];
}

export const E2E_BENCH_DEFAULTS = {
  protocols: [...LOADGEN_PROTOCOLS],
  runs: 1,
  durationMs: 20_000,
  warmupMs: 3_000,
  rateFractions: [0.5, 0.9],
  lightLoop: true,
  users: 100_000,
  workerScale: [1, 2],
  userScale: [10_000, 100_000, 1_000_000, 10_000_000],
  scalingProtocol: 'arrow-ws',
  flushIntervalMs: 5_000,
  loadgenWorkers: 2,
  pipeline: 4,
  seed: 1,
  keep: false,
  sampleMs: 100,
  maxServerRssBytes: 8 * 1024 ** 3,
  serveArgs: [],
} as const satisfies Partial<E2eBenchOptions>;

/** What a run's load generator uses: threads, requests (WebSockets) per thread, events per request, Arrow batches in flight per WebSocket. */
export interface LoadShape {
  loadgenWorkers: number;
  connections: number;
  batchSize: number;
  pipeline: number;
}

/**
 * The load of a run. Max and open-loop runs: the options (per protocol where not given: 32
 * requests per thread of 50 events for HTTP and NDJSON, 4 WebSockets of 1000-event batches for
 * Arrow). The light closed loop: one thread with 4 requests of 50 events in flight (the issue's
 * "4 connections of 50-event batches"), for Arrow one WebSocket with one batch in flight.
 */
export function loadShape(o: E2eBenchOptions, protocol: LoadgenProtocol, light = false): LoadShape {
  const arrow = protocol === 'arrow-ws';
  const batchSize = o.batchSize ?? (arrow ? 1000 : 50);
  if (light) return { loadgenWorkers: 1, connections: arrow ? 1 : 4, batchSize, pipeline: 1 };
  return { loadgenWorkers: o.loadgenWorkers, connections: o.connections ?? (arrow ? 4 : 32), batchSize, pipeline: o.pipeline };
}

/** Requests (Arrow batches) a load keeps in flight at once: per thread its connections, for Arrow times the pipeline. */
export function inFlightOf(shape: LoadShape, protocol: LoadgenProtocol): number {
  return shape.loadgenWorkers * shape.connections * (protocol === 'arrow-ws' ? shape.pipeline : 1);
}

/** Users the load generator may be asked for (its per-user state is ~110 B per user per run). */
export const MAX_BENCH_USERS = 50_000_000;

/** Fills defaults and checks every option; throws a user error that names the flag to fix. */
export function validateE2eBenchOptions(input: Partial<E2eBenchOptions>): E2eBenchOptions {
  const cores = Math.max(1, availableParallelism());
  const o: E2eBenchOptions = {
    ...E2E_BENCH_DEFAULTS,
    protocols: [...E2E_BENCH_DEFAULTS.protocols],
    rateFractions: [...E2E_BENCH_DEFAULTS.rateFractions],
    workerScale: [...E2E_BENCH_DEFAULTS.workerScale],
    userScale: [...E2E_BENCH_DEFAULTS.userScale],
    shards: cores,
    workers: cores,
    ...(Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)) as Partial<E2eBenchOptions>),
  };
  const bad = (msg: string): never => {
    throw userError('invalid_option', msg);
  };
  const posInt = (v: unknown): boolean => Number.isInteger(v) && (v as number) > 0;
  if (!Array.isArray(o.protocols) || o.protocols.length === 0) bad('--protocols must name at least one of http, ndjson, arrow-ws');
  for (const p of o.protocols) if (!LOADGEN_PROTOCOLS.includes(p)) bad(`--protocols must be a comma-separated list of http, ndjson, arrow-ws, got ${JSON.stringify(p)}`);
  if (new Set(o.protocols).size !== o.protocols.length) bad(`--protocols lists a protocol twice: ${o.protocols.join(',')}`);
  if (!LOADGEN_PROTOCOLS.includes(o.scalingProtocol)) bad(`--scaling-protocol must be http, ndjson or arrow-ws, got ${JSON.stringify(o.scalingProtocol)}`);
  if (!posInt(o.runs) || o.runs > 9) bad(`--runs must be an integer in 1..9, got ${o.runs}`);
  if (!(Number.isFinite(o.durationMs) && o.durationMs >= 1_000 && o.durationMs <= 3_600_000)) bad(`--duration must be between 1s and 1h, got ${o.durationMs} ms`);
  if (!(Number.isFinite(o.warmupMs) && o.warmupMs >= 0 && o.warmupMs < o.durationMs)) bad(`--warmup must be ≥ 0 and shorter than --duration (${o.durationMs} ms), got ${o.warmupMs} ms`);
  for (const f of o.rateFractions) if (!(f > 0 && f <= 1)) bad(`--rates must be fractions of the max in (0, 1], e.g. 0.5,0.9; got ${f}`);
  if (!posInt(o.users) || o.users > MAX_BENCH_USERS) bad(`--users must be an integer in 1..${MAX_BENCH_USERS}, got ${o.users}`);
  for (const u of o.userScale) if (!posInt(u) || u > MAX_BENCH_USERS) bad(`--user-scale must list integers in 1..${MAX_BENCH_USERS}, got ${u}`);
  for (const w of o.workerScale) if (!posInt(w) || w > 256) bad(`--worker-scale must list integers in 1..256, got ${w}`);
  if (!posInt(o.shards) || o.shards > 4096) bad(`--shards must be an integer in 1..4096, got ${o.shards}`);
  if (!posInt(o.workers) || o.workers > 256) bad(`--workers must be an integer in 1..256, got ${o.workers}`);
  for (const w of [o.workers, ...o.workerScale]) if (w > o.shards) bad(`engine workers (${w}) must not exceed --shards (${o.shards}): a worker without a shard measures nothing`);
  if (!(o.flushIntervalMs >= 50)) bad(`--flush-interval must be at least 50ms, got ${o.flushIntervalMs} ms`);
  if (!posInt(o.loadgenWorkers) || o.loadgenWorkers > 64) bad(`--loadgen-workers must be an integer in 1..64, got ${o.loadgenWorkers}`);
  if (o.connections !== undefined && (!posInt(o.connections) || o.connections > 1024)) bad(`--connections must be an integer in 1..1024, got ${o.connections}`);
  if (o.batchSize !== undefined && (!posInt(o.batchSize) || o.batchSize > 100_000)) bad(`--batch-size must be an integer in 1..100000, got ${o.batchSize}`);
  if (!posInt(o.pipeline) || o.pipeline > 64) bad(`--pipeline must be an integer in 1..64, got ${o.pipeline}`);
  if (typeof o.lightLoop !== 'boolean') bad(`lightLoop must be true or false, got ${String(o.lightLoop)}`);
  if (!Number.isInteger(o.seed)) bad(`--seed must be an integer, got ${o.seed}`);
  if (o.settleTimeoutMs !== undefined && !(o.settleTimeoutMs >= 1_000)) bad(`--settle-timeout must be at least 1s, got ${o.settleTimeoutMs} ms`);
  if (!(o.sampleMs >= 10 && o.sampleMs <= 5_000)) bad(`sampleMs must be in 10..5000, got ${o.sampleMs}`);
  if (!(o.maxServerRssBytes >= 64 * 1024 ** 2)) bad(`--max-rss must be at least 64MiB, got ${o.maxServerRssBytes} bytes`);
  for (const n of [o.users, ...o.userScale]) if (n < o.loadgenWorkers) bad(`users (${n}) must be at least --loadgen-workers (${o.loadgenWorkers}): each generator thread simulates its own users`);
  return o;
}

/** Parses a comma-separated list flag (`none` or empty = []), each item with `parse`. */
export function parseList<T>(text: string, flag: string, parse: (item: string) => T): T[] {
  const t = text.trim();
  if (t === '' || t === 'none') return [];
  return t.split(',').map((s) => {
    const item = s.trim();
    if (item === '') throw userError('invalid_option', `${flag} has an empty item: ${JSON.stringify(text)}`);
    return parse(item);
  });
}

/** Parses a count such as `10000`, `10K`, `1M`, `1.5M` (K = 10^3, M = 10^6). */
export function parseCount(text: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)([kKmM]?)$/.exec(text.trim());
  if (!m) throw userError('invalid_option', `${flag} must be a count like 10000, 100K or 1M, got ${JSON.stringify(text)}`);
  const n = Number(m[1]) * (m[2] === '' ? 1 : m[2]!.toLowerCase() === 'k' ? 1e3 : 1e6);
  if (!Number.isInteger(n)) throw userError('invalid_option', `${flag} must be a whole count, got ${JSON.stringify(text)}`);
  return n;
}
