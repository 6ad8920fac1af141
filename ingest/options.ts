/**
 * Ingest server options, defaults and validator (exact messages, pinned by tests).
 */
import { totalmem } from 'node:os';
import type { Logger } from 'pino';
import { userError } from '../common/errors.js';
import { defaultDashboardOptions, validateDashboardOptions, type DashboardOptions, type DashboardOptionsInput } from './dashboard/options.js';

export interface WriteKey {
  key: string;
  /** Source name stamped on events sent with this key. Default: the protocol ('segment' / 'ndjson' / 'arrow'). */
  source?: string;
}

export interface PiiOptions {
  /** Paths relative to the message (e.g. `context.ip`, `properties.email`, `traits.phone`, `userId`) whose values are replaced by a salted SHA-256 (hex). */
  hash: string[];
  /** Paths removed before anything is stored. */
  drop: string[];
  /** Salt for `hash`; required when `hash` is non-empty. */
  salt: string;
}

export interface GroupCommitOptions {
  /** A shard batch is cut when it holds this many rows. */
  maxRows: number;
  /**
   * Linger (ms): while the shard's log is idle, a batch is cut this long after its first row
   * (0 = at the end of the event-loop turn). While an append is in flight, rows accumulate and
   * the batch is cut as soon as that append is durable (the log could not start another fsync
   * sooner), so under load batches grow with the disk's latency.
   */
  maxDelayMs: number;
}

export interface IngestOptions {
  /** Listen address. Default 127.0.0.1. */
  host: string;
  /** Listen port; 0 picks a free port. Default 8080. */
  port: number;
  writeKeys: WriteKey[];
  /** Keys of `POST/GET /v1/admin/erasures` (never a write or read key). Default none: the admin routes answer 401. */
  adminKeys: string[];
  /** Per event, bytes of its JSON. Default 32 KiB (Segment's limit). */
  maxEventBytes: number;
  /** Per request body, after gunzip. Default 500 KiB (Segment's limit). */
  maxBodyBytes: number;
  /** Events per request. Default 2,500 (Segment's limit). */
  maxBatchEvents: number;
  /** Events timestamped further than this (ms) in the future, after skew correction, are rejected (`future_timestamp`). Default 10 min. */
  maxFutureSkewMs: number;
  /**
   * Oldest accepted event time (epoch ms, after skew correction); older → `timestamp_too_old`.
   * Default 2000-01-01T00:00:00Z. With maxFutureSkewMs it bounds every stored event_time, so
   * partitions and windows derived from it are always real dates (docs/VALIDATION.md).
   */
  minEventTimeMs: number;
  /** Deepest JSON nesting accepted per event (and per request envelope); deeper → `too_deep` / 400. Default 64. */
  maxJsonDepth: number;
  /**
   * A request whose body has not fully arrived this long (ms) after its headers is answered 408
   * and its connection closed, releasing everything it held. Default 7 s: uWS itself closes a
   * connection that sent nothing for ≈ 8–12 s (HTTP_IDLE_TIMEOUT_S 10, checked on a 4 s tick), and
   * a stalled body should get its 408 before that (at 10 s some got the close first).
   */
  bodyTimeoutMs: number;
  /**
   * Token bucket per write key, in events: fairness between keys (429), not overload (503, see
   * maxBacklogBytes / maxMemoryBytes). Default 1 M/s, burst 2 M: above one server's capacity, so
   * off unless configured (docs/VALIDATION.md, "Overload (503) and rate limits (429)").
   */
  rateLimit: { eventsPerSecond: number; burst: number };
  /** 503 while the engine holds more acknowledged-but-unprocessed events than this (deps.backlog). Default 2 M. */
  maxBacklogEvents: number;
  /**
   * 503 + Retry-After while the running engine's processing is further behind the acks than this
   * (ms): the oldest acknowledged event it has not processed was acknowledged longer ago
   * (deps.lagMs). Keeps the acks from running ahead of the engine when both share the machine's
   * cores (the engine is niced): refusing gives it the CPU to catch up, and bounds how long an
   * acknowledged event takes to reach silver (≈ this + the flush interval + a checkpoint). Not
   * applied while the engine is down or recovering (refusing would not speed it up; the backlog
   * bounds apply). Default 5 s (`sluice serve`: the flush interval if longer — a checkpoint pauses
   * its shard's processing, and a healthy one must not cause refusals); 0 = no bound.
   */
  maxLagMs: number;
  /**
   * 503 + Retry-After while the log holds more bytes (framing included) that the engine has not
   * committed than this (deps.uncommitted): the bound of the backlog that waits on disk when ingest
   * acks faster than the engine commits. Default 1 GiB; `sluice serve` derives it from the data
   * directory's free disk (cli/serve.ts) unless set. 0 = no bound.
   */
  maxBacklogBytes: number;
  /** 503 while any log has more unsynced bytes than this. Default 256 MiB. */
  maxLogPendingBytes: number;
  /**
   * Memory budget of the server: 503 + Retry-After while the resident memory of its processes
   * (ingest and the engine process, deps.memoryBytes) is above it, so it refuses before it swells;
   * when memory at rest is already above it (a budget too small for this server), it warns and
   * refuses only growth past that rest (ingest/memory-budget.ts). Default 75 % of the machine's
   * memory; 0 = no budget.
   */
  maxMemoryBytes: number;
  pii: PiiOptions;
  groupCommit: GroupCommitOptions;
  /** WebSocket maximum message size in bytes (set explicitly: uWS closes sockets that exceed it). Default 16 MiB. */
  wsMaxPayloadBytes: number;
  /** The live dashboard (ingest/dashboard/options.ts): read keys, tail, alert thresholds. Off while it has no read key. */
  dashboard: DashboardOptions;
  /** Structured logger; default pino at info level to stderr. */
  logger?: Logger;
}

export function defaultIngestOptions(): IngestOptions {
  return {
    host: '127.0.0.1',
    port: 8080,
    writeKeys: [],
    adminKeys: [],
    maxEventBytes: 32 * 1024,
    maxBodyBytes: 500 * 1024,
    maxBatchEvents: 2500,
    maxFutureSkewMs: 10 * 60_000,
    minEventTimeMs: Date.UTC(2000, 0, 1),
    maxJsonDepth: 64,
    bodyTimeoutMs: 7_000,
    rateLimit: { eventsPerSecond: 1_000_000, burst: 2_000_000 },
    maxBacklogEvents: 2_000_000,
    maxLagMs: 5000,
    maxBacklogBytes: 2 ** 30,
    maxLogPendingBytes: 256 * 1024 * 1024,
    maxMemoryBytes: Math.floor(totalmem() * 0.75),
    pii: { hash: [], drop: [], salt: '' },
    groupCommit: { maxRows: 8192, maxDelayMs: 2 },
    wsMaxPayloadBytes: 16 * 1024 * 1024,
    dashboard: defaultDashboardOptions(),
  };
}

/** Input accepted by the validator: any subset; `groupCommitMaxRows` is the older spelling of `groupCommit.maxRows`. */
export type IngestOptionsInput = Partial<Omit<IngestOptions, 'rateLimit' | 'pii' | 'groupCommit' | 'dashboard'>> & {
  dashboard?: DashboardOptionsInput;
  rateLimit?: Partial<IngestOptions['rateLimit']>;
  pii?: Partial<PiiOptions>;
  groupCommit?: Partial<GroupCommitOptions>;
  groupCommitMaxRows?: number;
};

/** Fills defaults and checks every option; throws a user error naming the option and what it must be. */
export function validateIngestOptions(input: IngestOptionsInput): IngestOptions {
  const d = defaultIngestOptions();
  const given = Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)) as IngestOptionsInput;
  const known = new Set([...Object.keys(d), 'logger', 'groupCommitMaxRows']);
  for (const k of Object.keys(given)) if (!known.has(k)) throw userError('invalid_option', `unknown ingest option "${k}" (known: ${[...known].join(', ')})`);
  const { groupCommitMaxRows, ...rest } = given;
  const o: IngestOptions = {
    ...d,
    ...(rest as Partial<IngestOptions>),
    rateLimit: { ...d.rateLimit, ...given.rateLimit },
    pii: { ...d.pii, ...given.pii },
    groupCommit: { ...d.groupCommit, ...(groupCommitMaxRows !== undefined ? { maxRows: groupCommitMaxRows } : {}), ...given.groupCommit },
    dashboard: validateDashboardOptions(given.dashboard),
  };
  const posInt = (name: string, v: unknown): void => {
    if (!Number.isInteger(v) || (v as number) <= 0) throw userError('invalid_option', `${name} must be a positive integer, got ${JSON.stringify(v)}`);
  };
  if (typeof o.host !== 'string' || o.host === '') throw userError('invalid_option', `host must be a non-empty address, got ${JSON.stringify(o.host)}`);
  if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535) throw userError('invalid_option', `port must be an integer in 0..65535, got ${JSON.stringify(o.port)}`);
  if (!Array.isArray(o.writeKeys) || o.writeKeys.length === 0) throw userError('invalid_option', 'writeKeys must name at least one write key');
  const seen = new Set<string>();
  for (const k of o.writeKeys) {
    if (typeof k?.key !== 'string' || k.key === '') throw userError('invalid_option', 'writeKeys entries must have a non-empty key');
    if (k.source !== undefined && (typeof k.source !== 'string' || k.source === '')) throw userError('invalid_option', `writeKeys source must be a non-empty string, got ${JSON.stringify(k.source)}`);
    if (seen.has(k.key)) throw userError('invalid_option', 'writeKeys must not repeat a key');
    seen.add(k.key);
  }
  if (!Array.isArray(o.adminKeys) || o.adminKeys.some((k) => typeof k !== 'string' || k === '')) throw userError('invalid_option', 'adminKeys must be an array of non-empty strings');
  if (o.adminKeys.some((k) => seen.has(k) || o.dashboard.readKeys.includes(k))) throw userError('invalid_option', 'an admin key must differ from every write key and read key');
  if (o.dashboard.readKeys.some((k) => seen.has(k))) throw userError('invalid_option', 'a dashboard read key must differ from every write key (the page must never hold a key that can write)');
  posInt('maxEventBytes', o.maxEventBytes);
  posInt('maxBodyBytes', o.maxBodyBytes);
  posInt('maxBatchEvents', o.maxBatchEvents);
  posInt('maxBacklogEvents', o.maxBacklogEvents);
  if (!Number.isSafeInteger(o.maxLagMs) || o.maxLagMs < 0) throw userError('invalid_option', `maxLagMs must be a whole number of ms ≥ 0 (0 = no bound), got ${JSON.stringify(o.maxLagMs)}`);
  posInt('maxLogPendingBytes', o.maxLogPendingBytes);
  if (!Number.isSafeInteger(o.maxBacklogBytes) || o.maxBacklogBytes < 0) throw userError('invalid_option', `maxBacklogBytes must be a whole number of bytes ≥ 0 (0 = no bound), got ${JSON.stringify(o.maxBacklogBytes)}`);
  if (!Number.isSafeInteger(o.maxMemoryBytes) || o.maxMemoryBytes < 0) throw userError('invalid_option', `maxMemoryBytes must be a whole number of bytes ≥ 0 (0 = no budget), got ${JSON.stringify(o.maxMemoryBytes)}`);
  posInt('wsMaxPayloadBytes', o.wsMaxPayloadBytes);
  posInt('groupCommit.maxRows', o.groupCommit.maxRows);
  if (typeof o.groupCommit.maxDelayMs !== 'number' || !(o.groupCommit.maxDelayMs >= 0) || o.groupCommit.maxDelayMs > 10_000) {
    throw userError('invalid_option', `groupCommit.maxDelayMs must be a number of ms in 0..10000, got ${JSON.stringify(o.groupCommit.maxDelayMs)}`);
  }
  if (typeof o.maxFutureSkewMs !== 'number' || !(o.maxFutureSkewMs >= 0)) throw userError('invalid_option', `maxFutureSkewMs must be a number ≥ 0, got ${JSON.stringify(o.maxFutureSkewMs)}`);
  if (!Number.isSafeInteger(o.minEventTimeMs) || o.minEventTimeMs < 0) throw userError('invalid_option', `minEventTimeMs must be epoch milliseconds ≥ 0 (1970-01-01), got ${JSON.stringify(o.minEventTimeMs)}`);
  if (!Number.isInteger(o.maxJsonDepth) || o.maxJsonDepth < 2 || o.maxJsonDepth > 1000) throw userError('invalid_option', `maxJsonDepth must be an integer in 2..1000, got ${JSON.stringify(o.maxJsonDepth)}`);
  if (!Number.isInteger(o.bodyTimeoutMs) || o.bodyTimeoutMs < 100 || o.bodyTimeoutMs > 600_000) throw userError('invalid_option', `bodyTimeoutMs must be an integer number of ms in 100..600000, got ${JSON.stringify(o.bodyTimeoutMs)}`);
  if (!(o.rateLimit.eventsPerSecond > 0) || !(o.rateLimit.burst >= 1)) {
    throw userError('invalid_option', `rateLimit needs eventsPerSecond > 0 and burst ≥ 1, got ${JSON.stringify(o.rateLimit)}`);
  }
  for (const list of ['hash', 'drop'] as const) {
    const paths = o.pii[list];
    if (!Array.isArray(paths) || paths.some((p) => typeof p !== 'string' || p === '' || p.split('.').some((s) => s === ''))) {
      throw userError('invalid_option', `pii.${list} must be a list of dot-separated paths such as "properties.email", got ${JSON.stringify(paths)}`);
    }
  }
  if (typeof o.pii.salt !== 'string') throw userError('invalid_option', `pii.salt must be a string, got ${JSON.stringify(o.pii.salt)}`);
  if (o.pii.hash.length > 0 && o.pii.salt === '') throw userError('invalid_option', 'pii.salt must be set (a secret string) when pii.hash lists fields to hash');
  return o;
}
