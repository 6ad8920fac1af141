/**
 * A small real uWebSockets.js server speaking Sluice's ingest contract (Segment /v1/batch,
 * NDJSON /v1/events, Arrow IPC over /v1/stream) that validates like the real one, acknowledges,
 * and records everything it received — so the load generator's clients can be checked against
 * exactly what arrived. It can throttle (429 + Retry-After) and drop sockets on demand.
 */
import uws from 'uWebSockets.js';
import { tableFromIPC } from 'apache-arrow';

export interface Received {
  protocol: 'segment' | 'ndjson' | 'arrow';
  /** Parsed items (Segment messages, NDJSON objects, Arrow rows as objects). */
  items: Array<Record<string, unknown>>;
  sentAt?: string;
  /** Indexes of items this server rejected. */
  rejected: number[];
  /** Epoch ms the request arrived. */
  at: number;
}

export interface RecordingServerOptions {
  writeKey: string;
  /** Answer the first N HTTP requests / Arrow messages with 429 and Retry-After (s). */
  throttleFirst?: number;
  retryAfterS?: number;
  /** Close the WebSocket, without acking, when it receives its Nth message (1-based). */
  closeWsOnMessage?: number;
  maxFutureMs?: number;
}

export interface RecordingServer {
  url: string;
  /** Acknowledged requests (status 200 / ok acks), in arrival order. */
  acked: Received[];
  /** Requests answered 429, with arrival times. */
  throttled: Array<{ protocol: string; at: number; body: string }>;
  /** Arrival times of every HTTP body (by body text) — to see when a throttled body came back. */
  arrivals: Map<string, number[]>;
  closedSockets: number;
  close(): void;
}

const parseTime = (v: unknown): number => (typeof v === 'number' ? v : typeof v === 'string' ? Date.parse(v) : NaN);

export async function startRecordingServer(options: RecordingServerOptions): Promise<RecordingServer> {
  const maxFuture = options.maxFutureMs ?? 10 * 60_000;
  const acked: Received[] = [];
  const throttled: RecordingServer['throttled'] = [];
  const arrivals = new Map<string, number[]>();
  let requests = 0;
  let closedSockets = 0;
  const expected = `Basic ${Buffer.from(`${options.writeKey}:`).toString('base64')}`;

  const validateSegment = (m: Record<string, unknown>, sentAt: string | undefined, now: number): string | undefined => {
    if (typeof m.userId !== 'string' && typeof m.anonymousId !== 'string') return 'missing_user';
    if (m.type === 'track' && (typeof m.event !== 'string' || m.event === '')) return 'missing_event';
    let t = parseTime(m.timestamp);
    if (Number.isNaN(t)) return 'invalid_timestamp';
    if (sentAt !== undefined) t += now - parseTime(sentAt);
    if (t > now + maxFuture) return 'future_timestamp';
    return undefined;
  };
  const validateCanonical = (e: Record<string, unknown>, now: number): string | undefined => {
    if (typeof e.event_type !== 'string' || e.event_type === '') return 'missing_type';
    if ((typeof e.user_id !== 'string' || e.user_id === '') && (typeof e.anonymous_id !== 'string' || e.anonymous_id === '')) return 'missing_user';
    const t = parseTime(e.event_time);
    if (Number.isNaN(t)) return 'invalid_timestamp';
    if (t > now + maxFuture) return 'future_timestamp';
    return undefined;
  };
  const reply = (items: Array<Record<string, unknown>>, check: (x: Record<string, unknown>) => string | undefined) => {
    const rejected: Array<{ index: number; code: string; message: string }> = [];
    items.forEach((x, index) => {
      const code = check(x);
      if (code) rejected.push({ index, code, message: code });
    });
    return { ok: true, accepted: items.length - rejected.length, rejected };
  };

  const app = uws.App();
  const http = (protocol: 'segment' | 'ndjson') => (res: uws.HttpResponse, req: uws.HttpRequest): void => {
    const auth = req.getHeader('authorization');
    let aborted = false;
    res.onAborted(() => (aborted = true));
    const chunks: Buffer[] = [];
    res.onData((chunk, last) => {
      chunks.push(Buffer.from(chunk.slice(0)));
      if (!last) return;
      const text = Buffer.concat(chunks).toString('utf8');
      const now = Date.now();
      const answer = (status: string, body: unknown, headers: Record<string, string> = {}): void => {
        if (aborted) return;
        res.cork(() => {
          res.writeStatus(status);
          for (const [k, v] of Object.entries(headers)) res.writeHeader(k, v);
          res.writeHeader('Content-Type', 'application/json');
          res.end(JSON.stringify(body));
        });
      };
      if (auth !== expected) return answer('401 Unauthorized', { ok: false, code: 'unauthorized', message: 'unknown write key' });
      const seen = arrivals.get(text) ?? [];
      seen.push(now);
      arrivals.set(text, seen);
      if (requests++ < (options.throttleFirst ?? 0)) {
        throttled.push({ protocol, at: now, body: text });
        return answer('429 Too Many Requests', { ok: false, code: 'rate_limited', message: 'slow down' }, { 'Retry-After': String(options.retryAfterS ?? 1) });
      }
      if (protocol === 'segment') {
        const body = JSON.parse(text) as { batch: Array<Record<string, unknown>>; sentAt?: string };
        const r = reply(body.batch, (m) => validateSegment(m, body.sentAt, now));
        acked.push({ protocol, items: body.batch, sentAt: body.sentAt, rejected: r.rejected.map((x) => x.index), at: now });
        answer('200 OK', r);
      } else {
        const items = text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
        const r = reply(items, (e) => validateCanonical(e, now));
        acked.push({ protocol, items, rejected: r.rejected.map((x) => x.index), at: now });
        answer('200 OK', r);
      }
    });
  };
  app.post('/v1/batch', http('segment'));
  app.post('/v1/events', http('ndjson'));
  interface WsData {
    seq: number;
    messages: number;
  }
  app.ws<WsData>('/v1/stream', {
    maxPayloadLength: 64 * 1024 * 1024,
    upgrade: (res, req, ctx) => {
      if (req.getHeader('authorization') !== expected) {
        res.writeStatus('401 Unauthorized').end('{"ok":false,"code":"unauthorized"}');
        return;
      }
      res.upgrade<WsData>({ seq: 0, messages: 0 }, req.getHeader('sec-websocket-key'), req.getHeader('sec-websocket-protocol'), req.getHeader('sec-websocket-extensions'), ctx);
    },
    message: (ws, message) => {
      const data = ws.getUserData();
      const seq = data.seq++;
      if (++data.messages === options.closeWsOnMessage) {
        closedSockets++;
        ws.end(1011, 'test: dropped');
        return;
      }
      if (requests++ < (options.throttleFirst ?? 0)) {
        throttled.push({ protocol: 'arrow', at: Date.now(), body: '' });
        ws.send(JSON.stringify({ seq, status: 429, ok: false, code: 'rate_limited', message: 'slow down', retryAfter: options.retryAfterS ?? 1 }));
        return;
      }
      const table = tableFromIPC(new Uint8Array(message.slice(0)));
      const items: Array<Record<string, unknown>> = [];
      for (let i = 0; i < table.numRows; i++) {
        const row: Record<string, unknown> = {};
        for (const f of table.schema.fields) {
          const v = table.getChild(f.name)!.get(i) as unknown;
          row[f.name] = typeof v === 'bigint' ? Number(v) : v;
        }
        items.push(row);
      }
      const now = Date.now();
      const r = reply(items, (e) => validateCanonical(e, now));
      acked.push({ protocol: 'arrow', items, rejected: r.rejected.map((x) => x.index), at: now });
      ws.send(JSON.stringify({ seq, status: 200, ...r, offsets: [] }));
    },
  });
  const token = await new Promise<uws.us_listen_socket>((resolve, reject) => app.listen('127.0.0.1', 0, (t) => (t ? resolve(t) : reject(new Error('listen failed')))));
  const port = uws.us_socket_local_port(token);
  return {
    url: `http://127.0.0.1:${port}`,
    acked,
    throttled,
    arrivals,
    get closedSockets() {
      return closedSockets;
    },
    close: () => {
      uws.us_listen_socket_close(token);
    },
  };
}
