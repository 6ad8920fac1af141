/**
 * The ingest server on uWebSockets.js: Segment-compatible HTTP, NDJSON and Arrow over WebSocket.
 *
 *   request ─▶ route ─▶ overload? 503 ─▶ body (≤ maxBodyBytes, gunzip) ─▶ auth (header or body
 *   writeKey) 401 ─▶ parse 400 ─▶ rate limit 429 ─▶ validate + normalize per event
 *   ─▶ rejects → DLQ log (awaited) ─▶ accepted → ShardAppender per shard (group commit, fsync)
 *   ─▶ 200 {"ok":true,"accepted":N,"rejected":[…],"offsets":[…]}  — only after every fsync.
 *
 * An append or DLQ failure answers 503 (retry): nothing in that request was acknowledged.
 */
import { gunzipSync } from 'node:zlib';
import uws from 'uWebSockets.js';
import { makeBuilder, makeData, RecordBatch, Struct, Table, tableFromIPC, tableToIPC } from 'apache-arrow';
import { pino, type Logger } from 'pino';
import { register } from 'prom-client';
import { internalError, userError } from '../common/errors.js';
import { shardOfUser } from '../common/hash.js';
import { dlqSchema } from '../common/schema.js';
import type { ShardLog } from './log/log.js';
import { ingestMetrics } from './metrics.js';
import { mergeContext, normalizeCanonical, normalizeSegment, type CanonicalEvent, type NormalizeContext, type Rejection } from './normalize.js';
import { validateIngestOptions, type IngestOptions, type WriteKey } from './options.js';
import { ShardAppender } from './shard-appender.js';
import { TokenBuckets } from './rate-limit.js';

export interface IngestDeps {
  /** One log per shard; shard count = logs.length; shard = murmur3(utf8(user_id)) mod shards. */
  logs: readonly ShardLog[];
  /** Dead letters: one Arrow IPC stream of a dlqSchema batch per request with rejects, awaited before answering. */
  dlqLog: ShardLog;
  /** Called after a shard record is durable and before the acks; ownership of `payload` passes to the callee. */
  onDurable?(shard: number, offset: number, payload: Uint8Array, rows: number): void;
  /** Events acknowledged but not yet processed downstream; above options.maxBacklogEvents → 503. */
  backlog?(): number;
  /** JSON body for GET /v1/live; 404 when absent. */
  live?(): unknown;
  /** Extra readiness condition for /readyz. */
  ready?(): boolean;
}

export interface IngestServer {
  readonly port: number;
  /** Stops accepting (listen socket closed, new requests 503), waits for in-flight acks. */
  close(): Promise<void>;
}

type Protocol = 'segment' | 'ndjson' | 'arrow';

interface Reply {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

const STATUS_TEXT: Record<number, string> = {
  200: '200 OK',
  204: '204 No Content',
  400: '400 Bad Request',
  401: '401 Unauthorized',
  404: '404 Not Found',
  405: '405 Method Not Allowed',
  413: '413 Payload Too Large',
  429: '429 Too Many Requests',
  500: '500 Internal Server Error',
  503: '503 Service Unavailable',
};

const SEGMENT_CALLS = ['track', 'screen', 'page', 'identify', 'alias', 'group'] as const;

/** True when the native uWS addon loaded (the package silently falls back to a slow JS shim otherwise). */
export function uwsIsNative(): boolean {
  return typeof (uws as unknown as Record<string, unknown>).SSLApp === 'function';
}

function fail(status: number, code: string, message: string, headers?: Record<string, string>): Reply {
  return { status, body: { ok: false, code, message }, headers };
}

export async function startIngestServer(input: Partial<IngestOptions>, deps: IngestDeps): Promise<IngestServer> {
  if (!uwsIsNative()) {
    throw userError(
      'uws_not_native',
      `uWebSockets.js did not load its native build for Node ${process.versions.node} (ABI ${process.versions.modules}); Sluice needs Node 20 (see package.json engines). Refusing to start on the slow fallback.`,
    );
  }
  const options = validateIngestOptions(input);
  if (deps.logs.length === 0) throw userError('invalid_option', 'logs must hold at least one shard log');
  const log: Logger = options.logger ?? pino({ level: 'info' }, pino.destination(2));
  const keys = new Map<string, WriteKey>(options.writeKeys.map((k) => [k.key, k]));
  const buckets = new TokenBuckets(options.rateLimit.eventsPerSecond, options.rateLimit.burst);
  const appenders = deps.logs.map((l, s) => new ShardAppender(s, l, options.groupCommitMaxRows, deps.onDurable));
  const shards = deps.logs.length;
  let closing = false;
  let inFlight = 0;
  ingestMetrics.queueDepth.reset();

  const overloaded = (): Reply | undefined => {
    const backlog = deps.backlog?.() ?? 0;
    ingestMetrics.queueDepth.set(backlog);
    const logPending = Math.max(deps.dlqLog.pendingBytes, ...deps.logs.map((l) => l.pendingBytes));
    if (backlog > options.maxBacklogEvents || logPending > options.maxLogPendingBytes) {
      ingestMetrics.backpressure.inc();
      return fail(503, 'overloaded', `Sluice is behind (backlog ${backlog} events); retry later`, { 'Retry-After': '1' });
    }
    return undefined;
  };

  const authenticate = (header: string, bodyKey: unknown): WriteKey | Reply => {
    let key: string | undefined;
    if (header.startsWith('Basic ')) {
      const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
      key = decoded.includes(':') ? decoded.slice(0, decoded.indexOf(':')) : decoded;
    } else if (header.startsWith('Bearer ')) key = header.slice(7).trim();
    else if (typeof bodyKey === 'string') key = bodyKey;
    if (key === undefined || key === '') return fail(401, 'missing_write_key', 'send the write key as HTTP Basic user name, as a Bearer token, or as "writeKey" in the body');
    const found = keys.get(key);
    return found ?? fail(401, 'unknown_write_key', 'unknown write key');
  };

  const deadLetter = async (rejects: Array<Rejection & { raw: string }>, source: string, writeKey: string, receivedAt: number): Promise<void> => {
    if (rejects.length === 0) return;
    for (const r of rejects) ingestMetrics.rejected.inc({ code: r.code });
    const columns: Record<string, unknown[]> = {
      received_at: rejects.map(() => receivedAt),
      source: rejects.map(() => source),
      write_key_id: rejects.map(() => writeKey.slice(0, 6)),
      code: rejects.map((r) => r.code),
      message: rejects.map((r) => r.message),
      raw: rejects.map((r) => r.raw),
    };
    const children = dlqSchema.fields.map((f) => {
      const b = makeBuilder({ type: f.type, nullValues: [null, undefined] });
      for (const v of columns[f.name]!) b.append(v as never);
      return b.finish().flush();
    });
    const batch = new RecordBatch(dlqSchema, makeData({ type: new Struct(dlqSchema.fields), length: rejects.length, nullCount: 0, children }));
    await deps.dlqLog.append(tableToIPC(new Table([batch]), 'stream'));
  };

  /** Validated events → DLQ + shard logs; resolves when all are durable. */
  const commit = async (
    events: CanonicalEvent[],
    rejects: Array<Rejection & { raw: string }>,
    key: WriteKey,
    protocol: Protocol,
    receivedAt: number,
  ): Promise<Reply> => {
    const byShard = new Map<number, CanonicalEvent[]>();
    for (const e of events) {
      const s = shardOfUser(e.user_id, shards);
      let list = byShard.get(s);
      if (!list) byShard.set(s, (list = []));
      list.push(e);
    }
    try {
      const [offsets] = await Promise.all([
        Promise.all([...byShard].map(async ([shard, list]) => (await appenders[shard]!.add(list)).map((offset) => ({ shard, offset })))),
        deadLetter(rejects, key.source ?? protocol, key.key, receivedAt),
      ]);
      ingestMetrics.events.inc({ protocol }, events.length);
      return {
        status: 200,
        body: { ok: true, accepted: events.length, rejected: rejects.map(({ index, code, message }) => ({ index, code, message })), offsets: offsets.flat() },
      };
    } catch (err) {
      log.error({ err }, 'durable append failed; nothing of this request was acknowledged');
      return fail(503, 'log_unavailable', 'the event log could not be written; nothing was stored, retry', { 'Retry-After': '1' });
    }
  };

  const context = (key: WriteKey, protocol: Protocol, receivedAt: number): NormalizeContext => ({
    writeKey: key.key,
    source: key.source ?? protocol,
    receivedAt,
    maxFutureSkewMs: options.maxFutureSkewMs,
    maxEventBytes: options.maxEventBytes,
    pii: options.pii,
  });

  const rateLimited = (key: WriteKey, n: number): Reply | undefined => {
    const wait = buckets.take(key.key, n, Date.now());
    if (wait === 0) return undefined;
    ingestMetrics.rateLimited.inc();
    return fail(429, 'rate_limited', `write key is over its rate limit of ${options.rateLimit.eventsPerSecond} events/s`, { 'Retry-After': String(Math.ceil(wait / 1000)) });
  };

  const handleSegment = async (call: string | undefined, body: unknown, authHeader: string, receivedAt: number): Promise<Reply> => {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) return fail(400, 'malformed_body', 'the body must be a JSON object');
    const b = body as Record<string, unknown>;
    const key = authenticate(authHeader, b.writeKey);
    if ('status' in key) return key;
    let items: unknown[];
    if (call === undefined) {
      if (!Array.isArray(b.batch)) return fail(400, 'malformed_body', 'a batch body needs a "batch" array');
      items = b.batch.map((item) => mergeContext(item, b.context));
    } else items = [b];
    if (items.length > options.maxBatchEvents) return fail(413, 'too_many_events', `a batch may hold at most ${options.maxBatchEvents} events, got ${items.length}`);
    const limited = rateLimited(key, items.length);
    if (limited) return limited;
    const ctx = context(key, 'segment', receivedAt);
    const events: CanonicalEvent[] = [];
    const rejects: Array<Rejection & { raw: string }> = [];
    items.forEach((item, index) => {
      const r = normalizeSegment(item, call, b.sentAt, ctx);
      if (r.ok) events.push(r.event);
      else rejects.push({ index, code: r.code, message: r.message, raw: r.raw });
    });
    return commit(events, rejects, key, 'segment', receivedAt);
  };

  const handleNdjson = async (text: string, authHeader: string, receivedAt: number): Promise<Reply> => {
    const key = authenticate(authHeader, undefined);
    if ('status' in key) return key;
    const lines = text.split('\n').filter((l) => l.trim() !== '');
    if (lines.length > options.maxBatchEvents) return fail(413, 'too_many_events', `a request may hold at most ${options.maxBatchEvents} events, got ${lines.length}`);
    const limited = rateLimited(key, lines.length);
    if (limited) return limited;
    const ctx = context(key, 'ndjson', receivedAt);
    const events: CanonicalEvent[] = [];
    const rejects: Array<Rejection & { raw: string }> = [];
    lines.forEach((line, index) => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        rejects.push({ index, code: 'invalid_field', message: 'line is not valid JSON', raw: line.slice(0, 4096) });
        return;
      }
      const r = normalizeCanonical(parsed, ctx, line);
      if (r.ok) events.push(r.event);
      else rejects.push({ index, code: r.code, message: r.message, raw: r.raw });
    });
    return commit(events, rejects, key, 'ndjson', receivedAt);
  };

  const handleArrow = async (bytes: Uint8Array, key: WriteKey, receivedAt: number): Promise<Reply> => {
    let table: Table;
    try {
      table = tableFromIPC(bytes);
    } catch (err) {
      return fail(400, 'malformed_arrow', `the message is not an Arrow IPC stream: ${(err as Error).message}`);
    }
    const limited = rateLimited(key, table.numRows);
    if (limited) return limited;
    const ctx = context(key, 'arrow', receivedAt);
    const events: CanonicalEvent[] = [];
    const rejects: Array<Rejection & { raw: string }> = [];
    const names = table.schema.fields.map((f) => f.name);
    const cols = names.map((n) => table.getChild(n)!);
    for (let i = 0; i < table.numRows; i++) {
      const row: Record<string, unknown> = {};
      for (let c = 0; c < names.length; c++) {
        const v = cols[c]!.get(i);
        row[names[c]!] = typeof v === 'bigint' ? Number(v) : v;
      }
      const raw = typeof row.raw === 'string' ? row.raw : undefined;
      delete row.raw;
      const r = normalizeCanonical(row, ctx, raw);
      if (r.ok) events.push(r.event);
      else rejects.push({ index: i, code: r.code, message: r.message, raw: r.raw });
    }
    return commit(events, rejects, key, 'arrow', receivedAt);
  };

  const send = (res: uws.HttpResponse, reply: Reply, state: { aborted: boolean }, protocol: string, started: number): void => {
    ingestMetrics.requests.inc({ protocol, status: String(reply.status) });
    ingestMetrics.ackSeconds.observe((performance.now() - started) / 1000);
    if (state.aborted) return;
    res.cork(() => {
      res.writeStatus(STATUS_TEXT[reply.status] ?? `${reply.status}`);
      res.writeHeader('Content-Type', 'application/json');
      res.writeHeader('Access-Control-Allow-Origin', '*');
      for (const [k, v] of Object.entries(reply.headers ?? {})) res.writeHeader(k, v);
      res.end(JSON.stringify(reply.body));
    });
  };

  /** Reads the whole body (≤ maxBodyBytes), or answers 413 and resolves undefined. */
  const readBody = (res: uws.HttpResponse, state: { aborted: boolean; tooLarge: boolean }): Promise<Buffer | undefined> =>
    new Promise((resolve) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.onData((chunk, isLast) => {
        if (state.tooLarge) return;
        size += chunk.byteLength;
        if (size > options.maxBodyBytes) {
          state.tooLarge = true;
          resolve(undefined);
          return;
        }
        chunks.push(Buffer.from(new Uint8Array(chunk).slice()));
        if (isLast) resolve(Buffer.concat(chunks, size));
      });
    });

  const httpIngest = (protocol: 'segment' | 'ndjson', call: string | undefined) => (res: uws.HttpResponse, req: uws.HttpRequest): void => {
    const started = performance.now();
    const receivedAt = Date.now();
    const authHeader = req.getHeader('authorization');
    const encoding = req.getHeader('content-encoding').toLowerCase();
    const state = { aborted: false, tooLarge: false };
    res.onAborted(() => {
      state.aborted = true;
    });
    if (closing) {
      // Drain the body so uWS can answer, then refuse.
      res.onData(() => undefined);
      send(res, fail(503, 'shutting_down', 'Sluice is shutting down; retry', { 'Retry-After': '1' }), state, protocol, started);
      return;
    }
    const busy = overloaded();
    if (busy) {
      res.onData(() => undefined);
      send(res, busy, state, protocol, started);
      return;
    }
    inFlight++;
    void (async (): Promise<Reply> => {
      const raw = await readBody(res, state);
      if (!raw) return fail(413, 'body_too_large', `request bodies are limited to ${options.maxBodyBytes} bytes`);
      ingestMetrics.bytes.inc({ protocol }, raw.byteLength);
      let body: Buffer = raw;
      if (encoding === 'gzip' || (raw.length > 2 && raw[0] === 0x1f && raw[1] === 0x8b)) {
        try {
          body = gunzipSync(raw, { maxOutputLength: options.maxBodyBytes });
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE' || err instanceof RangeError) {
            return fail(413, 'body_too_large', `request bodies are limited to ${options.maxBodyBytes} bytes after gunzip`);
          }
          return fail(400, 'malformed_gzip', 'the body is not valid gzip');
        }
      }
      const text = body.toString('utf8');
      if (protocol === 'ndjson') return handleNdjson(text, authHeader, receivedAt);
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        return fail(400, 'malformed_json', 'the body is not valid JSON');
      }
      return handleSegment(call, parsed, authHeader, receivedAt);
    })()
      .catch((err: unknown) => {
        log.error({ err }, 'ingest request failed');
        return fail(500, 'internal', 'internal error; nothing was acknowledged');
      })
      .then((reply) => {
        inFlight--;
        send(res, reply, state, protocol, started);
      });
  };

  const getJson = (produce: () => Reply) => (res: uws.HttpResponse): void => {
    const reply = produce();
    res.cork(() => {
      res.writeStatus(STATUS_TEXT[reply.status] ?? `${reply.status}`);
      res.writeHeader('Content-Type', 'application/json');
      res.end(JSON.stringify(reply.body));
    });
  };

  const app = uws.App();
  app.post('/v1/batch', httpIngest('segment', undefined));
  app.post('/v1/import', httpIngest('segment', undefined));
  for (const call of SEGMENT_CALLS) app.post(`/v1/${call}`, httpIngest('segment', call));
  app.post('/v1/events', httpIngest('ndjson', undefined));
  app.options('/*', (res) => {
    res.cork(() => {
      res.writeStatus('204 No Content');
      res.writeHeader('Access-Control-Allow-Origin', '*');
      res.writeHeader('Access-Control-Allow-Methods', 'POST, GET, OPTIONS');
      res.writeHeader('Access-Control-Allow-Headers', 'Authorization, Content-Type, Content-Encoding');
      res.end();
    });
  });
  app.get('/healthz', getJson(() => ({ status: 200, body: { ok: true } })));
  app.get(
    '/readyz',
    getJson(() => {
      const ready = !closing && (deps.ready?.() ?? true);
      return ready ? { status: 200, body: { ok: true } } : fail(503, 'not_ready', closing ? 'shutting down' : 'engine not ready');
    }),
  );
  app.get(
    '/v1/live',
    getJson(() => (deps.live ? { status: 200, body: deps.live() } : fail(404, 'not_found', 'no live view in this server'))),
  );
  app.get('/metrics', (res) => {
    const state = { aborted: false };
    res.onAborted(() => {
      state.aborted = true;
    });
    void register.metrics().then((text) => {
      if (state.aborted) return;
      res.cork(() => {
        res.writeHeader('Content-Type', register.contentType);
        res.end(text);
      });
    });
  });

  interface WsData {
    key: WriteKey;
    seq: number;
  }
  app.ws<WsData>('/v1/stream', {
    maxPayloadLength: options.wsMaxPayloadBytes,
    maxBackpressure: 64 * 1024 * 1024,
    idleTimeout: 120,
    upgrade: (res, req, ctx) => {
      const header = req.getHeader('authorization');
      const query = new URLSearchParams(req.getQuery() ?? '');
      const key = authenticate(header, query.get('writeKey') ?? undefined);
      const secKey = req.getHeader('sec-websocket-key');
      const protocol = req.getHeader('sec-websocket-protocol');
      const extensions = req.getHeader('sec-websocket-extensions');
      if ('status' in key) {
        res.cork(() => {
          res.writeStatus(STATUS_TEXT[key.status]!);
          res.writeHeader('Content-Type', 'application/json');
          res.end(JSON.stringify(key.body));
        });
        return;
      }
      res.upgrade<WsData>({ key, seq: 0 }, secKey, protocol, extensions, ctx);
    },
    message: (ws, message, isBinary) => {
      const data = ws.getUserData();
      const seq = data.seq++;
      const started = performance.now();
      const receivedAt = Date.now();
      if (!isBinary) {
        ws.send(JSON.stringify({ seq, ok: false, code: 'not_binary', message: 'send Arrow IPC stream bytes as binary messages' }));
        return;
      }
      if (closing) {
        ws.send(JSON.stringify({ seq, ok: false, code: 'shutting_down', message: 'retry on another connection', retryAfter: 1 }));
        return;
      }
      const busy = overloaded();
      if (busy) {
        ws.send(JSON.stringify({ seq, ...(busy.body as object), retryAfter: 1 }));
        return;
      }
      const bytes = new Uint8Array(message.byteLength);
      bytes.set(new Uint8Array(message));
      ingestMetrics.bytes.inc({ protocol: 'arrow' }, bytes.byteLength);
      inFlight++;
      void handleArrow(bytes, data.key, receivedAt)
        .catch((err: unknown) => {
          log.error({ err }, 'arrow batch failed');
          return fail(500, 'internal', 'internal error; nothing was acknowledged');
        })
        .then((reply) => {
          inFlight--;
          ingestMetrics.requests.inc({ protocol: 'arrow', status: String(reply.status) });
          ingestMetrics.ackSeconds.observe((performance.now() - started) / 1000);
          try {
            ws.send(JSON.stringify({ seq, status: reply.status, ...(reply.body as object) }));
          } catch {
            // The socket closed before the ack: the client will resend; dedup absorbs the repeat.
          }
        });
    },
  });
  app.any('/*', (res) => {
    res.cork(() => {
      res.writeStatus('404 Not Found');
      res.writeHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ ok: false, code: 'not_found', message: 'no such endpoint' }));
    });
  });

  const token = await new Promise<uws.us_listen_socket>((resolve, reject) => {
    app.listen(options.host, options.port, (t) => (t ? resolve(t) : reject(userError('listen_failed', `cannot listen on ${options.host}:${options.port} (port in use?)`))));
  });
  const port = uws.us_socket_local_port(token);
  log.info({ host: options.host, port, shards }, 'ingest listening');

  return {
    port,
    async close(): Promise<void> {
      if (closing) return;
      closing = true;
      uws.us_listen_socket_close(token);
      const deadline = Date.now() + 30_000;
      while (inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
      await Promise.all(appenders.map((a) => a.drain()));
      if (inFlight > 0) throw internalError('close_timeout', `${inFlight} requests still in flight after 30 s`);
    },
  };
}
