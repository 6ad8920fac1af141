/**
 * Seeded fuzzing (fast-check) of the three protocol decoders through the REAL server on
 * loopback, and of the JSON scanner as a unit: truncations, bit flips, wrong types, invalid
 * UTF-8, huge numbers, deep nesting, corrupt gzip, corrupt IPC. Asserted: the server stays up,
 * answers are 4xx or per-event rejects (no 5xx other than 503), and good events interleaved with
 * bad ones are accepted. Bounded: fixed seeds and run counts, each request with a timeout.
 */
import fc from 'fast-check';
import { gzipSync } from 'node:zlib';
import { tableFromArrays, tableToIPC } from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonDepth, JsonScanner } from '../../ingest/json-scan.js';
import { checkIpcStream } from '../../ingest/ipc-guard.js';
import { basic, recent, startHarness, track, WRITE_KEY, type Harness } from './harness.js';
import { openWs } from './ws-client.js';

/** Override with FUZZ_SEED=N to explore further; the default keeps `npm test` deterministic. */
const SEED = Number(process.env.FUZZ_SEED ?? 20261202);
const RUNS = 120;

/** POST with a 10 s timeout; returns status and parsed JSON (or the text). */
async function send(url: string, body: Uint8Array | string, headers: Record<string, string>): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(url, { method: 'POST', body, headers, signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = { text };
  }
  return { status: res.status, json };
}

const OK_STATUSES = new Set([200, 400, 413]);

/** Hostile JSON-ish values: wrong types, huge numbers, deep nesting, long strings, lone surrogates. */
const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.jsonValue({ maxDepth: 4 }),
  fc.constantFrom(1e16, 9.3e18, 1e300, -1e300, 9007199254740993, -1e18, 0, -0, 1.5, Number.MAX_VALUE, Number.MIN_VALUE),
  fc.constantFrom('', '\u0000', '\ud800', '\udfff\ud800', 'x'.repeat(300), '2026-13-45T99:99:99Z', '9999-12-31T23:59:59.999Z', '0000-01-01'),
  fc.integer({ min: 1, max: 200 }).map((n) => JSON.parse('['.repeat(n) + ']'.repeat(n)) as unknown),
  fc.array(fc.anything({ maxDepth: 2 }), { maxLength: 3 }),
);

/** A Segment item with some of its fields replaced by hostile values. */
const hostileItem = fc.record({ fields: fc.subarray(['type', 'event', 'userId', 'anonymousId', 'messageId', 'timestamp', 'sentAt', 'originalTimestamp', 'properties', 'traits', 'context', 'integrations', 'name'], { minLength: 1 }), values: fc.array(hostileValue, { minLength: 13, maxLength: 13 }) }).map(({ fields, values }) => {
  const item: Record<string, unknown> = { type: 'track', event: 'Fuzzed', userId: 'fz', timestamp: recent() };
  fields.forEach((f, i) => (item[f] = values[i]));
  return item;
});

/** Splices invalid UTF-8 bytes into a JSON string value of `text` (after the first `"fz`). */
function withInvalidUtf8(text: string, bytes: readonly number[]): Buffer {
  const at = text.indexOf('"fz');
  if (at < 0) return Buffer.from(text);
  return Buffer.concat([Buffer.from(text.slice(0, at + 1)), Buffer.from(bytes), Buffer.from(text.slice(at + 1))]);
}
const invalidUtf8Bytes = fc.constantFrom([0xff], [0xc3, 0x28], [0xe2, 0x82], [0xf0, 0x28, 0x8c, 0x28], [0x80], [0xed, 0xa0, 0x80], [0xc0, 0xaf]);

/** Mutations of a valid body: truncation, bit flips, inserted or deleted bytes. */
const mutation = fc.oneof(
  fc.record({ kind: fc.constant('truncate' as const), at: fc.double({ min: 0, max: 1, noNaN: true }) }),
  fc.record({ kind: fc.constant('flip' as const), at: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 1, maxLength: 8 }), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.double({ min: 0, max: 1, noNaN: true }), bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
  fc.record({ kind: fc.constant('int64' as const), at: fc.double({ min: 0, max: 1, noNaN: true }), value: fc.constantFrom(2n ** 31n, 2n ** 40n, 2n ** 62n, -1n, 2n ** 63n - 1n) }),
);
type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never;

function mutate(src: Uint8Array, m: Mutation): Buffer {
  const b = Buffer.from(src);
  if (b.length === 0) return b;
  const pos = (f: number): number => Math.min(b.length - 1, Math.floor(f * b.length));
  switch (m.kind) {
    case 'truncate':
      return b.subarray(0, pos(m.at));
    case 'flip':
      for (const f of m.at) b[pos(f)]! ^= 1 << m.bit;
      return b;
    case 'insert':
      return Buffer.concat([b.subarray(0, pos(m.at)), Buffer.from(m.bytes), b.subarray(pos(m.at))]);
    case 'int64': {
      const at = pos(m.at) & ~7;
      if (at + 8 <= b.length) b.writeBigInt64LE(BigInt.asIntN(64, m.value), at);
      return b;
    }
  }
}

describe('fuzzing the real server', () => {
  let s: Harness;
  beforeAll(async () => {
    s = await startHarness({ logger: undefined });
  });
  afterAll(async () => {
    await s.close();
  });

  const healthy = async (): Promise<void> => {
    const h = await fetch(`${s.url}/healthz`, { signal: AbortSignal.timeout(5000) });
    expect(h.status).toBe(200);
  };

  it('Segment: a hostile item between two good ones — the good ones are accepted, the answer is 200', async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(hostileItem, fc.option(invalidUtf8Bytes, { nil: undefined }), async (item, bad) => {
        n++;
        const goodA = JSON.stringify(track(n, { messageId: `fz-a-${n}` }));
        const goodB = JSON.stringify(track(n + 1, { messageId: `fz-b-${n}` }));
        const text = JSON.stringify(item);
        const middle = bad ? withInvalidUtf8(text, bad) : Buffer.from(text);
        const body = Buffer.concat([Buffer.from(`{"batch":[${goodA},`), middle, Buffer.from(`,${goodB}]}`)]);
        const r = await send(`${s.url}/v1/batch`, body, { authorization: basic(), 'content-type': 'application/json' });
        expect(r.status, JSON.stringify(r.json)).toBe(200);
        const rejected = (r.json.rejected as Array<{ index: number }>).map((x) => x.index);
        expect(rejected).not.toContain(0);
        expect(rejected).not.toContain(2);
        expect(r.json.accepted).toBeGreaterThanOrEqual(2);
      }),
      { seed: SEED, numRuns: RUNS },
    );
    await healthy();
  });

  it('Segment and NDJSON: mutated bodies (truncated, bit-flipped, spliced, gzip corrupted) get 200 with per-event rejects or a 4xx, never a 5xx', async () => {
    const segBody = JSON.stringify({ batch: [track(1), track(2, { properties: { nested: { a: [1, 2, { b: 'ü' }] } } }), track(3)], sentAt: new Date().toISOString() });
    const ndBody = [1, 2, 3].map((i) => JSON.stringify({ event_id: `nd-fz-${i}`, user_id: `u${i}`, event_type: 'x', event_time: Date.now() - i, country: 'DE', properties: { i } })).join('\n');
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('segment', 'ndjson'), mutation, fc.boolean(), async (protocol, m, gzip) => {
        const src = Buffer.from(protocol === 'segment' ? segBody : ndBody);
        let body: Buffer;
        const headers: Record<string, string> = { 'content-type': 'application/json', authorization: protocol === 'segment' ? basic() : `Bearer ${WRITE_KEY}` };
        if (gzip) {
          body = mutate(gzipSync(src), m);
          headers['content-encoding'] = 'gzip';
        } else body = mutate(src, m);
        const r = await send(`${s.url}/v1/${protocol === 'segment' ? 'batch' : 'events'}`, body, headers);
        expect(OK_STATUSES.has(r.status) || r.status === 401, `${r.status} ${JSON.stringify(r.json)}`).toBe(true);
      }),
      { seed: SEED + 1, numRuns: RUNS * 2 },
    );
    await healthy();
  });

  it('NDJSON: hostile lines between good lines — the good lines are accepted', async () => {
    let n = 0;
    const hostileLine = fc.oneof(
      hostileValue.map((v) => Buffer.from(JSON.stringify(v) ?? 'null')),
      fc.record({ event_type: hostileValue, user_id: hostileValue, event_time: hostileValue, country: hostileValue, properties: hostileValue }).map((o) => Buffer.from(JSON.stringify(o))),
      fc.tuple(invalidUtf8Bytes).map(([bytes]) => withInvalidUtf8(JSON.stringify({ event_type: 'x', user_id: 'fz', event_time: Date.now(), country: 'fz' }), bytes)),
      fc.integer({ min: 1, max: 20_000 }).map((k) => Buffer.from('['.repeat(k) + ']'.repeat(k))),
      fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b.filter((c) => c !== 0x0a))),
    );
    await fc.assert(
      fc.asyncProperty(hostileLine, async (line) => {
        n++;
        const good = (tag: string): string => JSON.stringify({ event_id: `nd-${tag}-${n}`, user_id: 'u', event_type: 'x', event_time: Date.now() - 5 });
        const body = Buffer.concat([Buffer.from(`${good('a')}\n`), line, Buffer.from(`\n${good('b')}\n`)]);
        const r = await send(`${s.url}/v1/events`, body, { authorization: `Bearer ${WRITE_KEY}` });
        expect(r.status, JSON.stringify(r.json)).toBe(200);
        const rejected = (r.json.rejected as Array<{ index: number }>).map((x) => x.index);
        expect(rejected).not.toContain(0);
        expect(r.json.accepted).toBeGreaterThanOrEqual(2);
      }),
      { seed: SEED + 2, numRuns: RUNS },
    );
    await healthy();
  });

  it('Arrow over WebSocket: corrupt IPC gets ok:false 400/413 or per-row rejects, the socket stays open, and the next good message is accepted', async () => {
    const now = Date.now();
    const good = tableToIPC(
      tableFromArrays({
        event_id: ['w1', 'w2', 'w3'],
        user_id: ['u1', 'u2', 'u3'],
        event_type: ['a', 'b', 'c'],
        event_time: Float64Array.of(now - 3, now - 2, now - 1),
        country: ['DE', 'US', 'BR'],
        properties: ['{"a":1}', '{}', '{"b":[1]}'],
      }),
      'stream',
    );
    const client = await openWs(s.server.port);
    await fc.assert(
      fc.asyncProperty(mutation, async (m) => {
        const bytes = mutate(good, m);
        client.ws.send(bytes);
        const ack = await client.next(10_000);
        if (ack.ok !== true) {
          expect([400, 413], JSON.stringify(ack)).toContain(ack.status);
          // What the guard passed, Arrow JS must have decoded: no message reached a 500.
        }
        expect(client.closed()).toBeUndefined();
      }),
      { seed: SEED + 3, numRuns: RUNS * 3 },
    );
    client.ws.send(good);
    expect(await client.next()).toMatchObject({ ok: true, accepted: 3 });
    client.ws.close();
    await healthy();
  });
});

describe('fuzzing the JSON scanner and the IPC guard (units)', () => {
  /** Depth as the scanner defines it: scalars 0, containers 1 + deepest child. */
  const depthOf = (v: unknown): number => {
    if (typeof v !== 'object' || v === null) return 0;
    let d = 0;
    for (const c of Object.values(v)) d = Math.max(d, depthOf(c));
    return d + 1;
  };

  it('scanBatch finds every item exactly as JSON.parse reads it, with its depth', () => {
    const scanner = new JsonScanner();
    fc.assert(
      fc.property(fc.array(fc.jsonValue({ maxDepth: 6 }), { maxLength: 20 }), fc.jsonValue({ maxDepth: 3 }), (items, ctx) => {
        const body = Buffer.from(JSON.stringify({ context: ctx, batch: items }));
        expect(scanner.scanBatch(body, Buffer.from('batch'))).toBe(true);
        expect(scanner.count).toBe(items.length);
        for (let i = 0; i < items.length; i++) {
          expect(JSON.parse(body.toString('utf8', scanner.itemStart[i]!, scanner.itemEnd[i]!))).toEqual(JSON.parse(JSON.stringify(items[i])));
          expect(scanner.itemDepth[i]).toBe(depthOf(items[i]));
        }
        expect(scanner.envelopeDepth).toBe(Math.max(2, depthOf(ctx) + 1));
      }),
      { seed: SEED + 4, numRuns: 300 },
    );
  });

  it('the scanner and jsonDepth never throw or loop on arbitrary bytes', () => {
    const scanner = new JsonScanner();
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        const b = Buffer.from(bytes);
        scanner.scanBatch(b, Buffer.from('batch'));
        scanner.scanObject(b);
        const d = jsonDepth(b);
        expect(d).toBeGreaterThanOrEqual(-1);
      }),
      { seed: SEED + 5, numRuns: 2000 },
    );
  });

  it('the IPC guard never throws on corrupt streams, and what it passes Arrow JS decodes within the row limit', async () => {
    const { tableFromIPC } = await import('apache-arrow');
    const good = tableToIPC(tableFromArrays({ user_id: ['u1', 'u2'], event_type: ['a', 'b'], event_time: Float64Array.of(1, 2), n: Int32Array.of(1, 2) }), 'stream');
    fc.assert(
      fc.property(fc.array(mutation, { minLength: 1, maxLength: 3 }), (ms) => {
        let bytes: Buffer = Buffer.from(good);
        for (const m of ms) bytes = mutate(bytes, m);
        const r = checkIpcStream(bytes, { maxRows: 2500 });
        if (!r.ok) return;
        expect(r.rows).toBeLessThanOrEqual(2500);
        let rows = -1;
        try {
          rows = tableFromIPC(bytes).numRows;
        } catch {
          return; // a clean 400 in the server
        }
        expect(rows).toBeLessThanOrEqual(2500);
      }),
      { seed: SEED + 6, numRuns: 3000 },
    );
  });
});
