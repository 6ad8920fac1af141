/**
 * One partition of the load: a generator for its users and `connections` concurrent senders.
 * Runs in the main thread (one worker) or in a worker thread (see worker.ts).
 */
import * as hdr from 'hdr-histogram-js';
import { WebSocket } from 'ws';
import { IngestBatchBuilder } from '../ingest/batch-builder.js';
import type { CanonicalEvent } from '../ingest/normalize.js';
import { TrafficGenerator, type GeneratedEvent } from './generator.js';
import type { LoadgenOptions } from './run.js';

export interface TruthRow {
  event_id: string;
  user_id: string;
  event_type: string;
  event_time: number;
  device_type: string;
  app_version: string;
  country: string;
  session_no: number;
}

export interface PartitionResult {
  sent: number;
  acked: number;
  rejected: number;
  retried: number;
  failed: number;
  duplicatesSent: number;
  invalidSent: number;
  bytesSent: number;
  /** HDR histogram of ack latency in µs, compressed base64. */
  histogram: string;
  truth: TruthRow[];
}

type Options = Omit<LoadgenOptions, 'onProgress'> & { startTime: number; stepMs: number };

function truthRow(e: GeneratedEvent): TruthRow {
  const m = e.message;
  const ctx = m.context as { device: { type: string }; app: { version: string }; location: { country: string } };
  return {
    event_id: m.messageId,
    user_id: m.userId!,
    event_type: m.type === 'screen' ? 'screen' : m.event!,
    event_time: e.eventTime,
    device_type: ctx.device.type,
    app_version: ctx.app.version,
    country: ctx.location.country,
    session_no: e.sessionNo,
  };
}

function canonical(e: GeneratedEvent, receivedAt: number): CanonicalEvent {
  const m = e.message;
  const ctx = m.context as { device: { type: string }; os: { name: string }; app: { version: string }; location: { country: string } };
  const t = Date.parse(m.timestamp);
  return {
    event_id: m.messageId,
    user_id: (m.userId ?? null) as string,
    anonymous_id: null,
    event_type: m.type === 'screen' ? 'screen' : m.event!,
    // An unparseable timestamp cannot travel as an Arrow timestamp: send it a day in the future, which the server rejects too.
    event_time: Number.isNaN(t) ? receivedAt + 86_400_000 : t,
    received_at: receivedAt,
    device_type: ctx.device.type,
    os: ctx.os.name,
    app_version: ctx.app.version,
    country: ctx.location.country,
    source: 'loadgen',
    properties: JSON.stringify(m.type === 'screen' ? { ...m.properties, name: m.name } : m.properties),
    raw: null,
  };
}

export async function runPartition(
  o: Options,
  partition: number,
  partitions: number,
  onProgress?: (p: { acked: number; rejected: number; hist: string }) => void,
): Promise<PartitionResult> {
  const gen = new TrafficGenerator({
    seed: o.seed,
    users: Math.max(1, Math.floor(o.users / partitions)),
    startTime: o.startTime,
    stepMs: o.stepMs * partitions,
    duplicateRate: o.duplicateRate,
    jitterMs: o.jitterMs,
    lateRate: o.lateRate,
    tooLateRate: o.tooLateRate,
    invalidRate: o.invalidRate,
    clockSkewMs: o.clockSkewMs,
    partition,
    partitions,
  });
  const hist = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: 3 });
  const r: PartitionResult = { sent: 0, acked: 0, rejected: 0, retried: 0, failed: 0, duplicatesSent: 0, invalidSent: 0, bytesSent: 0, histogram: '', truth: [] };
  const maxEvents = o.events === undefined ? Infinity : Math.ceil(o.events / partitions);
  const deadline = o.durationMs === undefined ? Infinity : performance.now() + o.durationMs;
  const ratePerPartition = o.rate === undefined ? undefined : o.rate / partitions;
  const t0 = performance.now();
  let batches = 0;
  const auth = `Basic ${Buffer.from(`${o.writeKey}:`).toString('base64')}`;
  const keepTruth = o.truth !== undefined;

  /** The next batch and the time it was meant to go (open loop), or undefined when done. */
  const nextBatch = (): { events: GeneratedEvent[]; intended: number } | undefined => {
    if (r.sent >= maxEvents || performance.now() >= deadline) return undefined;
    const n = Math.min(o.batchSize, maxEvents - r.sent);
    const events: GeneratedEvent[] = [];
    for (let i = 0; i < n; i++) {
      const e = gen.next();
      events.push(e);
      if (e.kind === 'duplicate') r.duplicatesSent++;
      else if (e.kind === 'invalid') r.invalidSent++;
      else if (keepTruth) r.truth.push(truthRow(e));
    }
    r.sent += n;
    const intended = ratePerPartition === undefined ? performance.now() : t0 + (batches * o.batchSize * 1000) / ratePerPartition;
    batches++;
    return { events, intended };
  };

  const record = (intended: number): void => {
    hist.recordValue(Math.max(1, Math.round((performance.now() - intended) * 1000)));
  };

  let lastProgress = performance.now();
  const progress = (): void => {
    if (onProgress && performance.now() - lastProgress > 1000) {
      lastProgress = performance.now();
      onProgress({ acked: r.acked, rejected: r.rejected, hist: hdr.encodeIntoCompressedBase64(hist) });
    }
  };

  const waitUntil = async (t: number): Promise<void> => {
    const d = t - performance.now();
    if (d > 1) await new Promise((res) => setTimeout(res, d));
  };

  const httpSender = async (): Promise<void> => {
    const path = o.protocol === 'ndjson' ? '/v1/events' : '/v1/batch';
    for (let b = nextBatch(); b; b = nextBatch()) {
      await waitUntil(b.intended);
      const body =
        o.protocol === 'ndjson'
          ? b.events.map((e) => JSON.stringify(ndjsonEvent(e))).join('\n')
          : JSON.stringify({ batch: b.events.map((e) => e.message), ...(o.clockSkewMs !== 0 ? { sentAt: new Date(Date.now() + o.clockSkewMs).toISOString() } : {}) });
      r.bytesSent += Buffer.byteLength(body);
      for (let attempt = 0; attempt < 20; attempt++) {
        let res: Response;
        try {
          res = await fetch(`${o.url}${path}`, { method: 'POST', body, headers: { authorization: auth, 'content-type': o.protocol === 'ndjson' ? 'application/x-ndjson' : 'application/json' } });
        } catch {
          r.failed += b.events.length;
          break;
        }
        const json = (await res.json()) as { accepted?: number; rejected?: unknown[] };
        if (res.status === 200) {
          record(b.intended);
          r.acked += json.accepted ?? 0;
          r.rejected += json.rejected?.length ?? 0;
          break;
        }
        if (res.status === 429 || res.status === 503) {
          r.retried++;
          await new Promise((res2) => setTimeout(res2, 1000 * Number(res.headers.get('retry-after') ?? 1)));
          continue;
        }
        r.failed += b.events.length;
        break;
      }
      progress();
    }
  };

  const wsSender = async (): Promise<void> => {
    const ws = new WebSocket(`${o.url.replace(/^http/, 'ws')}/v1/stream`, { headers: { authorization: auth } });
    await new Promise<void>((res, rej) => {
      ws.once('open', () => res());
      ws.once('error', rej);
    });
    const waiting = new Map<number, { resolve: (ack: { ok: boolean; accepted?: number; rejected?: unknown[]; retryAfter?: number }) => void }>();
    ws.on('message', (m) => {
      const ack = JSON.parse(String(m)) as { seq: number; ok: boolean; accepted?: number; rejected?: unknown[] };
      waiting.get(ack.seq)?.resolve(ack);
      waiting.delete(ack.seq);
    });
    let seq = 0;
    // Several batches in flight per connection.
    const inFlight = new Set<Promise<void>>();
    const sendOne = async (b: { events: GeneratedEvent[]; intended: number }): Promise<void> => {
      const now = Date.now();
      const builder = new IngestBatchBuilder(b.events.length);
      for (const e of b.events) builder.push(canonical(e, now));
      const ipc = builder.toIPC();
      for (let attempt = 0; attempt < 20; attempt++) {
        const mySeq = seq++;
        const ack = await new Promise<{ ok: boolean; accepted?: number; rejected?: unknown[]; retryAfter?: number }>((resolve) => {
          waiting.set(mySeq, { resolve });
          r.bytesSent += ipc.byteLength;
          ws.send(ipc);
        });
        if (ack.ok) {
          record(b.intended);
          r.acked += ack.accepted ?? 0;
          r.rejected += ack.rejected?.length ?? 0;
          return;
        }
        r.retried++;
        await new Promise((res) => setTimeout(res, 1000 * (ack.retryAfter ?? 1)));
      }
      r.failed += b.events.length;
    };
    for (let b = nextBatch(); b; b = nextBatch()) {
      await waitUntil(b.intended);
      const p = sendOne(b).finally(() => inFlight.delete(p));
      inFlight.add(p);
      if (inFlight.size >= 4) await Promise.race(inFlight);
      progress();
    }
    await Promise.all(inFlight);
    ws.close();
  };

  await Promise.all(Array.from({ length: o.connections }, () => (o.protocol === 'arrow-ws' ? wsSender() : httpSender())));
  r.histogram = hdr.encodeIntoCompressedBase64(hist);
  return r;
}

function ndjsonEvent(e: GeneratedEvent): Record<string, unknown> {
  const m = e.message;
  const ctx = m.context as { device: { type: string }; os: { name: string }; app: { version: string }; location: { country: string } };
  return {
    event_id: m.messageId,
    user_id: m.userId,
    event_type: m.type === 'screen' ? 'screen' : m.event,
    event_time: m.timestamp,
    device_type: ctx.device.type,
    os: ctx.os.name,
    app_version: ctx.app.version,
    country: ctx.location.country,
    properties: m.type === 'screen' ? { ...m.properties, name: m.name } : m.properties,
  };
}
