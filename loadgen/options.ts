/**
 * Options of a load-generator run, their defaults and the validator. Only the CLI reads flags and
 * the environment; everything else passes a `Partial<LoadgenOptions>` to `runLoadgen`.
 */
import { userError } from '../common/errors.js';

export type LoadgenProtocol = 'http' | 'ndjson' | 'arrow-ws';
export const LOADGEN_PROTOCOLS: readonly LoadgenProtocol[] = ['http', 'ndjson', 'arrow-ws'];

/** What `onProgress` receives about once a second (totals over all workers so far). */
export interface LoadgenProgress {
  elapsedS: number;
  /** Events acknowledged per second over the last interval. */
  rate: number;
  sent: number;
  acked: number;
  rejected: number;
  retried: number;
  failed: number;
  /** Ack latency percentiles so far, ms. */
  p50: number;
  p99: number;
}

/**
 * A run. Times are epoch ms, durations ms, rates fractions in [0, 1) unless noted.
 * The run is bounded: at least one of `durationMs` and `events`.
 */
export interface LoadgenOptions {
  /** Base URL of the server, e.g. http://127.0.0.1:8080 (ws:// is derived for arrow-ws). */
  url: string;
  writeKey: string;
  /** `http`: Segment POST /v1/batch; `ndjson`: POST /v1/events; `arrow-ws`: Arrow IPC over GET /v1/stream. */
  protocol: LoadgenProtocol;
  /** Target events/s over all workers, open loop; undefined = closed loop (as fast as acks return). */
  rate?: number;
  durationMs?: number;
  /** Stop after this many events over all workers (split evenly). */
  events?: number;
  /** Distinct users over all workers; worker k simulates users u ≡ k (mod workers). */
  users: number;
  seed: number;
  /** Worker threads, each with its own generator, users and connections; 1 runs in the calling thread. */
  workers: number;
  /** Concurrent HTTP requests, or WebSocket connections, per worker. */
  connections: number;
  /** Events per request / Arrow record batch. */
  batchSize: number;
  /** Arrow batches in flight per WebSocket connection. */
  pipeline: number;
  duplicateRate: number;
  /** Max out-of-order hold-back (simulated ms). */
  jitterMs: number;
  lateRate: number;
  tooLateRate: number;
  invalidRate: number;
  /** Device clock ahead by this much (Segment only; the batch's sentAt lets the server correct it). */
  clockSkewMs: number;
  /** Zipf exponent of user activity. */
  zipf: number;
  /** Sessions of a user are > this apart (set to the engine's --session-gap). */
  sessionGapMs: number;
  /** Event time of the first event; default now. */
  startTime?: number;
  /**
   * Simulated ms between events over all workers. Default with --rate: 1000 / rate (event time
   * follows the intended send time). Default without: event time is the wall clock at generation.
   */
  stepMs?: number;
  /** Write the ground truth here as Parquet (plus `.sessions.parquet` and `.summary.json`). */
  truth?: string;
  /** Give up on a batch after this many retries (429/503 honour Retry-After; network errors back off). */
  maxRetries: number;
  /** Per-request timeout. */
  requestTimeoutMs: number;
  /**
   * Warm-up: acks of batches meant to be sent in the first `warmupMs` of each partition's run
   * (thread start-up, JIT, the server's first allocations) go to a histogram of their own, kept
   * out of the latency percentiles and reported apart. 0 = none.
   */
  warmupMs: number;
  /** Called about once a second while the run lasts. */
  onProgress?: (p: LoadgenProgress) => void;
  /** Aborting stops generating; in-flight batches finish and the summary is returned. */
  signal?: AbortSignal;
}

/**
 * The realistic traffic mix of `sluice loadgen`'s flag defaults, the demo and the end-to-end
 * benchmark: client-retry duplicates, out-of-order delivery, late, too-late and invalid events.
 */
export const REALISTIC_MIX = {
  duplicateRate: 0.02,
  jitterMs: 5_000,
  lateRate: 0.01,
  tooLateRate: 0.001,
  invalidRate: 0.005,
  clockSkewMs: 0,
} as const satisfies Partial<LoadgenOptions>;

export const LOADGEN_DEFAULTS = {
  url: 'http://127.0.0.1:8080',
  writeKey: '',
  protocol: 'http',
  users: 10_000,
  seed: 1,
  workers: 1,
  connections: 8,
  batchSize: 50,
  pipeline: 4,
  duplicateRate: 0,
  jitterMs: 0,
  lateRate: 0,
  tooLateRate: 0,
  invalidRate: 0,
  clockSkewMs: 0,
  zipf: 1.1,
  sessionGapMs: 30 * 60_000,
  maxRetries: 10,
  requestTimeoutMs: 30_000,
  warmupMs: 0,
} as const satisfies Partial<LoadgenOptions>;

/** Fills defaults and checks every option; throws a user error that names the flag to fix. */
export function validateLoadgenOptions(input: Partial<LoadgenOptions>): LoadgenOptions {
  const o: LoadgenOptions = {
    ...LOADGEN_DEFAULTS,
    ...(Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)) as Partial<LoadgenOptions>),
  };
  const bad = (msg: string): never => {
    throw userError('invalid_option', msg);
  };
  if (!LOADGEN_PROTOCOLS.includes(o.protocol)) bad(`--protocol must be http, ndjson or arrow-ws, got ${JSON.stringify(o.protocol)}`);
  if (typeof o.writeKey !== 'string' || o.writeKey === '') bad('--write-key is required (sluice serve prints the key it created)');
  let url: URL | undefined;
  try {
    url = new URL(o.url);
  } catch {
    bad(`--url must be an absolute http:// or https:// URL, got ${JSON.stringify(o.url)}`);
  }
  if (url && url.protocol !== 'http:' && url.protocol !== 'https:') bad(`--url must start with http:// or https://, got ${JSON.stringify(o.url)}`);
  if (o.durationMs === undefined && o.events === undefined) bad('give --duration or --events so the run is bounded');
  if (o.durationMs !== undefined && !(o.durationMs > 0)) bad(`--duration must be > 0, got ${o.durationMs}`);
  if (o.events !== undefined && !(Number.isInteger(o.events) && o.events > 0)) bad(`--events must be a positive integer, got ${o.events}`);
  const ints: Array<[keyof LoadgenOptions, string]> = [
    ['users', '--users'],
    ['workers', '--workers'],
    ['connections', '--connections'],
    ['batchSize', '--batch-size'],
    ['pipeline', '--pipeline'],
  ];
  for (const [k, flag] of ints) {
    const v = o[k];
    if (!Number.isInteger(v) || (v as number) <= 0) bad(`${flag} must be a positive integer, got ${String(v)}`);
  }
  if (!Number.isInteger(o.seed)) bad(`--seed must be an integer, got ${o.seed}`);
  if (o.users < o.workers) bad(`--users (${o.users}) must be at least --workers (${o.workers}): each worker simulates its own users`);
  const fractions: Array<[keyof LoadgenOptions, string]> = [
    ['duplicateRate', '--duplicate-rate'],
    ['lateRate', '--late-rate'],
    ['tooLateRate', '--too-late-rate'],
    ['invalidRate', '--invalid-rate'],
  ];
  for (const [k, flag] of fractions) {
    const v = o[k] as number;
    if (!(v >= 0 && v < 1)) bad(`${flag} must be a fraction in [0, 1), got ${v}`);
  }
  if (!(o.lateRate + o.tooLateRate < 0.9)) bad(`--late-rate + --too-late-rate must be < 0.9, got ${o.lateRate + o.tooLateRate}`);
  if (!(o.jitterMs >= 0)) bad(`--jitter must be ≥ 0, got ${o.jitterMs}`);
  if (!Number.isFinite(o.clockSkewMs)) bad(`--clock-skew must be a number of ms, got ${o.clockSkewMs}`);
  if (!(o.zipf >= 0)) bad(`--zipf must be ≥ 0, got ${o.zipf}`);
  if (!(o.sessionGapMs >= 60_000)) bad(`--session-gap must be at least 1m, got ${o.sessionGapMs} ms`);
  if (o.rate !== undefined && !(o.rate > 0 && Number.isFinite(o.rate))) bad(`--rate must be > 0 events/s, got ${o.rate}`);
  if (o.startTime !== undefined && !Number.isFinite(o.startTime)) bad(`--start-time must be a time, got ${o.startTime}`);
  if (o.stepMs !== undefined && !(o.stepMs >= 0)) bad(`stepMs must be ≥ 0, got ${o.stepMs}`);
  if (!(Number.isInteger(o.maxRetries) && o.maxRetries >= 0)) bad(`--max-retries must be an integer ≥ 0, got ${o.maxRetries}`);
  if (!(o.warmupMs >= 0 && Number.isFinite(o.warmupMs))) bad(`--warmup must be ≥ 0, got ${o.warmupMs} ms`);
  if (o.durationMs !== undefined && o.warmupMs >= o.durationMs) bad(`--warmup (${o.warmupMs} ms) must be shorter than --duration (${o.durationMs} ms)`);
  if (!(o.requestTimeoutMs > 0)) bad(`requestTimeoutMs must be > 0, got ${o.requestTimeoutMs}`);
  return o;
}
