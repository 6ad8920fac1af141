/**
 * The ingest server on uWebSockets.js: Segment-compatible HTTP, NDJSON and Arrow over WebSocket.
 *
 *   request ─▶ closing? starting? 503 ─▶ overloaded (backlog / lag / uncommitted log / unsynced log / memory)? 503 ─▶ body ≤ maxBodyBytes
 *   (413) ─▶ gunzip (400/413) ─▶ decode (400) ─▶ auth (401) ─▶ count (413) ─▶ rate limit (429)
 *   ─▶ validate + normalize per event ─▶ rejects → one DLQ record (awaited)
 *   ─▶ accepted → shard = murmur3(user_id) mod S → ShardAppender (group commit, fsync)
 *   ─▶ 200 {"ok":true,"accepted":N,"rejected":[…],"offsets":[{shard,offset}]} — after every fsync
 *      (a single call whose one event was rejected: 400 with the reject's code, dead-lettered all the same)
 *
 * An append or DLQ failure answers 503 (retry): nothing in that request was acknowledged
 * (some of its rows may be in the log; the client's retry is deduplicated downstream).
 */
import { gunzipSync } from 'node:zlib';
import uws from 'uWebSockets.js';
import { pino, type Logger } from 'pino';
import { register } from 'prom-client';
import { userError } from '../common/errors.js';
import type { IngestRow } from './batch-builder.js';
import { DeadLetterAppender } from './dead-letters.js';
import type { ShardLog } from '../log/log.js';
import { mountDashboard } from './dashboard/mount.js';
import { MemoryBudget } from './memory-budget.js';
import { ingestMetrics, readiness } from './metrics.js';
import type { NormalizeContext } from './normalize.js';
import { validateIngestOptions, type IngestOptions, type IngestOptionsInput, type WriteKey } from './options.js';
import { decodeArrowMessage, parseControl } from './protocols/arrow-ws.js';
import { refuse, type Admission, type Decoded, type Refusal } from './protocols/decoded.js';
import { decodeNdjson } from './protocols/ndjson.js';
import { decodeSegment, SEGMENT_BROWSER_BATCH_PATH, SEGMENT_BROWSER_PATHS, SEGMENT_CALLS } from './protocols/segment.js';
import { TokenBuckets } from './rate-limit.js';
import { ShardAppender } from './shard-appender.js';
import { shardOf } from './shard-of.js';
import { dropErased, ERASED_CODE, mountAdmin, type Suppression } from './erasures.js';
import type { ErasureStore } from '../storage/erasure-store.js';
import { anonymousResidentBytes } from '../common/resident-memory.js';

export interface IngestDeps {
  /** One log per shard; shard count = logs.length; shard = murmur3(utf8(user_id)) mod shards (common/hash.ts). */
  logs: readonly ShardLog[];
  /** Dead letters: one Arrow IPC stream of a dlqSchema batch per request with rejects, awaited before answering. */
  dlqLog: ShardLog;
  /**
   * Called after a shard record is durable and BEFORE the acks of the requests in it are sent.
   * `payload` is the exact record bytes (Arrow IPC stream, ingestSchema); ownership passes to the
   * callee (it may transfer the buffer). `rows`: events in the record.
   */
  onDurable?(shard: number, offset: number, payload: Uint8Array, rows: number): void;
  /** Events acknowledged but not yet processed downstream; above options.maxBacklogEvents → 503 + Retry-After. */
  backlog?(): number;
  /**
   * What the log holds that the engine has not committed (ingest/uncommitted-log.ts): bytes
   * (framing included) and events; above options.maxBacklogBytes → 503 + Retry-After.
   */
  uncommitted?(): { bytes: number; events: number };
  /**
   * How long (ms) the oldest acknowledged event the running engine has not processed yet has
   * waited; above options.maxLagMs → 503 + Retry-After. 0 when it is caught up or not running.
   */
  lagMs?(): number;
  /** JSON body for GET /v1/live (the engine's live metrics; undefined until it first reported them); 404 when absent. */
  live?(): unknown;
  /** Extra readiness condition for /readyz. */
  ready?(): boolean;
  /**
   * True while the engine recovers at start: events get 503 `starting` + Retry-After (none is
   * acknowledged before the engine has accepted this data directory and lake), and /readyz is 503.
   */
  starting?(): boolean;
  /** Resident memory (bytes) of the server's processes (ingest and the engine); default this process's RSS. */
  memoryBytes?(): number;
  /** The Prometheus text for GET /metrics, when not this process's registry alone (the engine runs in another process). */
  metrics?(): Promise<string>;
  /**
   * Erasure requests (the data directory's); with it, the admin routes and the suppression check
   * are on. `unsupported`: no engine runs them here — new requests get 501 with this reason.
   */
  erasures?: { store: ErasureStore; suppression: Suppression; unsupported?: string };
}

export interface IngestServer {
  /** The port listened on (resolved when options.port is 0). */
  readonly port: number;
  /**
   * Stops accepting (listen socket closed; requests on open connections get 503), waits for
   * in-flight requests and their appends/acks, then closes client connections. Does not close
   * the logs. Idempotent.
   */
  close(): Promise<void>;
}

type Protocol = 'segment' | 'ndjson' | 'arrow';

interface Reply {
  status: number;
  body: string;
  headers?: Record<string, string>;
  /** Close the connection after this reply (the rest of an unread body must not be parsed as a request). */
  close?: boolean;
}


/** uWS's `LIBUS_LISTEN_EXCLUSIVE_PORT` (a listen without SO_REUSEPORT), and the overload that takes it with a host (uWS.js ≥ 20; not in its typings). */
const LISTEN_EXCLUSIVE_PORT = 1;
type ListenExclusive = (host: string, port: number, options: number, cb: (listenSocket: uws.us_listen_socket | false) => void) => void;
/** Per HTTP request: whether uWS reported it aborted, and who to tell. */
interface RequestState {
  aborted: boolean;
  onAbort?: () => void;
}

const STATUS_TEXT: Record<number, string> = {
  200: '200 OK',
  204: '204 No Content',
  400: '400 Bad Request',
  401: '401 Unauthorized',
  404: '404 Not Found',
  408: '408 Request Timeout',
  413: '413 Payload Too Large',
  429: '429 Too Many Requests',
  500: '500 Internal Server Error',
  503: '503 Service Unavailable',
};

/** True when the native uWS addon loaded (the package silently falls back to a slow JS shim otherwise). */
export function uwsIsNative(): boolean {
  const m = uws as unknown as Record<string, unknown>;
  return typeof m.SSLApp === 'function' && typeof m.us_socket_local_port === 'function' && Object.keys(m).length > 10;
}

/** Bytes as whole MiB, for messages. */
const mib = (bytes: number): number => Math.round(bytes / 2 ** 20);

/** Retry-After (s) while the uncommitted log is past its bound: about a checkpoint away. */
const UNCOMMITTED_RETRY_AFTER_S = 2;

/** How long close() waits for in-flight requests (bodies still arriving, fsyncs) before dropping them. */
const CLOSE_WAIT_MS = 30_000;

/**
 * On every answer of the ingest routes (404 and 405 included): browser SDKs post cross-origin, and
 * a browser hides an answer without Allow-Origin (even a 404) behind "blocked by CORS"; a script
 * reads Retry-After and X-RateLimit-Reset of a cross-origin answer only when they are exposed.
 */
const CORS_HEADERS: Readonly<Record<string, string>> = { 'Access-Control-Allow-Origin': '*', 'Access-Control-Expose-Headers': 'Retry-After, X-RateLimit-Reset' };
const writeCors = (res: uws.HttpResponse): void => {
  for (const k in CORS_HEADERS) res.writeHeader(k, CORS_HEADERS[k]!);
};

/** Request headers a preflight allows when the browser names none Sluice can echo. */
const PREFLIGHT_HEADERS = 'Authorization, Content-Type, Content-Encoding';
/** A comma-separated list of HTTP header-name tokens (RFC 9110 tchar), as browsers send in Access-Control-Request-Headers. */
const HEADER_NAME_LIST = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:[ \t]*,[ \t]*[!#$%&'*+.^_`|~0-9A-Za-z-]+)*$/;
const MAX_REQUESTED_HEADERS_CHARS = 1024;
/** How long (s) a browser may cache a preflight's answer. */
const PREFLIGHT_MAX_AGE_S = 600;

/**
 * The Access-Control-Allow-Headers of a preflight: the request's Access-Control-Request-Headers
 * echoed (SDKs send their own headers: RudderStack's browser SDK an `AnonymousId`, which a fixed
 * list made Chromium refuse), when it is a plain, bounded list of header names; else the fixed list.
 */
export function preflightAllowHeaders(requested: string): string {
  return requested.length > 0 && requested.length <= MAX_REQUESTED_HEADERS_CHARS && HEADER_NAME_LIST.test(requested) ? requested : PREFLIGHT_HEADERS;
}

const fromRefusal = (r: Refusal): Reply => ({ status: r.status, body: JSON.stringify({ ok: false, code: r.code, message: r.message }), headers: r.headers });
const failure = (status: number, code: string, message: string, headers?: Record<string, string>): Reply => ({
  status,
  body: JSON.stringify({ ok: false, code, message }),
  headers,
});

/** Starts the server; resolves once it listens. Throws a user error when uWS is not native or options are invalid. */
export async function startIngestServer(input: IngestOptionsInput, deps: IngestDeps): Promise<IngestServer> {
  if (!uwsIsNative()) {
    throw userError(
      'uws_not_native',
      `uWebSockets.js did not load its native build for Node ${process.versions.node} (ABI ${process.versions.modules}); Sluice needs Node 20 (see package.json engines). Refusing to start on the slow JavaScript fallback.`,
    );
  }
  const options = validateIngestOptions(input);
  if (deps.logs.length === 0) throw userError('invalid_option', 'logs must hold at least one shard log');
  const log: Logger = options.logger ?? pino({ level: 'info' }, pino.destination(2));
  const keys = new Map<string, WriteKey>(options.writeKeys.map((k) => [k.key, k]));
  const buckets = new TokenBuckets(options.rateLimit.eventsPerSecond, options.rateLimit.burst);
  const appenders = deps.logs.map((l, s) => new ShardAppender(s, l, options.groupCommit, deps.onDurable));
  const deadLetters = new DeadLetterAppender(deps.dlqLog, options.groupCommit);
  const shards = deps.logs.length;
  const eventsBy = { segment: ingestMetrics.events.labels('segment'), ndjson: ingestMetrics.events.labels('ndjson'), arrow: ingestMetrics.events.labels('arrow') };
  const bytesBy = { segment: ingestMetrics.bytes.labels('segment'), ndjson: ingestMetrics.bytes.labels('ndjson'), arrow: ingestMetrics.bytes.labels('arrow') };
  let closing = false;
  let inFlight = 0;
  let idle: (() => void) | undefined;
  const begin = (): void => {
    inFlight++;
    ingestMetrics.inFlight.set(inFlight);
  };
  const end = (): void => {
    inFlight--;
    ingestMetrics.inFlight.set(inFlight);
    if (inFlight === 0) idle?.();
  };


  // Resident memory, sampled (a syscall per request would cost the ack thread).
  let memory = 0;
  const budget = new MemoryBudget(options.maxMemoryBytes);
  const sampleMemory = (): void => {
    memory = deps.memoryBytes?.() ?? anonymousResidentBytes();
    ingestMetrics.memoryBytes.set(memory);
    // Also here, not only per request: with no traffic the gauge kept its last loaded value.
    const backlog = deps.backlog?.() ?? 0;
    ingestMetrics.queueDepth.set(backlog);
    ingestMetrics.engineLag.set((deps.lagMs?.() ?? 0) / 1000);
    const u = deps.uncommitted?.();
    if (u !== undefined) {
      ingestMetrics.uncommittedBytes.set(u.bytes);
      ingestMetrics.uncommittedEvents.set(u.events);
    }
    // At rest: the engine holds nothing acknowledged (unknown without an engine attached).
    if (budget.observe(memory, u === undefined ? undefined : u.bytes === 0 && backlog === 0)) {
      log.warn(
        { code: 'memory_budget_too_small', memoryBytes: memory, budgetBytes: options.maxMemoryBytes, markBytes: budget.markBytes },
        `memory at rest (${mib(memory)} MiB) is above the budget (${mib(options.maxMemoryBytes)} MiB), and refusing events cannot lower it: admitting up to ${mib(budget.markBytes)} MiB; raise --max-memory`,
      );
    }
    ingestMetrics.memoryMarkBytes.set(budget.markBytes);
  };
  sampleMemory();
  const memoryTimer = setInterval(sampleMemory, 100);
  memoryTimer.unref();

  /** Why the server should refuse new work right now (engine backlog or lag, uncommitted log, unsynced log or memory past its mark), or undefined. */
  const pressure = (): { reason: 'backlog' | 'lag' | 'uncommitted' | 'log' | 'memory'; reply: Reply } | undefined => {
    const backlog = deps.backlog?.() ?? 0;
    ingestMetrics.queueDepth.set(backlog);
    const lag = deps.lagMs?.() ?? 0;
    const uncommitted = deps.uncommitted?.();
    let pending = deps.dlqLog.pendingBytes;
    for (const l of deps.logs) if (l.pendingBytes > pending) pending = l.pendingBytes;
    ingestMetrics.logPendingBytes.set(pending);
    if (backlog > options.maxBacklogEvents) {
      return { reason: 'backlog', reply: failure(503, 'overloaded', `Sluice is behind (${backlog} events not yet processed); retry later`, { 'Retry-After': '1' }) };
    }
    if (options.maxLagMs > 0 && lag > options.maxLagMs) {
      return { reason: 'lag', reply: failure(503, 'overloaded', `Sluice is behind (its engine is processing events acknowledged ${(lag / 1000).toFixed(1)} s ago, bound ${options.maxLagMs / 1000} s); retry later`, { 'Retry-After': '1' }) };
    }
    if (uncommitted !== undefined && options.maxBacklogBytes > 0 && uncommitted.bytes > options.maxBacklogBytes) {
      // The engine frees the log at its next checkpoint: retrying sooner only adds load.
      return {
        reason: 'uncommitted',
        reply: failure(503, 'overloaded', `Sluice is behind committing (${mib(uncommitted.bytes)} MiB of acknowledged events not yet committed, bound ${mib(options.maxBacklogBytes)} MiB); retry later`, {
          'Retry-After': String(UNCOMMITTED_RETRY_AFTER_S),
        }),
      };
    }
    if (pending > options.maxLogPendingBytes) {
      return { reason: 'log', reply: failure(503, 'overloaded', 'the event log is behind on fsync; retry later', { 'Retry-After': '1' }) };
    }
    if (budget.over(memory)) {
      return { reason: 'memory', reply: failure(503, 'overloaded', `Sluice is at its memory budget (${mib(memory)} of ${mib(budget.markBytes)} MiB); retry later`, { 'Retry-After': '1' }) };
    }
    return undefined;
  };
  /** While the engine recovers at start (deps.starting). */
  const starting = (): Reply | undefined =>
    deps.starting?.() ? failure(503, 'starting', 'Sluice is starting: its engine is recovering from its last checkpoint; retry', { 'Retry-After': '2' }) : undefined;
  /** {@link pressure} for a request: counts the refusal. */
  const overloaded = (): Reply | undefined => {
    const p = pressure();
    if (!p) return undefined;
    ingestMetrics.backpressure.inc({ reason: p.reason });
    return p.reply;
  };

  // One log line per distinct failure, not one per request while a log is down.
  let lastFailure = '';
  let repeats = 0;
  const logFailure = (err: unknown, what: string): void => {
    const key = `${what}: ${(err as Error)?.message ?? String(err)}`;
    if (key === lastFailure) {
      repeats++;
      return;
    }
    log.error({ err, repeatsOfPrevious: repeats }, what);
    lastFailure = key;
    repeats = 0;
  };

  const keyFromHeader = (header: string): string | undefined => {
    if (header.length > 6 && header.slice(0, 6).toLowerCase() === 'basic ') {
      const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      return colon >= 0 ? decoded.slice(0, colon) : decoded;
    }
    if (header.length > 7 && header.slice(0, 7).toLowerCase() === 'bearer ') return header.slice(7).trim();
    return undefined;
  };

  const authenticate = (header: string, bodyKey: unknown): WriteKey | Refusal => {
    const key = keyFromHeader(header) ?? (typeof bodyKey === 'string' ? bodyKey : undefined);
    if (key === undefined || key === '') {
      return refuse(401, 'missing_write_key', 'send the write key as the HTTP Basic user name, as a Bearer token, or as "writeKey" in the body');
    }
    return keys.get(key) ?? refuse(401, 'unknown_write_key', 'unknown write key; check the key configured in your SDK against the server’s write keys');
  };

  const admit = (key: WriteKey, events: number): Refusal | undefined => {
    if (events > options.maxBatchEvents) return refuse(413, 'too_many_events', `a request may hold at most ${options.maxBatchEvents} events, got ${events}; send smaller batches`);
    const wait = buckets.take(key.key, events, Date.now());
    if (wait === 0) return undefined;
    ingestMetrics.rateLimited.inc();
    const seconds = String(Math.ceil(wait / 1000));
    // X-RateLimit-Reset: what analytics-next's batching mode reads (seconds, parseInt × 1000).
    return refuse(429, 'rate_limited', `this write key is over its rate limit of ${options.rateLimit.eventsPerSecond} events/s; retry after Retry-After seconds`, {
      'Retry-After': seconds,
      'X-RateLimit-Reset': seconds,
    });
  };

  const admission = (header: string): Admission => ({ authenticate: (bodyKey) => authenticate(header, bodyKey), admit });

  const contextFor =
    (protocol: Protocol, receivedAt: number) =>
    (key: WriteKey): NormalizeContext => ({
      writeKey: key.key,
      source: key.source ?? protocol,
      fixedSource: key.source !== undefined,
      receivedAt,
      maxFutureSkewMs: options.maxFutureSkewMs,
      minEventTimeMs: options.minEventTimeMs,
      maxJsonDepth: options.maxJsonDepth,
      maxEventBytes: options.maxEventBytes,
      pii: options.pii,
    });

  /** Rejects → DLQ, rows → shard logs; resolves with the reply once everything is durable. */
  const commit = async (d: Decoded, protocol: Protocol, receivedAt: number): Promise<Reply> => {
    const erased = deps.erasures ? dropErased(d, deps.erasures.suppression) : [];
    if (erased.length > 0) ingestMetrics.rejected.inc({ code: ERASED_CODE }, erased.length);
    const byShard: IngestRow[][] = [];
    for (const row of d.rows) (byShard[shardOf(row.user_id, shards)] ??= []).push(row);
    const appends: Array<Promise<number[]>> = [];
    const touched: number[] = [];
    for (let s = 0; s < shards; s++) {
      const rows = byShard[s];
      if (rows === undefined) continue;
      touched.push(s);
      appends.push(appenders[s]!.add(rows));
    }
    let dlq: Promise<unknown> | undefined;
    if (d.rejects.length > 0) {
      for (const r of d.rejects) ingestMetrics.rejected.inc({ code: r.code });
      dlq = deadLetters.add(d.rejects, d.key.source ?? protocol, d.key.key, receivedAt);
    }
    try {
      const results = await Promise.all(appends);
      if (dlq) await dlq;
      eventsBy[protocol].inc(d.rows.length);
      dashboard?.tap(d.rows);
      let offsets = '';
      for (let i = 0; i < results.length; i++) {
        for (const o of results[i]!) offsets += `${offsets === '' ? '' : ','}{"shard":${touched[i]},"offset":${o}}`;
      }
      const rejected = d.rejects.length + erased.length === 0 ? '[]' : JSON.stringify([...d.rejects.map(({ index, code, message }) => ({ index, code, message })), ...erased].sort((a, b) => a.index - b.index));
      return { status: 200, body: `{"ok":true,"accepted":${d.rows.length},"rejected":${rejected},"offsets":[${offsets}]}` };
    } catch (err) {
      // Settle the rest before answering, so nothing of this request is still pending afterwards.
      await Promise.allSettled([...appends, ...(dlq ? [dlq] : [])]);
      logFailure(err, 'durable append failed; nothing of this request was acknowledged');
      return failure(503, 'log_unavailable', 'the event log could not be written; nothing was acknowledged, retry later', { 'Retry-After': '1' });
    }
  };

  const send = (res: uws.HttpResponse, reply: Reply, state: RequestState, protocol: string, started: number): void => {
    ingestMetrics.requests.inc({ protocol, status: String(reply.status) });
    ingestMetrics.ackSeconds.observe((performance.now() - started) / 1000);
    if (state.aborted) return;
    res.cork(() => {
      res.writeStatus(STATUS_TEXT[reply.status] ?? String(reply.status));
      res.writeHeader('Content-Type', 'application/json');
      writeCors(res);
      if (reply.headers) for (const k in reply.headers) res.writeHeader(k, reply.headers[k]!);
      res.end(reply.body, reply.close === true);
    });
  };

  /**
   * Reads the whole body: resolves the bytes, 'too_large' as soon as it passes maxBodyBytes,
   * 'aborted' when the client goes away, 'timeout' when it has not arrived within
   * bodyTimeoutMs. Every outcome resolves, so the request's in-flight slot is always released.
   */
  const readBody = (res: uws.HttpResponse, declared: number, state: RequestState): Promise<Buffer | 'too_large' | 'aborted' | 'timeout'> =>
    new Promise((resolve) => {
      const max = options.maxBodyBytes;
      let buf = declared > 0 && declared <= max ? Buffer.allocUnsafe(declared) : undefined;
      let chunks: Buffer[] | undefined;
      let size = 0;
      let done = false;
      const finish = (outcome: Buffer | 'too_large' | 'aborted' | 'timeout'): void => {
        done = true;
        clearTimeout(timer);
        state.onAbort = undefined;
        resolve(outcome);
      };
      const timer = setTimeout(() => {
        if (!done) finish('timeout');
      }, options.bodyTimeoutMs);
      state.onAbort = () => {
        if (!done) finish('aborted');
      };
      res.onData((chunk, isLast) => {
        if (done) return;
        const n = chunk.byteLength;
        if (size + n > max) {
          finish('too_large');
          return;
        }
        if (buf !== undefined && size + n <= buf.length) buf.set(new Uint8Array(chunk), size);
        else {
          if (buf !== undefined) {
            chunks = [buf.subarray(0, size)];
            buf = undefined;
          }
          (chunks ??= []).push(Buffer.from(new Uint8Array(chunk).slice()));
        }
        size += n;
        if (isLast) finish(buf !== undefined ? buf.subarray(0, size) : Buffer.concat(chunks ?? [], size));
      });
    });

  const tooLarge = (): Reply => ({ ...failure(413, 'body_too_large', `request bodies are limited to ${options.maxBodyBytes} bytes; send smaller batches`), close: true });

  const decodeHttp = async (res: uws.HttpResponse, protocol: 'segment' | 'ndjson', call: string | undefined, auth: string, encoding: string, declared: number, receivedAt: number, state: RequestState): Promise<Reply> => {
    if (declared > options.maxBodyBytes) return tooLarge();
    const raw = await readBody(res, declared, state);
    if (raw === 'too_large') return tooLarge();
    if (raw === 'aborted') {
      ingestMetrics.aborted.inc();
      return failure(499, 'client_closed', 'the client closed the connection before its body arrived');
    }
    if (raw === 'timeout') {
      ingestMetrics.bodyTimeouts.inc();
      return { ...failure(408, 'body_timeout', `the request body did not arrive within ${options.bodyTimeoutMs} ms; resend it`), close: true };
    }
    bytesBy[protocol].inc(raw.byteLength);
    let body = raw;
    if (encoding === 'gzip' || (raw.length > 2 && raw[0] === 0x1f && raw[1] === 0x8b)) {
      try {
        body = gunzipSync(raw, { maxOutputLength: options.maxBodyBytes });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE' || err instanceof RangeError) {
          return failure(413, 'body_too_large', `request bodies are limited to ${options.maxBodyBytes} bytes after gunzip; send smaller batches`);
        }
        return failure(400, 'malformed_gzip', 'the body is not valid gzip');
      }
    } else if (encoding !== '' && encoding !== 'identity') return failure(400, 'unsupported_encoding', `Content-Encoding "${encoding}" is not supported; send gzip or nothing`);
    // A UTF-8 byte order mark (Windows tools write one) is not part of the JSON: skipped, as JSON parsers of other stacks do.
    if (body.length >= 3 && body[0] === 0xef && body[1] === 0xbb && body[2] === 0xbf) body = body.subarray(3);
    const admissionForReq = admission(auth);
    const ctx = contextFor(protocol, receivedAt);
    const decoded = protocol === 'ndjson' ? decodeNdjson(body, admissionForReq, ctx) : decodeSegment(body, call, admissionForReq, ctx);
    if (decoded.kind === 'refused') return fromRefusal(decoded);
    const reply = await commit(decoded, protocol, receivedAt);
    return call === undefined ? reply : (rejectedSingleCall(decoded, reply) ?? reply);
  };

  /**
   * A single call whose one event was rejected: 400 with the reject's code and message, as Segment
   * answers (a 200 made SDKs report the event delivered); it is dead-lettered all the same. A batch
   * answers 200 with per-event rejects. Undefined when the reply stands as it is.
   */
  const rejectedSingleCall = (d: Decoded, reply: Reply): Reply | undefined => {
    if (reply.status !== 200 || d.rows.length !== 0 || d.rejects.length !== 1) return undefined;
    const { index, code, message } = d.rejects[0]!;
    return { status: 400, body: JSON.stringify({ ok: false, code, message, accepted: 0, rejected: [{ index, code, message }] }) };
  };

  const httpIngest =
    (protocol: 'segment' | 'ndjson', call: string | undefined) =>
    (res: uws.HttpResponse, req: uws.HttpRequest): void => {
      const started = performance.now();
      const receivedAt = Date.now();
      const state: RequestState = { aborted: false };
      res.onAborted(() => {
        state.aborted = true;
        state.onAbort?.();
      });
      const refused = closing ? failure(503, 'shutting_down', 'Sluice is shutting down; retry', { 'Retry-After': '1' }) : (starting() ?? overloaded());
      if (refused) {
        // uWS needs the body consumed (or the response ended) — end right away, ignore the rest.
        res.onData(() => undefined);
        send(res, refused, state, protocol, started);
        return;
      }
      const auth = req.getHeader('authorization');
      const encoding = req.getHeader('content-encoding').toLowerCase();
      const lengthHeader = req.getHeader('content-length');
      const declared = lengthHeader === '' ? -1 : Number(lengthHeader);
      begin();
      decodeHttp(res, protocol, call, auth, encoding, declared, receivedAt, state)
        .catch((err: unknown) => {
          logFailure(err, 'ingest request failed');
          return failure(500, 'internal', 'internal error; nothing was acknowledged');
        })
        .then((reply) => {
          send(res, reply, state, protocol, started);
          end();
        });
    };

  const getJson =
    (produce: () => Reply) =>
    (res: uws.HttpResponse): void => {
      const reply = produce();
      res.cork(() => {
        res.writeStatus(STATUS_TEXT[reply.status] ?? String(reply.status));
        res.writeHeader('Content-Type', 'application/json');
        // Retry-After of /readyz and /v1/live (it was dropped here).
        for (const [k, v] of Object.entries(reply.headers ?? {})) res.writeHeader(k, v);
        res.end(reply.body);
      });
    };

  const app = uws.App();
  const ingestPaths: string[] = [];
  const ingestRoute = (path: string, handler: (res: uws.HttpResponse, req: uws.HttpRequest) => void): void => {
    app.post(path, handler);
    ingestPaths.push(path);
  };
  ingestRoute('/v1/batch', httpIngest('segment', undefined));
  ingestRoute(`/v1/${SEGMENT_BROWSER_BATCH_PATH}`, httpIngest('segment', undefined));
  ingestRoute('/v1/import', httpIngest('segment', undefined));
  for (const call of SEGMENT_CALLS) {
    ingestRoute(`/v1/${call}`, httpIngest('segment', call));
    ingestRoute(`/v1/${SEGMENT_BROWSER_PATHS[call]}`, httpIngest('segment', call));
  }
  ingestRoute('/v1/events', httpIngest('ndjson', undefined));
  // The ingest endpoints with another method: 405 naming the one they take, not "no such endpoint".
  for (const path of ingestPaths) {
    for (const method of ['get', 'put', 'patch', 'del'] as const) {
      app[method](path, (res) => {
        res.cork(() => {
          res.writeStatus('405 Method Not Allowed');
          res.writeHeader('Allow', 'POST, OPTIONS');
          res.writeHeader('Content-Type', 'application/json');
          writeCors(res);
          res.end(`{"ok":false,"code":"method_not_allowed","message":"${path} takes POST"}`);
        });
      });
    }
  }
  app.options('/*', (res, req) => {
    const allowHeaders = preflightAllowHeaders(req.getHeader('access-control-request-headers'));
    res.cork(() => {
      res.writeStatus('204 No Content');
      res.writeHeader('Access-Control-Allow-Origin', '*');
      res.writeHeader('Access-Control-Allow-Methods', 'POST, GET, OPTIONS');
      res.writeHeader('Access-Control-Allow-Headers', allowHeaders);
      res.writeHeader('Access-Control-Max-Age', String(PREFLIGHT_MAX_AGE_S));
      res.writeHeader('Vary', 'Access-Control-Request-Headers');
      res.end();
    });
  });
  app.get('/healthz', getJson(() => ({ status: 200, body: '{"ok":true}' })));
  app.get(
    '/readyz',
    getJson(() => {
      if (closing) return failure(503, 'not_ready', 'shutting down');
      // What the engine's start is at (recovering, or waiting for the object store), as it reported it.
      if (deps.starting?.()) return failure(503, 'not_ready', `starting: ${readiness.reasons().join('; ') || 'the engine is recovering from its last checkpoint'}`, { 'Retry-After': '2' });
      // Conditions the engine reported (failing checkpoint, stopped shard, log on a full disk), each named.
      const reasons = readiness.reasons();
      if (reasons.length > 0) return { status: 503, body: JSON.stringify({ ok: false, code: 'not_ready', message: reasons.join('; '), reasons }), headers: { 'Retry-After': '5' } };
      if (!(deps.ready?.() ?? true)) return failure(503, 'not_ready', 'the engine is not ready');
      return pressure()?.reply ?? { status: 200, body: '{"ok":true}' };
    }),
  );
  app.get(
    '/v1/live',
    getJson(() => {
      if (!deps.live) return failure(404, 'not_found', 'this server has no live view (ingest only)');
      // Nothing to show before the engine has recovered (it answered an empty object).
      const reply = starting();
      if (reply !== undefined) return reply;
      // The engine has no figures to report: recovered but not reported yet (it answered `{}`), or down and restarting (it answered the dead one's).
      const live = deps.live();
      return live === undefined ? failure(503, 'starting', 'the engine is starting or restarting and has not reported live figures yet; retry', { 'Retry-After': '1' }) : { status: 200, body: JSON.stringify(live) };
    }),
  );
  app.get('/metrics', (res) => {
    const state = { aborted: false };
    res.onAborted(() => {
      state.aborted = true;
    });
    // The gauges as of this scrape, not of the last 100 ms sample.
    sampleMemory();
    void (deps.metrics?.() ?? register.metrics()).then(
      (text) => {
        if (state.aborted) return;
        res.cork(() => {
          res.writeHeader('Content-Type', register.contentType);
          res.end(text);
        });
      },
      (err: unknown) => {
        log.error({ err }, 'metrics collection failed');
        if (!state.aborted) res.cork(() => res.writeStatus('500 Internal Server Error').end(String(err)));
      },
    );
  });

  interface WsData {
    key: WriteKey;
    seq: number;
  }
  const sockets = new Set<uws.WebSocket<WsData>>();
  app.ws<WsData>('/v1/stream', {
    maxPayloadLength: options.wsMaxPayloadBytes,
    // A client that stops reading its acks is cut off rather than buffered without bound.
    maxBackpressure: 16 * 1024 * 1024,
    closeOnBackpressureLimit: 1,
    idleTimeout: 120,
    upgrade: (res, req, context) => {
      const header = req.getHeader('authorization');
      const queryKey = req.getQuery('writeKey');
      const key = authenticate(header, queryKey === undefined || queryKey === '' ? undefined : decodeURIComponent(queryKey));
      const secKey = req.getHeader('sec-websocket-key');
      const protocol = req.getHeader('sec-websocket-protocol');
      const extensions = req.getHeader('sec-websocket-extensions');
      if ('kind' in key) {
        res.cork(() => {
          res.writeStatus(STATUS_TEXT[key.status]!);
          res.writeHeader('Content-Type', 'application/json');
          res.end(fromRefusal(key).body);
        });
        return;
      }
      res.upgrade<WsData>({ key, seq: 0 }, secKey, protocol, extensions, context);
    },
    open: (ws) => {
      sockets.add(ws);
    },
    close: (ws) => {
      sockets.delete(ws);
    },
    message: (ws, message, isBinary) => {
      const data = ws.getUserData();
      if (!isBinary) {
        const control = parseControl(Buffer.from(message).toString('utf8'));
        if (control) data.seq = control.seq;
        // Not an answer to a binary message: `seq` null, so a client matching acks by seq never takes it for the next batch's.
        else ws.send(JSON.stringify({ seq: null, ok: false, status: 400, code: 'bad_control', message: 'text messages must be {"seq":N}; send Arrow IPC streams as binary messages' }));
        return;
      }
      const seq = data.seq++;
      const started = performance.now();
      const receivedAt = Date.now();
      const ack = (reply: Reply): void => {
        ingestMetrics.requests.inc({ protocol: 'arrow', status: String(reply.status) });
        ingestMetrics.ackSeconds.observe((performance.now() - started) / 1000);
        if (!sockets.has(ws)) return; // closed before the ack: the client resends; dedup absorbs repeats
        let text: string;
        if (reply.status === 200) text = `{"seq":${seq},${reply.body.slice(1)}`;
        else {
          const retry = reply.headers?.['Retry-After'];
          text = `{"seq":${seq},"status":${reply.status},${retry ? `"retryAfter":${retry},` : ''}${reply.body.slice(1)}`;
        }
        ws.send(text);
      };
      const refused = closing ? failure(503, 'shutting_down', 'Sluice is shutting down; resend on a new connection', { 'Retry-After': '1' }) : (starting() ?? overloaded());
      if (refused) {
        ack(refused);
        return;
      }
      // The message buffer is only valid during this callback: copy it.
      const bytes = new Uint8Array(message.byteLength);
      bytes.set(new Uint8Array(message));
      bytesBy.arrow.inc(bytes.byteLength);
      begin();
      Promise.resolve()
        .then(() => {
          const decoded = decodeArrowMessage(bytes, data.key, { authenticate: () => data.key, admit }, contextFor('arrow', receivedAt), options.maxBatchEvents);
          return decoded.kind === 'refused' ? fromRefusal(decoded) : commit(decoded, 'arrow', receivedAt);
        })
        .catch((err: unknown) => {
          logFailure(err, 'arrow batch failed');
          return failure(500, 'internal', 'internal error; nothing was acknowledged');
        })
        .then((reply) => {
          ack(reply);
          end();
        });
    },
  });
  const dashboard = mountDashboard(app, options, { live: deps.live, log });
  if (deps.erasures) {
    mountAdmin(app, {
      adminKeys: options.adminKeys,
      isOtherKey: (k) => keys.has(k) || options.dashboard.readKeys.includes(k),
      ...deps.erasures,
      shards,
      marks: async (touched) => {
        for (const s of touched) await appenders[s]!.drain();
        await deadLetters.drain();
        return { shards: Object.fromEntries(touched.map((s) => [String(s), deps.logs[s]!.nextOffset - 1])), dlq: deps.dlqLog.nextOffset - 1 };
      },
    });
  }
  app.any('/*', (res) => {
    res.cork(() => {
      res.writeStatus('404 Not Found');
      res.writeHeader('Content-Type', 'application/json');
      writeCors(res);
      res.end('{"ok":false,"code":"not_found","message":"no such endpoint; see /v1/batch, /v1/events, /v1/stream"}');
    });
  });

  const token = await new Promise<uws.us_listen_socket>((resolve, reject) => {
    // Exclusively: by default uWS sets SO_REUSEPORT, so a second Sluice on a port in use started
    // "listening" and the kernel split the connections between the two servers (and lakes).
    (app.listen as unknown as ListenExclusive)(options.host, options.port, LISTEN_EXCLUSIVE_PORT, (t) =>
      t ? resolve(t) : reject(userError('listen_failed', `cannot listen on ${options.host}:${options.port}: the port is in use, or ${options.host} is not an address of this machine; pick another with --port or --host`)),
    );
  });
  const port = uws.us_socket_local_port(token);
  log.info({ host: options.host, port, shards, groupCommit: options.groupCommit }, 'ingest listening');

  let closed: Promise<void> | undefined;
  return {
    port,
    close: () =>
      (closed ??= (async () => {
        closing = true;
        clearInterval(memoryTimer);
        uws.us_listen_socket_close(token);
        if (inFlight > 0) {
          // A client stalled mid-body must not hold shutdown forever: what was acknowledged is
          // durable already; unfinished requests were never acknowledged.
          let timer: NodeJS.Timeout | undefined;
          const drained = await Promise.race([
            new Promise<boolean>((resolve) => (idle = () => resolve(true))),
            new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), CLOSE_WAIT_MS))),
          ]);
          clearTimeout(timer);
          if (!drained) log.warn({ inFlight }, `ingest close: ${inFlight} requests still unfinished after ${CLOSE_WAIT_MS} ms; closing their connections`);
        }
        await Promise.all([...appenders.map((a) => a.drain()), deadLetters.drain()]);
        // Let the last acks leave the socket buffers before dropping idle keep-alive connections.
        await new Promise((r) => setTimeout(r, 20));
        dashboard?.close();
        for (const ws of [...sockets]) ws.end(1001, 'server shutting down');
        (app as unknown as { close?: () => void }).close?.();
        log.info({ port }, 'ingest closed');
      })()),
  };
}
