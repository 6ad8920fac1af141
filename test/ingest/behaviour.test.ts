/**
 * The real server on loopback: raw JSON stored exactly as received, normalization details,
 * ack-after-fsync (with a gated fsync), log backpressure, group commit, close(), the Arrow
 * WebSocket protocol (seq control, schema errors), readiness and live endpoints.
 */
import { fdatasyncSync } from 'node:fs';
import { request } from 'node:http';
import { tableFromArrays, tableToIPC } from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { shardOfUser } from '../../common/hash.js';
import { basic, post, recent, startHarness, track, WRITE_KEY, type Harness } from './harness.js';

/** An fsync that blocks until opened; `called` resolves at the first call. */
function gatedFsync(): { fsync: (fd: number) => Promise<void>; called: Promise<void>; open: () => void; calls: () => number } {
  let isOpen = false;
  let calls = 0;
  let onCall!: () => void;
  const called = new Promise<void>((r) => (onCall = r));
  const waiting: Array<() => void> = [];
  return {
    called,
    calls: () => calls,
    open: () => {
      isOpen = true;
      for (const w of waiting.splice(0)) w();
    },
    fsync: async (fd) => {
      calls++;
      onCall();
      if (!isOpen) await new Promise<void>((r) => waiting.push(r));
      fdatasyncSync(fd);
    },
  };
}

/** Lets pending I/O callbacks and timers of the event loop run a few times. */
const turns = async (n = 20): Promise<void> => {
  for (let i = 0; i < n; i++) await new Promise((r) => setTimeout(r, 1));
};

async function openWs(port: number, headers: Record<string, string> = { authorization: basic() }, query = ''): Promise<{ ws: WebSocket; acks: Array<Record<string, unknown>>; next: () => Promise<Record<string, unknown>> }> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/stream${query}`, { headers });
  const acks: Array<Record<string, unknown>> = [];
  const waiters: Array<(a: Record<string, unknown>) => void> = [];
  ws.on('message', (m) => {
    const a = JSON.parse(String(m)) as Record<string, unknown>;
    const w = waiters.shift();
    if (w) w(a);
    else acks.push(a);
  });
  await new Promise((res, rej) => {
    ws.once('open', res);
    ws.once('error', rej);
  });
  return { ws, acks, next: () => (acks.length > 0 ? Promise.resolve(acks.shift()!) : new Promise((r) => waiters.push(r))) };
}

describe('what ingest stores', () => {
  let s: Harness;
  beforeAll(async () => {
    s = await startHarness({ writeKeys: [{ key: WRITE_KEY }, { key: 'mobile-key', source: 'ios-app' }] });
  });
  afterAll(async () => {
    await s.close();
  });

  it('stores each batch item’s raw JSON and its properties byte for byte as received', async () => {
    const ts = recent();
    const item0 = `{ "type" : "track", "event":"Späti Visit", "userId":"raw-1","messageId":"raw-1",\n  "timestamp":"${ts}", "properties" : {"price": 1.50, "big": 1e3, "esc":"a\\"b\\u00e9", "nested":{"x":[1, 2]}} }`;
    const item1 = `{"type":"screen","name":"Home","userId":"raw-2","messageId":"raw-2","timestamp":"${ts}","properties":{ "from":"push" }}`;
    const item2 = `{"type":"page","name":"Pricing","userId":"raw-3","messageId":"raw-3","timestamp":"${ts}","properties":{}}`;
    const item3 = `{"type":"screen","name":"Cart","userId":"raw-4","messageId":"raw-4","timestamp":"${ts}","properties":{"name":"stale"}}`;
    const item4 = `{"type":"identify","userId":"raw-5","messageId":"raw-5","traits":{"plan":  "pro"}}`;
    const body = `{"batch":[${item0},${item1} , ${item2},${item3},${item4}],"context":{"device":{"type":"android"}},"sentAt":"${ts}"}`;
    const r = await post(`${s.url}/v1/batch`, body, { authorization: basic() });
    expect(r.status).toBe(200);
    expect(r.json.accepted).toBe(5);
    const rows = new Map((await s.loggedEvents()).map((x) => [x.event_id, x]));
    expect(rows.get('raw-1')!.raw).toBe(item0);
    expect(rows.get('raw-1')!.properties).toBe('{"price": 1.50, "big": 1e3, "esc":"a\\"b\\u00e9", "nested":{"x":[1, 2]}}');
    expect(rows.get('raw-1')!.event_type).toBe('Späti Visit');
    expect(rows.get('raw-1')!.device_type).toBe('android'); // batch context
    expect(rows.get('raw-2')!.raw).toBe(item1);
    expect(JSON.parse(String(rows.get('raw-2')!.properties))).toEqual({ name: 'Home', from: 'push' });
    expect(JSON.parse(String(rows.get('raw-3')!.properties))).toEqual({ name: 'Pricing' });
    expect(JSON.parse(String(rows.get('raw-4')!.properties))).toEqual({ name: 'Cart' });
    expect(rows.get('raw-5')!.properties).toBe('{"plan":  "pro"}');
    for (const id of ['raw-1', 'raw-2', 'raw-5']) expect(rows.get(id)!.source).toBe('segment');
  });

  it('never stores the write key of a single call sent in its body, and stamps the key’s source', async () => {
    const body = { writeKey: 'mobile-key', userId: 'single-1', event: 'Opened', messageId: 'single-wk', timestamp: recent() };
    const r = await post(`${s.url}/v1/track`, JSON.stringify(body));
    expect(r.status).toBe(200);
    const row = (await s.loggedEvents()).find((x) => x.event_id === 'single-wk')!;
    expect(String(row.raw)).not.toContain('mobile-key');
    expect(JSON.parse(String(row.raw))).toMatchObject({ userId: 'single-1', event: 'Opened' });
    expect(row.source).toBe('ios-app');
  });

  it('derives the id of an event without messageId from its content and its endpoint: the same body as a page and as a screen is two events, a retry of either is one; a body naming its type has its batch id', async () => {
    const body = JSON.stringify({ userId: 'same-body', name: 'Home', timestamp: recent() });
    for (const path of ['/v1/page', '/v1/screen', '/v1/page']) expect((await post(`${s.url}${path}`, body, { authorization: basic() })).status).toBe(200);
    const rows = (await s.loggedEvents()).filter((x) => x.user_id === 'same-body');
    expect(rows.map((x) => x.event_type).sort()).toEqual(['page', 'page', 'screen']);
    const page = rows.filter((x) => x.event_type === 'page');
    expect(page[0]!.event_id, 'a retry of the page call').toBe(page[1]!.event_id);
    expect(rows.find((x) => x.event_type === 'screen')!.event_id).not.toBe(page[0]!.event_id);
    // A body that names its type has one id as a single call and as a batch item (a resend in a batch is a duplicate).
    const typed = JSON.stringify({ type: 'track', event: 'Typed', userId: 'typed-body', timestamp: recent() });
    expect((await post(`${s.url}/v1/track`, typed, { authorization: basic() })).status).toBe(200);
    expect((await post(`${s.url}/v1/batch`, `{"batch":[${typed}]}`, { authorization: basic() })).status).toBe(200);
    const ids = (await s.loggedEvents()).filter((x) => x.user_id === 'typed-body').map((x) => x.event_id);
    expect(ids).toHaveLength(2);
    expect(ids[0], 'the single call and the batch item').toBe(ids[1]);
  });

  it('reports per-event codes for missing/invalid type, bad ids and bad sentAt', async () => {
    const batch = [
      { event: 'x', userId: 'u', messageId: 'no-type' },
      { type: 'purchase', userId: 'u', messageId: 'bad-type' },
      { type: 'track', event: 'x', userId: { id: 1 }, messageId: 'bad-user' },
      { type: 'track', event: 'x', userId: 'u', messageId: 'bad-sent', timestamp: recent(), sentAt: 'soon' },
      { type: 'alias', userId: 'new', previousId: 'old', messageId: 'alias-ok' },
    ];
    const r = await post(`${s.url}/v1/batch`, JSON.stringify({ batch }), { authorization: basic() });
    expect(r.status).toBe(200);
    expect((r.json.rejected as Array<{ index: number; code: string }>).map((x) => [x.index, x.code])).toEqual([
      [0, 'missing_type'],
      [1, 'invalid_type'],
      [2, 'invalid_user_id'],
      [3, 'invalid_sent_at'],
    ]);
    const alias = (await s.loggedEvents()).find((x) => x.event_id === 'alias-ok')!;
    expect(JSON.parse(String(alias.properties))).toEqual({ previousId: 'old' });
    const dlq = await s.deadLetters();
    const noType = dlq.find((d) => d.code === 'missing_type')!;
    expect(JSON.parse(String(noType.raw))).toEqual(batch[0]);
    expect(noType.write_key_id).toMatch(/^wk-[0-9a-f]{12}$/);
    expect(String(noType.write_key_id)).not.toContain(WRITE_KEY);
  });

  it('stores NDJSON lines verbatim, keeps properties given as JSON text, rejects bad properties text', async () => {
    const line0 = `{"event_id":"nd-raw-1", "user_id":"u-nd","event_type":"screen_view","event_time":${Date.now() - 1000},"properties":{ "name" : "Home" }}`;
    const line1 = JSON.stringify({ event_id: 'nd-raw-2', anonymous_id: 'a-nd', event_type: 'click', event_time: recent(), properties: '{"k":1}', source: 'web' });
    const line2 = JSON.stringify({ event_id: 'nd-raw-3', user_id: 'u', event_type: 'click', event_time: recent(), properties: 'not json' });
    const r = await post(`${s.url}/v1/events`, `${line0}\r\n\n${line1}\n${line2}\n`, { authorization: `bearer ${WRITE_KEY}` });
    expect(r.status).toBe(200);
    expect(r.json.accepted).toBe(2);
    expect(r.json.rejected).toEqual([{ index: 2, code: 'invalid_properties', message: expect.any(String) }]);
    const rows = new Map((await s.loggedEvents()).map((x) => [x.event_id, x]));
    expect(rows.get('nd-raw-1')!.raw).toBe(line0);
    expect(rows.get('nd-raw-1')!.properties).toBe('{ "name" : "Home" }');
    expect(rows.get('nd-raw-2')).toMatchObject({ user_id: 'a-nd', anonymous_id: 'a-nd', properties: '{"k":1}', source: 'web', raw: line1 });
  });

  it('answers 400 for an unsupported Content-Encoding and 404 for /v1/live without an engine', async () => {
    const r = await post(`${s.url}/v1/batch`, JSON.stringify({ batch: [track(1)] }), { authorization: basic(), 'content-encoding': 'br' });
    expect(r.status).toBe(400);
    expect(r.json.code).toBe('unsupported_encoding');
    expect((await fetch(`${s.url}/v1/live`)).status).toBe(404);
  });
});

describe('durability and backpressure', () => {
  it('does not answer before the fsync completes, then acks with the offset after onDurable', async () => {
    const g = gatedFsync();
    const s = await startHarness({}, {}, { fsync: g.fsync }, 1);
    try {
      let answered = false;
      const pending = post(`${s.url}/v1/batch`, JSON.stringify({ batch: [track(1), track(2)] }), { authorization: basic() }).then((r) => {
        answered = true;
        return r;
      });
      await g.called;
      await turns();
      expect(answered).toBe(false);
      expect(s.durable).toEqual([]);
      g.open();
      const r = await pending;
      expect(r.status).toBe(200);
      expect(r.json).toMatchObject({ ok: true, accepted: 2, rejected: [], offsets: [{ shard: 0, offset: 0 }] });
      expect(s.durable).toEqual([{ shard: 0, offset: 0, rows: 2 }]);
    } finally {
      g.open();
      await s.close();
    }
  });

  it('group-commits: requests arriving during an fsync share the next record', async () => {
    const g = gatedFsync();
    const s = await startHarness({ groupCommit: { maxRows: 10_000, maxDelayMs: 0 } }, {}, { fsync: g.fsync }, 1);
    try {
      const first = post(`${s.url}/v1/batch`, JSON.stringify({ batch: [track(0)] }), { authorization: basic() });
      await g.called;
      const rest = Array.from({ length: 8 }, (_, i) => post(`${s.url}/v1/batch`, JSON.stringify({ batch: [track(i + 1), track(i + 100)] }), { authorization: basic() }));
      await turns();
      expect(g.calls()).toBe(1);
      g.open();
      expect((await first).json.offsets).toEqual([{ shard: 0, offset: 0 }]);
      for (const r of await Promise.all(rest)) expect(r.json.offsets).toEqual([{ shard: 0, offset: 1 }]);
      expect(s.durable).toEqual([
        { shard: 0, offset: 0, rows: 1 },
        { shard: 0, offset: 1, rows: 16 },
      ]);
    } finally {
      g.open();
      await s.close();
    }
  });

  it('answers 503 + Retry-After while a log has more unsynced bytes than maxLogPendingBytes', async () => {
    const g = gatedFsync();
    const s = await startHarness({ maxLogPendingBytes: 1 }, {}, { fsync: g.fsync }, 1);
    try {
      const first = post(`${s.url}/v1/batch`, JSON.stringify({ batch: [track(1)] }), { authorization: basic() });
      await g.called;
      const refused = await post(`${s.url}/v1/batch`, JSON.stringify({ batch: [track(2)] }), { authorization: basic() });
      expect(refused.status).toBe(503);
      expect(refused.headers.get('retry-after')).toBe('1');
      expect((await fetch(`${s.url}/readyz`)).status).toBe(503);
      const metrics = await (await fetch(`${s.url}/metrics`)).text();
      expect(metrics).toMatch(/sluice_ingest_backpressure_total\{reason="log"\} [1-9]/);
      g.open();
      expect((await first).status).toBe(200);
      expect((await s.loggedEvents()).map((x) => x.event_id)).toEqual(['msg-1']);
    } finally {
      g.open();
      await s.close();
    }
  });

  it('close() stops accepting, waits for in-flight acks, and closes WebSockets', async () => {
    const g = gatedFsync();
    const s = await startHarness({}, {}, { fsync: g.fsync }, 1);
    const { ws } = await openWs(s.server.port);
    const wsClosed = new Promise<number>((r) => ws.once('close', (code) => r(code)));
    const inflight = post(`${s.url}/v1/batch`, JSON.stringify({ batch: [track(1)] }), { authorization: basic() });
    await g.called;
    let closed = false;
    const closing = s.server.close().then(() => (closed = true));
    await turns();
    expect(closed).toBe(false);
    const late = await post(`${s.url}/v1/batch`, JSON.stringify({ batch: [track(2)] }), { authorization: basic() }).catch(() => 'refused' as const);
    if (late !== 'refused') expect(late.status).toBe(503);
    g.open();
    expect((await inflight).status).toBe(200);
    await closing;
    expect(await wsClosed).toBe(1001);
    expect((await s.loggedEvents()).map((x) => x.event_id)).toEqual(['msg-1']);
    await s.close();
  });

  it('reports readiness from deps.ready and serves deps.live (503 starting until it has figures)', async () => {
    let ready = false;
    let live: { eventsPerSecond: number } | undefined;
    const s = await startHarness({}, { ready: () => ready, live: () => live });
    try {
      expect((await fetch(`${s.url}/readyz`)).status).toBe(503);
      ready = true;
      expect((await fetch(`${s.url}/readyz`)).status).toBe(200);
      // The engine has not reported yet (right after its recovery): 503 starting, not 200 `{}`.
      const early = await fetch(`${s.url}/v1/live`);
      expect({ status: early.status, retry: early.headers.get('retry-after'), body: await early.json() }).toMatchObject({ status: 503, retry: '1', body: { code: 'starting' } });
      live = { eventsPerSecond: 12 };
      expect(await (await fetch(`${s.url}/v1/live`)).json()).toEqual({ eventsPerSecond: 12 });
    } finally {
      await s.close();
    }
  });
});

describe('Arrow WebSocket protocol', () => {
  let s: Harness;
  beforeAll(async () => {
    s = await startHarness({ writeKeys: [{ key: WRITE_KEY }, { key: 'arrow-key', source: 'pipeline' }] });
  });
  afterAll(async () => {
    await s.close();
  });

  const ipc = (ids: string[], users: Array<string | null>, times: number[]): Uint8Array =>
    tableToIPC(
      tableFromArrays({
        event_id: ids,
        user_id: users as string[],
        event_type: ids.map(() => 'Application Opened'),
        event_time: Float64Array.from(times),
        country: ids.map((_, i) => (i % 2 ? 'US' : 'DE')),
        properties: ids.map((id) => JSON.stringify({ id })),
      }),
      'stream',
    );

  it('takes a subset of columns, honours {"seq":N}, re-shards rows and acks each message', async () => {
    const { ws, next } = await openWs(s.server.port, { authorization: 'Bearer arrow-key' });
    const now = Date.now();
    ws.send(JSON.stringify({ seq: 41 }));
    const users = Array.from({ length: 30 }, (_, i) => `ws-u-${i}`);
    ws.send(ipc(users.map((u) => `${u}-e`), users, users.map(() => now - 5000)));
    ws.send(ipc(['bad-future', 'ws-ok'], ['u1', 'u2'], [now + 86_400_000, now - 1]));
    const acks = [await next(), await next()].sort((a, b) => Number(a.seq) - Number(b.seq));
    ws.close();
    expect(acks[0]).toMatchObject({ seq: 41, ok: true, accepted: 30, rejected: [] });
    expect(acks[1]).toMatchObject({ seq: 42, ok: true, accepted: 1, rejected: [{ index: 0, code: 'future_timestamp' }] });
    const rows = (await s.loggedEvents()).filter((r) => String(r.event_id).startsWith('ws-'));
    expect(rows).toHaveLength(31);
    for (const r of rows) {
      expect(r._shard).toBe(shardOfUser(String(r.user_id), s.logs.length));
      expect(r.source).toBe('pipeline');
      expect(r.raw).toBeNull();
    }
    const offsets = acks[0]!.offsets as Array<{ shard: number }>;
    expect(new Set(offsets.map((o) => o.shard)).size).toBe(s.logs.length);
    const dlq = await s.deadLetters();
    expect(JSON.parse(String(dlq.find((d) => d.code === 'future_timestamp')!.raw))).toMatchObject({ event_id: 'bad-future', user_id: 'u1' });
  });

  it('refuses messages it cannot read with ok:false and status 400, without closing the socket', async () => {
    const { ws, next } = await openWs(s.server.port);
    ws.send(Buffer.from('not arrow'));
    expect(await next()).toMatchObject({ seq: 0, ok: false, status: 400, code: 'malformed_arrow' });
    ws.send(tableToIPC(tableFromArrays({ user_id: ['u'] }), 'stream'));
    expect(await next()).toMatchObject({ seq: 1, ok: false, status: 400, code: 'invalid_schema' });
    ws.send('hello');
    expect(await next()).toMatchObject({ seq: null, ok: false, code: 'bad_control' }); // not the next binary message's seq
    ws.send(ipc(['after-errors'], ['u'], [Date.now()]));
    expect(await next()).toMatchObject({ seq: 2, ok: true, accepted: 1 });
    ws.close();
  });

  it('accepts the write key as a query parameter and refuses unknown ones with 401', async () => {
    const { ws } = await openWs(s.server.port, {}, `?writeKey=${WRITE_KEY}`);
    ws.close();
    const bad = new WebSocket(`ws://127.0.0.1:${s.server.port}/v1/stream?writeKey=nope`);
    expect(await new Promise<number>((r) => bad.once('unexpected-response', (_q, res) => r(res.statusCode ?? 0)))).toBe(401);
  });
});

describe('bodies and PII on every protocol', () => {
  let s: Harness;
  beforeAll(async () => {
    s = await startHarness({ maxBodyBytes: 32 * 1024, pii: { hash: ['user_id', 'properties.email', 'userId'], drop: ['properties.phone', 'context.ip'], salt: 'pepper' } });
  });
  afterAll(async () => {
    await s.close();
  });

  /** POSTs with Transfer-Encoding: chunked, written in several pieces (no Content-Length). */
  const chunked = (path: string, pieces: string[]): Promise<{ status: number; json: Record<string, unknown> }> =>
    new Promise((resolve, reject) => {
      const req = request(`${s.url}${path}`, { method: 'POST', headers: { authorization: basic(), 'content-type': 'application/json' } }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} }));
      });
      req.on('error', reject);
      for (const p of pieces) req.write(p);
      req.end();
    });

  it('reads chunked bodies piece by piece, and refuses them with 413 once they pass maxBodyBytes', async () => {
    const text = JSON.stringify({ batch: [track(1, { userId: 'chunk-user', messageId: 'chunked-1' })] });
    const pieces = [text.slice(0, 10), text.slice(10, 100), text.slice(100)];
    const ok = await chunked('/v1/batch', pieces);
    expect(ok.status).toBe(200);
    expect(ok.json.accepted).toBe(1);
    const big = await chunked('/v1/batch', Array.from({ length: 40 }, () => 'x'.repeat(1024))).catch(() => ({ status: 413, json: {} }));
    expect(big.status).toBe(413);
  });

  it('masks PII before storing on the Segment, NDJSON and Arrow paths (raw included)', async () => {
    const seg = await post(
      `${s.url}/v1/batch`,
      JSON.stringify({ batch: [track(7, { userId: 'alice', messageId: 'pii-seg', properties: { email: 'a@x.io', phone: '555-0100', keep: 1 }, context: { ip: '10.0.0.1' } })] }),
      { authorization: basic() },
    );
    expect(seg.status).toBe(200);
    const nd = await post(`${s.url}/v1/events`, JSON.stringify({ event_id: 'pii-nd', user_id: 'bob', event_type: 'x', event_time: Date.now(), properties: { email: 'b@x.io', phone: '555-0199' } }), {
      authorization: basic(),
    });
    expect(nd.status).toBe(200);
    const { ws, next } = await openWs(s.server.port);
    ws.send(
      tableToIPC(
        tableFromArrays({ event_id: ['pii-ws'], user_id: ['carol'], event_type: ['x'], event_time: Float64Array.from([Date.now()]), properties: ['{"a":1}'], raw: ['{"secret":"carol"}'] }),
        'stream',
      ),
    );
    expect(await next()).toMatchObject({ ok: true, accepted: 1 });
    ws.close();
    const rows = new Map((await s.loggedEvents()).map((r) => [r.event_id, r]));
    const all = JSON.stringify([...rows.values()]);
    for (const secret of ['alice', 'bob', 'carol', 'a@x.io', 'b@x.io', '555-0100', '555-0199', '10.0.0.1']) expect(all).not.toContain(secret);
    expect(rows.get('pii-seg')!.user_id).toMatch(/^[0-9a-f]{64}$/);
    expect(JSON.parse(String(rows.get('pii-seg')!.properties))).toEqual({ email: expect.stringMatching(/^[0-9a-f]{64}$/), keep: 1 });
    expect(rows.get('pii-nd')!.user_id).toMatch(/^[0-9a-f]{64}$/);
    expect(rows.get('pii-ws')!.user_id).toMatch(/^[0-9a-f]{64}$/);
    // Different users keep different tokens.
    expect(rows.get('pii-seg')!.user_id).not.toBe(rows.get('pii-nd')!.user_id);
  });
});
