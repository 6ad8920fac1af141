/**
 * Table-driven unit tests of ingest's pure parts: option validation (exact messages), strict
 * timestamps, the JSON byte-range scanner, the batch builder and decodeIngestBatch.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Table, tableFromIPC, tableToIPC } from 'apache-arrow';
import { describe, expect, it } from 'vitest';
import { IngestBatchBuilder } from '../../ingest/batch-builder.js';
import { decodeIngestBatch } from '../../ingest/decode-ipc.js';
import { JsonScanner } from '../../ingest/json-scan.js';
import { defaultIngestOptions, validateIngestOptions, type IngestOptionsInput } from '../../ingest/options.js';
import { parseTime } from '../../ingest/parse-time.js';
import { normalizeSegment, parseRawTime, RAW_TIME_MAX_MS } from '../../ingest/normalize.js';
import { uwsIsNative } from '../../ingest/server.js';
import { murmur3Ascii, shardOf } from '../../ingest/shard-of.js';
import { shardOfUser } from '../../common/hash.js';

const keys = { writeKeys: [{ key: 'k' }] };

describe('validateIngestOptions', () => {
  it('fills Segment-like defaults', () => {
    const o = validateIngestOptions(keys);
    expect(o).toMatchObject({
      host: '127.0.0.1',
      port: 8080,
      maxEventBytes: 32 * 1024,
      maxBodyBytes: 500 * 1024,
      maxBatchEvents: 2500,
      maxFutureSkewMs: 600_000,
      minEventTimeMs: Date.UTC(2000, 0, 1),
      maxJsonDepth: 64,
      bodyTimeoutMs: 7_000,
      groupCommit: { maxRows: 8192, maxDelayMs: 2 },
      wsMaxPayloadBytes: 16 * 1024 * 1024,
    });
    expect(defaultIngestOptions().writeKeys).toEqual([]);
  });

  it('accepts the older groupCommitMaxRows spelling and merges nested options', () => {
    const o = validateIngestOptions({ ...keys, groupCommitMaxRows: 100, rateLimit: { burst: 5 }, groupCommit: { maxDelayMs: 0 } });
    expect(o.groupCommit).toEqual({ maxRows: 100, maxDelayMs: 0 });
    expect(o.rateLimit).toEqual({ eventsPerSecond: 1_000_000, burst: 5 });
  });

  it.each<[string, IngestOptionsInput, string]>([
    ['no keys', {}, 'writeKeys must name at least one write key'],
    ['empty key', { writeKeys: [{ key: '' }] }, 'writeKeys entries must have a non-empty key'],
    ['repeated key', { writeKeys: [{ key: 'a' }, { key: 'a' }] }, 'writeKeys must not repeat a key'],
    ['bad port', { ...keys, port: 70000 }, 'port must be an integer in 0..65535, got 70000'],
    ['empty host', { ...keys, host: '' }, 'host must be a non-empty address, got ""'],
    ['zero event bytes', { ...keys, maxEventBytes: 0 }, 'maxEventBytes must be a positive integer, got 0'],
    ['fractional body bytes', { ...keys, maxBodyBytes: 1.5 }, 'maxBodyBytes must be a positive integer, got 1.5'],
    ['zero batch', { ...keys, maxBatchEvents: 0 }, 'maxBatchEvents must be a positive integer, got 0'],
    ['ws payload', { ...keys, wsMaxPayloadBytes: -1 }, 'wsMaxPayloadBytes must be a positive integer, got -1'],
    ['group rows', { ...keys, groupCommit: { maxRows: 0 } }, 'groupCommit.maxRows must be a positive integer, got 0'],
    ['group delay', { ...keys, groupCommit: { maxDelayMs: -1 } }, 'groupCommit.maxDelayMs must be a number of ms in 0..10000, got -1'],
    ['skew', { ...keys, maxFutureSkewMs: -5 }, 'maxFutureSkewMs must be a number ≥ 0, got -5'],
    ['min event time', { ...keys, minEventTimeMs: -1 }, 'minEventTimeMs must be epoch milliseconds ≥ 0 (1970-01-01), got -1'],
    ['json depth', { ...keys, maxJsonDepth: 1 }, 'maxJsonDepth must be an integer in 2..1000, got 1'],
    ['body timeout', { ...keys, bodyTimeoutMs: 50 }, 'bodyTimeoutMs must be an integer number of ms in 100..600000, got 50'],
    ['rate', { ...keys, rateLimit: { eventsPerSecond: 0 } }, 'rateLimit needs eventsPerSecond > 0 and burst ≥ 1, got {"eventsPerSecond":0,"burst":2000000}'],
    ['pii path', { ...keys, pii: { drop: ['context..ip'] } }, 'pii.drop must be a list of dot-separated paths such as "properties.email", got ["context..ip"]'],
    ['pii salt', { ...keys, pii: { hash: ['properties.email'] } }, 'pii.salt must be set (a secret string) when pii.hash lists fields to hash'],
    ['unknown option', { ...keys, maxBody: 1 } as IngestOptionsInput, 'unknown ingest option "maxBody"'],
  ])('rejects %s', (_name, input, message) => {
    expect(() => validateIngestOptions(input)).toThrow(message);
  });
});

describe('parseTime', () => {
  it.each<[unknown, number]>([
    ['2024-05-01T12:00:00.000Z', Date.UTC(2024, 4, 1, 12)],
    ['2024-05-01T12:00:00Z', Date.UTC(2024, 4, 1, 12)],
    ['2024-05-01T12:00:00.123456Z', Date.UTC(2024, 4, 1, 12, 0, 0, 123)],
    ['2024-05-01T12:00:00.5+02:00', Date.UTC(2024, 4, 1, 10, 0, 0, 500)],
    ['2024-05-01T12:00:00-0130', Date.UTC(2024, 4, 1, 13, 30)],
    ['2024-05-01T12:00+05', Date.UTC(2024, 4, 1, 7)],
    ['2024-05-01 12:00:00', Date.UTC(2024, 4, 1, 12)],
    ['2024-05-01', Date.UTC(2024, 4, 1)],
    ['2024-02-29T00:00:00Z', Date.UTC(2024, 1, 29)],
    ['1969-12-31T23:59:59Z', -1000],
    [1714564800000, 1714564800000],
    // A fraction of a ms is dropped, as ISO's sub-milliseconds are (it was rounded).
    [1714564800000.6, 1714564800000],
    [1767225600123.7, 1767225600123],
    ['2026-01-01T00:00:00.123789Z', 1767225600123],
  ])('parses %j', (input, expected) => {
    expect(parseTime(input)).toBe(expected);
  });

  it.each<unknown>(['yesterday', '2024-13-01', '2023-02-29', '2024-05-01T25:00:00Z', '2024-05-01T12:00:00X', '2024-05-01T12', 'Tue, 1 May 2024', '', null, {}, Number.NaN, Infinity])(
    'rejects %j',
    (input) => {
      expect(parseTime(input)).toBeNaN();
    },
  );

  it("floors a number's fraction at the raw range's edges as ISO truncates its digits: 9999-12-31T23:59:59.999 + 0.5 ms is in range, 0.5 ms before 1970 is not", () => {
    expect([parseRawTime(RAW_TIME_MAX_MS + 0.5), parseRawTime('9999-12-31T23:59:59.9995Z')]).toEqual([RAW_TIME_MAX_MS, RAW_TIME_MAX_MS]);
    expect([parseRawTime(-0.5), parseRawTime(0.5)]).toEqual([Number.NaN, 0]);
  });

  it('agrees with Date.parse on ISO strings with offsets', () => {
    for (const s of ['2021-03-04T05:06:07.089Z', '1999-12-31T23:59:59.999-08:00', '2030-01-01T00:00:00+14:00']) expect(parseTime(s)).toBe(Date.parse(s));
  });
});

describe('shardOf', () => {
  it('equals shardOfUser (murmur3 of the UTF-8 bytes) for ASCII, non-ASCII, long and short ids', () => {
    let x = 12345;
    const rnd = (): number => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 4294967296);
    const ids = ['', 'a', 'ab', 'abc', 'abcd', 'user-1', 'ü', 'naïve-user', '日本語のユーザー', 'x'.repeat(5000), '😀-emoji'];
    for (let i = 0; i < 2000; i++) ids.push(Array.from({ length: Math.floor(rnd() * 40) }, () => String.fromCharCode(32 + Math.floor(rnd() * (rnd() < 0.05 ? 2000 : 95)))).join(''));
    for (const id of ids) for (const shards of [1, 3, 8]) expect(shardOf(id, shards)).toBe(shardOfUser(id, shards));
    expect(murmur3Ascii('ü')).toBe(-1);
  });
});

describe('JsonScanner', () => {
  const text = (b: Buffer, s: number, e: number): string => b.toString('utf8', s, e);

  it('finds every batch item and its properties/traits exactly as written', () => {
    const body = Buffer.from(
      '{ "context" : {"batch": [1]}, "batch" :[ {"type":"track","properties" : { "a" : [1, {"b":"}]\\""}], "ü":"ß" } , "x":1 },\n' +
        '  {"traits":{"t":true},"properties":null} , "str\\"ing" , 42 , [ {} ] ], "sentAt": "2024-01-01T00:00:00Z" }',
    );
    const parsed = JSON.parse(body.toString()) as { batch: unknown[] };
    const s = new JsonScanner();
    expect(s.scanBatch(body, Buffer.from('batch'))).toBe(true);
    expect(s.count).toBe(parsed.batch.length);
    for (let i = 0; i < s.count; i++) expect(JSON.parse(text(body, s.itemStart[i]!, s.itemEnd[i]!))).toEqual(parsed.batch[i]);
    expect(text(body, s.propsStart[0]!, s.propsEnd[0]!)).toBe('{ "a" : [1, {"b":"}]\\""}], "ü":"ß" }');
    expect(text(body, s.traitsStart[1]!, s.traitsEnd[1]!)).toBe('{"t":true}');
    expect(text(body, s.propsStart[1]!, s.propsEnd[1]!)).toBe('null');
    expect(s.propsStart[2]).toBe(-1);
  });

  it('uses the last of duplicate batch keys, like JSON.parse', () => {
    const body = Buffer.from('{"batch":[{"a":1}],"batch":[{"b":2},{"c":3}]}');
    const s = new JsonScanner();
    expect(s.scanBatch(body, Buffer.from('batch'))).toBe(true);
    expect(s.count).toBe(2);
    expect(text(body, s.itemStart[1]!, s.itemEnd[1]!)).toBe('{"c":3}');
  });

  it('reports "not found" for bodies without a batch array', () => {
    const s = new JsonScanner();
    expect(s.scanBatch(Buffer.from('{"batch":3}'), Buffer.from('batch'))).toBe(false);
    expect(s.scanBatch(Buffer.from('[1,2]'), Buffer.from('batch'))).toBe(false);
  });

  it('scans a single object within a range', () => {
    const body = Buffer.from('xx  {"event_type":"a","properties":{"k":"v"}}  \nyy');
    const s = new JsonScanner();
    expect(s.scanObject(body, 2, body.indexOf('\n'))).toBe(true);
    expect(text(body, s.itemStart[0]!, s.itemEnd[0]!)).toBe('{"event_type":"a","properties":{"k":"v"}}');
    expect(text(body, s.propsStart[0]!, s.propsEnd[0]!)).toBe('{"k":"v"}');
  });

  it('finds the same ranges at every buffer alignment (word-at-a-time string skipping)', () => {
    const text = '{"batch":[{"a":"x\\\\\\"y\\"zzzzzzzzz","properties":{"k":"\\"}{]["}},{"properties":["\\\\"]}]}';
    const parsed = JSON.parse(text) as { batch: unknown[] };
    for (let shift = 0; shift < 8; shift++) {
      const backing = Buffer.alloc(text.length + 8);
      backing.write(text, shift);
      const body = backing.subarray(shift, shift + Buffer.byteLength(text));
      const s = new JsonScanner();
      expect(s.scanBatch(body, Buffer.from('batch'))).toBe(true);
      expect(s.count).toBe(2);
      for (let i = 0; i < 2; i++) expect(JSON.parse(body.toString('utf8', s.itemStart[i]!, s.itemEnd[i]!))).toEqual(parsed.batch[i]);
      expect(JSON.parse(body.toString('utf8', s.propsStart[0]!, s.propsEnd[0]!))).toEqual({ k: '"}{][' });
    }
  });

  it('grows past 64 items', () => {
    const items = Array.from({ length: 300 }, (_, i) => ({ i, properties: { i } }));
    const body = Buffer.from(JSON.stringify({ batch: items }));
    const s = new JsonScanner();
    expect(s.scanBatch(body, Buffer.from('batch'))).toBe(true);
    expect(s.count).toBe(300);
    expect(text(body, s.propsStart[299]!, s.propsEnd[299]!)).toBe('{"i":299}');
  });
});

describe('IngestBatchBuilder and decodeIngestBatch', () => {
  const ctx = { writeKey: 'k', source: 'segment', receivedAt: Date.UTC(2024, 0, 1), maxFutureSkewMs: 600_000, maxEventBytes: 32_768, pii: { hash: [], drop: [], salt: '' } };

  it('round-trips rows through IPC, growing buffers and reusing the builder', () => {
    const b = new IngestBatchBuilder(10_000);
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 1000; i++) {
        const r = normalizeSegment(
          { type: 'track', event: i % 2 ? 'A' : 'B', userId: `ü-${i}`, messageId: `m-${round}-${i}`, timestamp: Date.UTC(2023, 11, 31) + i, properties: { i, pad: 'x'.repeat(i % 700) }, context: i % 3 ? { device: { type: 'ios' } } : undefined },
          undefined,
          undefined,
          ctx,
        );
        if (!r.ok) throw new Error(r.message);
        b.push(r.event);
      }
      const batch = decodeIngestBatch(b.toIPC());
      b.reset();
      expect(batch.numRows).toBe(1000);
      const row = batch.get(999)!.toJSON() as Record<string, unknown>;
      expect(row).toMatchObject({ event_id: `m-${round}-999`, user_id: 'ü-999', event_type: 'A', device_type: null, source: 'segment', session_id: null });
      expect(Number(row.event_time)).toBe(Date.UTC(2023, 11, 31) + 999);
      expect(Number(row.received_at)).toBe(ctx.receivedAt);
      expect(JSON.parse(String(row.properties))).toEqual({ i: 999, pad: 'x'.repeat(299) });
      expect(batch.get(998)!.toJSON().device_type).toBe('ios');
    }
  });

  it.each([0, 1, 9, 257])('writes the same stream content as Arrow JS’s own writer (%i rows, nulls, unicode, negative times)', (n) => {
    const b = new IngestBatchBuilder(1000);
    for (let i = 0; i < n; i++) {
      const r = normalizeSegment(
        {
          type: 'track',
          event: `e${i % 5}`,
          userId: `ü${i}`,
          anonymousId: i % 3 ? `a${i}` : undefined,
          messageId: `m${i}`,
          timestamp: Date.UTC(2023, 0, 1) + i,
          context: i % 2 ? { device: { type: 'ios' }, location: { country: 'DE' }, os: { name: '日本' } } : undefined,
          properties: i % 4 ? { i } : undefined,
        },
        undefined,
        undefined,
        ctx,
      );
      if (!r.ok) throw new Error(r.message);
      // Ingest rejects such times now; the writer must still encode negative int64s like Arrow JS.
      r.event.event_time = -5000 + i * 1e9;
      b.push(r.event);
    }
    const json = (t: Table): string => JSON.stringify(t.toArray().map((r) => r.toJSON()), (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v));
    const mine = tableFromIPC(b.toIPC());
    const reference = tableFromIPC(tableToIPC(new Table([b.build()]), 'stream'));
    expect(mine.numRows).toBe(n);
    expect(mine.schema.fields.map((f) => `${f.name}:${String(f.type)}:${f.nullable}`)).toEqual(reference.schema.fields.map((f) => `${f.name}:${String(f.type)}:${f.nullable}`));
    expect(json(mine)).toBe(json(reference));
  });

  it('refuses bytes that are not one ingest batch', () => {
    expect(() => decodeIngestBatch(new Uint8Array([1, 2, 3]))).toThrow();
  });

  it('loaded the native uWebSockets.js build', () => {
    expect(uwsIsNative()).toBe(true);
  });
});

describe('the ack thread’s event-loop delay in /metrics', () => {
  const quantile = async (q: string): Promise<number> => {
    const { ingestMetrics } = await import('../../ingest/metrics.js');
    const m = await ingestMetrics.eventLoopDelay.get();
    return m.values.find((v) => v.labels.quantile === q)?.value ?? Number.NaN;
  };

  it('is the delay past the sampling timer’s own period: an idle loop reads near 0, a 60 ms block as ≥ 50 ms', async () => {
    await quantile('max'); // reset: a scrape starts a new window
    await new Promise((r) => setTimeout(r, 500));
    // Idle, the 5 ms timer runs on time; the histogram's raw figure would be ≥ 5 ms here.
    expect(await quantile('0.5')).toBeLessThan(0.004);
    // Node's histogram records nothing for the first interval after a reset (the scrape above).
    await new Promise((r) => setTimeout(r, 15));
    await new Promise<void>((resolve) =>
      setImmediate(() => {
        const until = performance.now() + 60;
        while (performance.now() < until) {
          // busy
        }
        resolve();
      }),
    );
    await new Promise((r) => setTimeout(r, 20));
    expect(await quantile('max')).toBeGreaterThanOrEqual(0.05);
  });
});

describe('the ack thread’s GC pauses in /metrics', () => {
  const counts = async (): Promise<Map<string, number>> => {
    const { ingestMetrics } = await import('../../ingest/metrics.js');
    const m = await ingestMetrics.gcPauseSeconds.get();
    return new Map(m.values.filter((v) => v.metricName === 'sluice_ingest_gc_pause_seconds_count').map((v) => [String(v.labels.kind), v.value]));
  };

  it('counts scavenges as minor and a full collection as major, with their pause times', async () => {
    const before = await counts();
    // Short-lived garbage that escapes into an array (so no optimizer can drop the allocations): scavenges.
    let keep: Array<{ i: number; s: string }> = [];
    let made = 0;
    for (let i = 0; i < 2_000_000; i++) {
      keep.push({ i, s: `x${i}` });
      if (keep.length === 10_000) {
        made += keep.length;
        keep = [];
      }
    }
    expect(made + keep.length).toBe(2_000_000);
    // A full mark-compact, on demand (the flag exposes gc() to contexts created after it).
    setFlagsFromString('--expose-gc');
    (runInNewContext('gc') as () => void)();
    // The observer's entries are delivered asynchronously: wait for them (bounded).
    const grew = (after: Map<string, number>, kind: string) => (after.get(kind) ?? 0) - (before.get(kind) ?? 0);
    let after = await counts();
    for (let i = 0; i < 100 && (grew(after, 'minor') === 0 || grew(after, 'major') === 0); i++) {
      await new Promise((r) => setTimeout(r, 20));
      after = await counts();
    }
    expect(grew(after, 'minor')).toBeGreaterThan(0);
    expect(grew(after, 'major')).toBeGreaterThanOrEqual(1);
    const { ingestMetrics } = await import('../../ingest/metrics.js');
    const sum = (await ingestMetrics.gcPauseSeconds.get()).values.find((v) => v.metricName === 'sluice_ingest_gc_pause_seconds_sum' && v.labels.kind === 'major');
    expect(sum?.value).toBeGreaterThan(0);
  });
});
