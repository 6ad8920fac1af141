/**
 * One partition of a run: a generator for its users and `connections` concurrent senders over
 * one protocol. Runs in the calling thread (one worker) or in a worker thread (worker.ts).
 *
 * Open loop (rate given): batch b is *meant* to go at (partition start) + b × batchSize / rate; a
 * sender that is free waits for that moment, a sender that is late sends at once. Latency is
 * measured from the intended moment, so a stalled server shows up as latency instead of
 * silently slowing the load (no coordinated omission). Closed loop: intended = actual send time.
 * Retries (429/503 after Retry-After; network errors and lost sockets with backoff) stay inside
 * one batch's latency.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import * as hdr from 'hdr-histogram-js';
import { WebSocket } from 'ws';
import { externalError, userError } from '../common/errors.js';
import { TrafficGenerator, type GeneratedEvent } from './generator.js';
import { IngestBatchBuilder, arrowBody, ndjsonBody, segmentBody } from './encode.js';
import { TruthSpool } from './truth.js';
import { emptyCounters, type PartitionCounters, type PartitionPlan, type PartitionProgress, type PartitionResult } from './types.js';

/** Set `stopped` to end generation early; in-flight batches still finish. */
export interface PartitionControl {
  stopped: boolean;
}

interface Batch {
  events: GeneratedEvent[];
  /** Epoch ms the batch was meant to be sent. */
  intended: number;
}

/** The server's answer to one batch, whatever the protocol. */
interface Answer {
  status: number;
  accepted: number;
  rejected: Array<{ index: number }>;
  /** ms to wait before retrying (429/503 and Arrow acks that carry retryAfter). */
  retryAfterMs?: number;
  message?: string;
}

const nowMs = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Retry-After as delta-seconds or an HTTP date; 1 s when absent or unreadable; capped at 60 s. */
export function retryAfterMs(header: string | null | undefined, now = Date.now()): number {
  if (header === null || header === undefined || header.trim() === '') return 1000;
  const s = Number(header);
  if (Number.isFinite(s)) return Math.min(60_000, Math.max(0, s * 1000));
  const date = Date.parse(header);
  if (Number.isFinite(date)) return Math.min(60_000, Math.max(0, date - now));
  return 1000;
}

const backoffMs = (attempt: number): number => Math.min(5000, 50 * 2 ** attempt);

const SOCKET_FAILURE = Symbol('socket failure');

/**
 * POSTs `body` over the agent's keep-alive connections; resolves the status, the body text and
 * Retry-After, rejects on a network error or after `timeoutMs`. node:http, not fetch: undici's
 * fetch cost 430–800 µs of client CPU per 27 KB request against 70–190 µs for this (8 concurrent
 * requests to a bare uWS server on loopback), and the client shares the machine with the server.
 */
function post(url: URL, agent: http.Agent, body: string, headers: Record<string, string>, timeoutMs: number): Promise<{ status: number; text: string; retryAfter: string | null }> {
  return new Promise((resolve, reject) => {
    const request = url.protocol === 'https:' ? https.request : http.request;
    const req = request(url, { method: 'POST', agent, headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) }, signal: AbortSignal.timeout(timeoutMs) }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => {
        const retryAfter = res.headers['retry-after'];
        resolve({ status: res.statusCode ?? 0, text, retryAfter: typeof retryAfter === 'string' ? retryAfter : null });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

export async function runPartition(plan: PartitionPlan, control: PartitionControl = { stopped: false }, onProgress?: (p: PartitionProgress) => void): Promise<PartitionResult> {
  const o = plan.options;
  const wallStart = Date.now();
  const gen = new TrafficGenerator({
    seed: o.seed,
    users: o.users,
    partition: plan.partition,
    partitions: plan.partitions,
    startTime: plan.startTime,
    stepMs: plan.stepMs ?? 0,
    clock: plan.stepMs === undefined ? () => plan.startTime + (Date.now() - wallStart) : undefined,
    zipf: o.zipf,
    sessionGapMs: o.sessionGapMs,
    duplicateRate: o.duplicateRate,
    jitterMs: o.jitterMs,
    lateRate: o.lateRate,
    tooLateRate: o.tooLateRate,
    invalidRate: o.invalidRate,
    clockSkewMs: o.protocol === 'http' ? o.clockSkewMs : 0,
  });
  const histogram = (): hdr.Histogram => hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: 3 });
  const hist = histogram();
  const warmHist = histogram();
  // The schedule starts after the set-up above (the generator's user tables take tens of ms), so set-up is not counted as latency.
  const startedAt = nowMs();
  const deadline = o.durationMs === undefined ? Infinity : startedAt + o.durationMs;
  const warmUntil = startedAt + o.warmupMs;
  const c: PartitionCounters = emptyCounters();
  const errors = new Set<string>();
  const spool = plan.truthSpool === undefined ? undefined : new TruthSpool(plan.truthSpool);
  /** Valid events whose batch was given up: a later acknowledged duplicate still puts them in the truth. */
  const unconfirmed = new Map<string, GeneratedEvent>();
  const ratePerPartition = o.rate === undefined ? undefined : o.rate / plan.partitions;
  const auth = `Basic ${Buffer.from(`${o.writeKey}:`).toString('base64')}`;
  let batchNo = 0;
  let fatal: unknown;

  /**
   * Reserves the next batch's slot (its intended time and size); `fill` generates its events when
   * the slot is due. Generating at reservation made every sender generate a batch up to
   * connections × batch interval ahead, and at the start all of them at once (32 cold batches,
   * 40–90 ms in one go) before the first send, which showed as the first batches' latency.
   */
  const nextBatch = (): Batch | undefined => {
    if (control.stopped || fatal !== undefined || c.sent >= plan.maxEvents) return undefined;
    const intended = ratePerPartition === undefined ? nowMs() : startedAt + (batchNo * o.batchSize * 1000) / ratePerPartition;
    if (intended >= deadline || nowMs() >= deadline) return undefined;
    batchNo++;
    const n = Math.min(o.batchSize, plan.maxEvents - c.sent);
    c.sent += n;
    return { events: new Array<GeneratedEvent>(n), intended };
  };

  const fill = (b: Batch): Batch => {
    const events = b.events;
    for (let i = 0; i < events.length; i++) {
      const e = gen.next();
      events[i] = e;
      if (e.kind === 'duplicate') c.duplicatesSent++;
      else if (e.kind === 'invalid') c.invalidSent++;
      else if (e.lateness === 'late') c.lateSent++;
      else if (e.lateness === 'too_late') c.tooLateSent++;
    }
    return b;
  };

  const acknowledged = (b: Batch, a: Answer): void => {
    (b.intended < warmUntil ? warmHist : hist).recordValue(Math.max(1, Math.round((nowMs() - b.intended) * 1000)));
    c.requests++;
    c.acked += a.accepted;
    c.rejected += a.rejected.length;
    const rejected = new Set(a.rejected.map((r) => r.index));
    for (let i = 0; i < b.events.length; i++) {
      const e = b.events[i]!;
      if (rejected.has(i)) {
        if (e.kind !== 'invalid') c.rejectedValid++;
        continue;
      }
      if (e.kind === 'invalid') c.acceptedInvalid++;
      else if (spool) {
        if (e.kind === 'valid') spool.add(e);
        else if (unconfirmed.delete(e.message.messageId)) spool.add(e);
      }
    }
    if (!spool) return;
    for (const e of b.events) if (e.kind === 'valid') unconfirmed.delete(e.message.messageId);
  };

  const givenUp = (b: Batch, why: string): void => {
    c.failed += b.events.length;
    if (errors.size < 5) errors.add(why);
    if (spool) for (const e of b.events) if (e.kind === 'valid') unconfirmed.set(e.message.messageId, e);
  };

  /** Sends one batch with retries; `attempt` sends it once and says what came back. */
  const deliver = async (b: Batch, attemptOnce: () => Promise<Answer | typeof SOCKET_FAILURE>): Promise<void> => {
    for (let attempt = 0; ; attempt++) {
      let a: Answer | typeof SOCKET_FAILURE;
      try {
        a = await attemptOnce();
      } catch (err) {
        if (fatal === undefined) fatal = err;
        givenUp(b, (err as Error).message);
        return;
      }
      if (a !== SOCKET_FAILURE && a.status === 200) return acknowledged(b, a);
      const retryable = a === SOCKET_FAILURE || a.status === 429 || a.status === 503 || a.status >= 500 || a.retryAfterMs !== undefined;
      if (!retryable || attempt >= o.maxRetries) {
        givenUp(b, a === SOCKET_FAILURE ? `connection to ${o.url} failed ${attempt + 1} times (is sluice serve running there?)` : `${a.status}: ${a.message ?? ''}`);
        return;
      }
      c.retried++;
      if (a !== SOCKET_FAILURE && (a.status === 429 || a.status === 503)) c.throttled++;
      await sleep(a === SOCKET_FAILURE ? backoffMs(attempt) : (a.retryAfterMs ?? backoffMs(attempt)));
    }
  };

  const waitUntil = async (t: number): Promise<void> => {
    const d = t - nowMs();
    if (d > 1) await sleep(d);
  };

  // One keep-alive connection per sender (destroyed when the partition ends, so no idle socket keeps its thread alive).
  const agent = o.protocol === 'arrow-ws' ? undefined : new (o.url.startsWith('https:') ? https.Agent : http.Agent)({ keepAlive: true, maxSockets: o.connections });
  const httpSender = async (): Promise<void> => {
    const ndjson = o.protocol === 'ndjson';
    const url = new URL(ndjson ? '/v1/events' : '/v1/batch', o.url);
    const headers = { authorization: auth, 'content-type': ndjson ? 'application/x-ndjson' : 'application/json' };
    for (let b = nextBatch(); b; b = nextBatch()) {
      await waitUntil(b.intended);
      const batch = fill(b);
      const fixed = ndjson ? ndjsonBody(batch.events) : o.clockSkewMs === 0 ? segmentBody(batch.events) : undefined;
      await deliver(batch, async () => {
        // With clock skew, sentAt is the device clock at this attempt.
        const body = fixed ?? segmentBody(batch.events, new Date(Date.now() + o.clockSkewMs).toISOString());
        c.bytesSent += Buffer.byteLength(body);
        let res: Awaited<ReturnType<typeof post>>;
        try {
          res = await post(url, agent!, body, headers, o.requestTimeoutMs);
        } catch {
          return SOCKET_FAILURE;
        }
        if (res.status === 401) throw userError('unauthorized', `the server refused the write key (401 from ${url.href}): pass the key \`sluice serve\` printed with --write-key`);
        return parseAnswer(res.status, res.text, res.retryAfter);
      });
    }
  };

  const wsSender = async (): Promise<void> => {
    const builder = new IngestBatchBuilder(o.batchSize);
    const wsUrl = new URL('/v1/stream', o.url.replace(/^http/, 'ws')).href;
    let link: Promise<WsLink> | undefined;
    const connect = (): Promise<WsLink> => (link ??= WsLink.open(wsUrl, auth, o.requestTimeoutMs).catch((err: unknown) => {
      link = undefined;
      throw err;
    }));
    const sendArrow = (b: Batch): Promise<void> => {
      const bytes = arrowBody(b.events, builder, Date.now());
      return deliver(b, async () => {
        let l: WsLink;
        try {
          l = await connect();
        } catch (err) {
          if ((err as { code?: string }).code === 'unauthorized') throw err;
          return SOCKET_FAILURE;
        }
        if (l.closed) {
          link = undefined;
          return SOCKET_FAILURE;
        }
        c.bytesSent += bytes.byteLength;
        const a = await l.send(bytes, o.requestTimeoutMs);
        if (a === SOCKET_FAILURE && link !== undefined && (await link.catch(() => undefined)) === l) link = undefined;
        return a;
      });
    };
    const inFlight = new Set<Promise<void>>();
    for (let b = nextBatch(); b; b = nextBatch()) {
      await waitUntil(b.intended);
      const p: Promise<void> = sendArrow(fill(b)).finally(() => inFlight.delete(p));
      inFlight.add(p);
      if (inFlight.size >= o.pipeline) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
    if (link) (await link.catch(() => undefined))?.close();
  };

  const progress = (): PartitionProgress => ({ ...c, histogram: hdr.encodeIntoCompressedBase64(hist), warmupHistogram: hdr.encodeIntoCompressedBase64(warmHist) });
  const timer = onProgress ? setInterval(() => onProgress(progress()), 1000) : undefined;
  timer?.unref();
  try {
    await Promise.all(Array.from({ length: o.connections }, () => (o.protocol === 'arrow-ws' ? wsSender() : httpSender())));
  } finally {
    if (timer) clearInterval(timer);
    agent?.destroy();
    await spool?.close();
  }
  if (fatal !== undefined) throw fatal;
  const result: PartitionResult = { ...progress(), generator: { ...gen.stats }, startedAt, endedAt: nowMs(), truthRows: spool?.rows ?? 0, errors: [...errors] };
  hist.destroy();
  warmHist.destroy();
  return result;
}

function parseAnswer(status: number, text: string, retryAfter: string | null): Answer {
  let body: { accepted?: number; rejected?: Array<{ index: number }>; message?: string } = {};
  try {
    body = JSON.parse(text) as typeof body;
  } catch {
    // Not JSON (a proxy's error page, say): the status decides.
  }
  return {
    status,
    accepted: body.accepted ?? 0,
    rejected: body.rejected ?? [],
    retryAfterMs: status === 429 || status === 503 ? retryAfterMs(retryAfter) : undefined,
    message: body.message ?? text.slice(0, 200),
  };
}

/**
 * One WebSocket to /v1/stream. The server answers each binary message, in order, with one JSON
 * text ack `{seq, status, ok, accepted, rejected, retryAfter?}`; seq counts messages on this
 * socket from 0. A closed socket fails every pending send (the caller reconnects and resends;
 * the server's dedup absorbs a batch that was stored but not acknowledged).
 */
class WsLink {
  private readonly pending = new Map<number, (a: Answer | typeof SOCKET_FAILURE) => void>();
  private seq = 0;
  closed = false;

  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      let ack: { seq?: number; status?: number; ok?: boolean; accepted?: number; rejected?: Array<{ index: number }>; retryAfter?: number; message?: string };
      try {
        ack = JSON.parse(String(data)) as typeof ack;
      } catch {
        return;
      }
      if (typeof ack.seq !== 'number') return;
      const resolve = this.pending.get(ack.seq);
      if (!resolve) return;
      this.pending.delete(ack.seq);
      const status = ack.status ?? (ack.ok ? 200 : 400);
      resolve({
        status: ack.ok === true ? 200 : status === 200 ? 400 : status,
        accepted: ack.accepted ?? 0,
        rejected: ack.rejected ?? [],
        retryAfterMs: typeof ack.retryAfter === 'number' ? Math.min(60_000, ack.retryAfter * 1000) : status === 429 || status === 503 ? 1000 : undefined,
        message: ack.message,
      });
    });
    const fail = (): void => {
      this.closed = true;
      for (const resolve of this.pending.values()) resolve(SOCKET_FAILURE);
      this.pending.clear();
    };
    ws.on('close', fail);
    ws.on('error', fail);
  }

  static open(url: string, auth: string, timeoutMs: number): Promise<WsLink> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { headers: { authorization: auth }, handshakeTimeout: timeoutMs, perMessageDeflate: false });
      ws.once('open', () => resolve(new WsLink(ws)));
      ws.once('unexpected-response', (_req, res) => {
        ws.terminate();
        if (res.statusCode === 401) reject(userError('unauthorized', `the server refused the write key (401 from ${url}): pass the key \`sluice serve\` printed with --write-key`));
        else reject(externalError('ws_upgrade_failed', `WebSocket upgrade to ${url} answered ${res.statusCode}`));
      });
      ws.once('error', (err) => reject(externalError('ws_connect_failed', `cannot connect to ${url}: ${err.message}`, err)));
    });
  }

  send(bytes: Uint8Array, timeoutMs: number): Promise<Answer | typeof SOCKET_FAILURE> {
    if (this.closed) return Promise.resolve(SOCKET_FAILURE);
    const seq = this.seq++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        // No ack in time: treat the socket as broken so every pending batch is resent elsewhere.
        this.ws.terminate();
      }, timeoutMs);
      this.pending.set(seq, (a) => {
        clearTimeout(timer);
        resolve(a);
      });
      this.ws.send(bytes, { binary: true }, (err) => {
        if (err) this.ws.terminate();
      });
    });
  }

  close(): void {
    this.ws.close();
  }
}
