/**
 * Validation rules, one row per rule, both ways: the event that passes and the one rejected with
 * its code (docs/VALIDATION.md). Unit rows run normalizeSegmentItem / normalizeCanonical; the
 * server rows send the same tables through the real server (Segment batch, NDJSON, Arrow) and
 * check the per-event codes in the 200 answer and the DLQ.
 */
import { tableFromArrays, tableToIPC, Table, vectorFromArray, Bool, TimestampMillisecond, makeData, makeVector, Struct, RecordBatch, Field, Schema, Utf8, Int64 } from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { normalizeCanonical, normalizeSegment, type NormalizeContext } from '../../ingest/normalize.js';
import { basic, post, startHarness, WRITE_KEY, type Harness } from './harness.js';
import { openWs } from './ws-client.js';

const NOW = Date.UTC(2026, 4, 10, 12, 0, 0);
const ctx: NormalizeContext = { writeKey: 'k', source: 'segment', receivedAt: NOW, maxFutureSkewMs: 600_000, maxEventBytes: 32_768, pii: { hash: [], drop: [], salt: '' } };
const iso = (ms: number): string => new Date(ms).toISOString();

const track = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({ type: 'track', event: 'Opened', userId: 'u1', messageId: 'm1', timestamp: iso(NOW - 1000), ...extra });

/** [rule, passing event, rejected event, code]. */
const SEGMENT_RULES: Array<[string, Record<string, unknown>, unknown, string]> = [
  ['the event is an object', track(), ['not', 'an', 'object'], 'not_an_object'],
  ['type is present in a batch', track(), { event: 'x', userId: 'u' }, 'missing_type'],
  ['type is a known call', track({ type: 'screen', name: 'Home' }), track({ type: 'purchase' }), 'invalid_type'],
  ['type is a string', track({ type: 'identify' }), track({ type: 7 }), 'invalid_type'],
  ['track has an event name', track(), track({ event: '' }), 'missing_event'],
  ['event is a string', track({ event: 'Signed Up' }), track({ event: 42 }), 'invalid_event'],
  ['event is at most 255 characters', track({ event: 'e'.repeat(255) }), track({ event: 'e'.repeat(256) }), 'invalid_event'],
  ['userId is a string or a number', track({ userId: 12345 }), track({ userId: { id: 1 } }), 'invalid_user_id'],
  ['userId is not a boolean', track({ userId: 'u' }), track({ userId: true }), 'invalid_user_id'],
  // A JSON number past 2^53 − 1 reaches JavaScript rounded: 1234567890123456789 and …788 would be one user.
  ['a numeric userId is at most 2^53 − 1', track({ userId: Number.MAX_SAFE_INTEGER }), track({ userId: 1234567890123456789 }), 'invalid_user_id'],
  ['a numeric anonymousId is at most 2^53 − 1', track({ userId: null, anonymousId: -Number.MAX_SAFE_INTEGER }), track({ userId: null, anonymousId: 2 ** 53 }), 'invalid_anonymous_id'],
  ['anonymousId is a string or a number', track({ userId: null, anonymousId: 'a1' }), track({ anonymousId: ['a'] }), 'invalid_anonymous_id'],
  ['there is a user', track({ userId: undefined, anonymousId: 'a1' }), track({ userId: undefined }), 'missing_user'],
  ['messageId is a string', track({ messageId: 'abc' }), track({ messageId: 123 }), 'invalid_message_id'],
  ['timestamp is ISO-8601', track({ timestamp: '2026-05-10T11:00:00+02:00' }), track({ timestamp: 'yesterday' }), 'invalid_timestamp'],
  ['timestamp is not 1e16', track({ timestamp: NOW - 5 }), track({ timestamp: 1e16 }), 'invalid_timestamp'],
  ['timestamp is not 9.3e18', track(), track({ timestamp: 9.3e18 }), 'invalid_timestamp'],
  ['timestamp is not 1e300', track(), track({ timestamp: 1e300 }), 'invalid_timestamp'],
  ['timestamp is not 2^53 + 1', track(), track({ timestamp: 9007199254740993 }), 'invalid_timestamp'],
  ['timestamp is not −1e18', track(), track({ timestamp: -1e18 }), 'invalid_timestamp'],
  ['timestamp is not −1e300', track(), track({ timestamp: -1e300 }), 'invalid_timestamp'],
  ['timestamp is not an object', track(), track({ timestamp: { t: 1 } }), 'invalid_timestamp'],
  ['event time is after 2000-01-01', track({ timestamp: '2000-01-01T00:00:00Z' }), track({ timestamp: '1999-12-31T23:59:59Z' }), 'timestamp_too_old'],
  ['event time is at most maxFutureSkewMs ahead', track({ timestamp: iso(NOW + 599_000) }), track({ timestamp: iso(NOW + 601_000) }), 'future_timestamp'],
  ['originalTimestamp is ISO-8601', track({ timestamp: undefined, originalTimestamp: iso(NOW - 9) }), track({ originalTimestamp: 'later' }), 'invalid_original_timestamp'],
  ['sentAt is ISO-8601', track({ sentAt: iso(NOW) }), track({ sentAt: 'soon' }), 'invalid_sent_at'],
  ['sentAt is not −1e18', track({ sentAt: NOW }), track({ sentAt: -1e18 }), 'invalid_sent_at'],
  // A device clock reset to 1970: corrected by sentAt into the window.
  ['skew correction brings a 1970 clock into the window', track({ timestamp: 1000, sentAt: 2000 }), track({ timestamp: 1000, sentAt: 2000 + 30 * 365 * 86_400_000 }), 'timestamp_too_old'],
  ['the corrected time is not in the future', track({ timestamp: iso(NOW - 60_000), sentAt: iso(NOW - 50_000) }), track({ timestamp: iso(NOW), sentAt: iso(NOW - 3_600_000) }), 'future_timestamp'],
  ['properties is an object', track({ properties: { a: 1 } }), track({ properties: 'not-an-object' }), 'invalid_properties'],
  ['properties is not an array', track({ properties: {} }), track({ properties: [1, 2] }), 'invalid_properties'],
  ['traits is an object', { type: 'identify', userId: 'u', traits: { plan: 'pro' } }, { type: 'identify', userId: 'u', traits: 'pro' }, 'invalid_traits'],
  ['context.traits is an object when used', { type: 'identify', userId: 'u', context: { traits: { a: 1 } } }, { type: 'identify', userId: 'u', context: { traits: [1] } }, 'invalid_traits'],
  ['context is an object', track({ context: { ip: '1.2.3.4' } }), track({ context: 'str' }), 'invalid_context'],
  ['integrations is an object', track({ integrations: { All: true } }), track({ integrations: ['All'] }), 'invalid_integrations'],
  ['context.device.type is a string', track({ context: { device: { type: 'ios' } } }), track({ context: { device: { type: 3 } } }), 'invalid_dimension'],
  ['context.device is an object', track({ context: { device: { model: 'x' } } }), track({ context: { device: 'iphone' } }), 'invalid_dimension'],
  ['context.os.name is a string', track({ context: { os: { name: 'iOS' } } }), track({ context: { os: { name: ['iOS'] } } }), 'invalid_dimension'],
  ['context.app.version is a string', track({ context: { app: { version: '4.0.1' } } }), track({ context: { app: { version: 4 } } }), 'invalid_dimension'],
  ['context.location.country is a string', track({ context: { location: { country: 'DE' } } }), track({ context: { location: { country: { code: 'DE' } } } }), 'invalid_dimension'],
  ['screen name is a string', track({ type: 'screen', name: 'Home' }), track({ type: 'screen', name: 5 }), 'invalid_field'],
  ['groupId is a string or a number', { type: 'group', userId: 'u', groupId: 7 }, { type: 'group', userId: 'u', groupId: { g: 1 } }, 'invalid_field'],
  ['previousId is a string or a number', { type: 'alias', userId: 'u', previousId: 'old' }, { type: 'alias', userId: 'u', previousId: true }, 'invalid_field'],
  ['a numeric groupId is at most 2^53 − 1', { type: 'group', userId: 'u', groupId: 2 ** 53 - 1 }, { type: 'group', userId: 'u', groupId: 1e22 }, 'invalid_field'],
  ['the event fits maxEventBytes', track({ properties: { s: 'x'.repeat(1000) } }), track({ properties: { s: 'x'.repeat(40_000) } }), 'event_too_large'],
];

const canonical = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({ event_id: 'e1', user_id: 'u1', event_type: 'screen_view', event_time: NOW - 1000, ...extra });

const CANONICAL_RULES: Array<[string, Record<string, unknown>, unknown, string]> = [
  ['the line is an object', canonical(), [1, 2], 'not_an_object'],
  ['event_type is present', canonical(), canonical({ event_type: '' }), 'missing_type'],
  ['event_type is a string', canonical({ event_type: 'click' }), canonical({ event_type: 42 }), 'invalid_type'],
  ['event_type is at most 255 characters', canonical({ event_type: 'e'.repeat(255) }), canonical({ event_type: 'e'.repeat(256) }), 'invalid_type'],
  ['user_id is a string or a number', canonical({ user_id: 77 }), canonical({ user_id: { id: 1 } }), 'invalid_user_id'],
  ['a numeric user_id is at most 2^53 − 1', canonical({ user_id: 1.5 }), canonical({ user_id: 12345678901234567890 }), 'invalid_user_id'],
  ['anonymous_id is a string or a number', canonical({ user_id: null, anonymous_id: 'a' }), canonical({ anonymous_id: false }), 'invalid_anonymous_id'],
  ['there is a user', canonical({ user_id: undefined, anonymous_id: 'a' }), canonical({ user_id: undefined }), 'missing_user'],
  ['event_id is a string', canonical({ event_id: 'x' }), canonical({ event_id: 5 }), 'invalid_message_id'],
  ['event_time is ISO-8601 or epoch ms', canonical({ event_time: iso(NOW - 5) }), canonical({ event_time: 'noon' }), 'invalid_timestamp'],
  ['event_time is not 1e16', canonical(), canonical({ event_time: 1e16 }), 'invalid_timestamp'],
  ['event_time is not Int64 max', canonical(), canonical({ event_time: 9223372036854775807 }), 'invalid_timestamp'],
  ['event_time is after 2000-01-01', canonical({ event_time: Date.UTC(2000, 0, 1) }), canonical({ event_time: Date.UTC(1999, 0, 1) }), 'timestamp_too_old'],
  ['event_time is not in the future', canonical({ event_time: NOW + 1000 }), canonical({ event_time: NOW + 86_400_000 }), 'future_timestamp'],
  ['device_type is a string', canonical({ device_type: 'ios' }), canonical({ device_type: 1 }), 'invalid_dimension'],
  ['os is a string', canonical({ os: 'Android' }), canonical({ os: {} }), 'invalid_dimension'],
  ['app_version is a string', canonical({ app_version: '1.2' }), canonical({ app_version: 1.2 }), 'invalid_dimension'],
  ['country is a string', canonical({ country: 'BR' }), canonical({ country: ['BR'] }), 'invalid_dimension'],
  ['source is a string', canonical({ source: 'web' }), canonical({ source: 9 }), 'invalid_field'],
  ['properties is an object', canonical({ properties: { a: 1 } }), canonical({ properties: [1, 2] }), 'invalid_properties'],
  ['properties text is an object', canonical({ properties: '{"a":1}' }), canonical({ properties: '[1,2]' }), 'invalid_properties'],
  // Invalid JSON text in the lake made every `properties->>'$.x'` query over it fail in DuckDB.
  ['properties text is valid JSON', canonical({ properties: ' {"a":[1,{"b":null}],"c":"\\u00e9"} ' }), canonical({ properties: '{not json}' }), 'invalid_properties'],
  ['properties text is one object', canonical({ properties: '{"a":{}}' }), canonical({ properties: '{"a":1} {"b":2}' }), 'invalid_properties'],
  ['properties text nests at most maxJsonDepth', canonical({ properties: `${'{"a":'.repeat(64)}1${'}'.repeat(64)}` }), canonical({ properties: `${'{"a":'.repeat(65)}1${'}'.repeat(65)}` }), 'too_deep'],
  ['properties is not a number', canonical({ properties: null }), canonical({ properties: 5 }), 'invalid_properties'],
];

describe('validation rules, unit', () => {
  it.each(SEGMENT_RULES)('Segment: %s', (_rule, good, bad, code) => {
    const ok = normalizeSegment(structuredClone(good), undefined, undefined, ctx);
    expect(ok.ok ? 'ok' : `${ok.code}: ${ok.message}`).toBe('ok');
    const r = normalizeSegment(structuredClone(bad), undefined, undefined, ctx);
    expect(r.ok ? 'ok' : r.code).toBe(code);
    if (!r.ok) expect(r.message.length).toBeGreaterThan(10);
  });

  it('a single call is what its endpoint says: a "type" in the body of /v1/track does not make it a screen', () => {
    const asTrack = normalizeSegment(track({ type: 'screen', event: 'Clicked', name: 'Home' }), 'track', undefined, ctx);
    expect(asTrack.ok && asTrack.event.event_type).toBe('Clicked');
    const noEvent = normalizeSegment({ type: 'screen', name: 'Home', userId: 'u1', timestamp: iso(NOW - 1000) }, 'track', undefined, ctx);
    expect(noEvent.ok ? 'ok' : noEvent.code).toBe('missing_event');
    const screen = normalizeSegment({ name: 'Home', userId: 'u1', timestamp: iso(NOW - 1000) }, 'screen', undefined, ctx);
    expect(screen.ok && screen.event.event_type).toBe('screen');
  });

  it('a canonical event without event_time is told the field is missing', () => {
    const r = normalizeCanonical({ event_id: 'e1', user_id: 'u1', event_type: 'x' }, ctx);
    expect(r.ok ? 'ok' : `${r.code}: ${r.message}`).toMatch(/^invalid_timestamp: event_time is missing/);
  });

  it.each(CANONICAL_RULES)('canonical (NDJSON, Arrow rows): %s', (_rule, good, bad, code) => {
    const ok = normalizeCanonical(structuredClone(good), ctx);
    expect(ok.ok ? 'ok' : `${ok.code}: ${ok.message}`).toBe('ok');
    const r = normalizeCanonical(structuredClone(bad), ctx);
    expect(r.ok ? 'ok' : r.code).toBe(code);
  });
});

describe('validation rules through the real server', () => {
  let s: Harness;
  beforeAll(async () => {
    s = await startHarness();
  });
  afterAll(async () => {
    await s.close();
  });

  /** Moves a row's times to now (the server's receive time) keeping their offsets to NOW. */
  const shift = (v: unknown, delta: number): unknown => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return v;
    const o = { ...(v as Record<string, unknown>) };
    for (const k of ['timestamp', 'sentAt', 'originalTimestamp', 'event_time']) {
      const t = o[k];
      if (typeof t === 'string' && /^\d{4}-/.test(t) && Date.parse(t) > Date.UTC(2020, 0, 1)) o[k] = iso(Date.parse(t) + delta);
      else if (typeof t === 'number' && t > Date.UTC(2020, 0, 1) && t < 1e14) o[k] = t + delta;
    }
    return o;
  };

  it('Segment batch: every good row accepted, every bad row rejected with its code and in the DLQ', async () => {
    const delta = Date.now() - NOW;
    const batch: unknown[] = [];
    const expected: Array<[number, string]> = [];
    SEGMENT_RULES.forEach(([, good, bad, code], i) => {
      batch.push({ ...(shift(good, delta) as object), messageId: `seg-good-${i}` });
      expected.push([batch.length, code]);
      batch.push(typeof bad === 'object' && bad !== null && !Array.isArray(bad) ? { messageId: `seg-bad-${i}`, ...(shift(bad, delta) as object) } : bad);
    });
    const r = await post(`${s.url}/v1/batch`, JSON.stringify({ batch }), { authorization: basic() });
    expect(r.status).toBe(200);
    const rejected = (r.json.rejected as Array<{ index: number; code: string }>).map((x) => [x.index, x.code]);
    expect(rejected).toEqual(expected);
    expect(r.json.accepted).toBe(SEGMENT_RULES.length);
    const dlq = await s.deadLetters();
    for (const [, code] of expected) expect(dlq.map((d) => d.code)).toContain(code);
  });

  it('Segment: a batch context that is not an object refuses the request (400)', async () => {
    const bad = await post(`${s.url}/v1/batch`, JSON.stringify({ batch: [track()], context: 'str' }), { authorization: basic() });
    expect(bad.status).toBe(400);
    expect(bad.json.code).toBe('malformed_body');
  });

  it('NDJSON: every good line accepted, every bad line rejected with its code', async () => {
    const delta = Date.now() - NOW;
    const lines: string[] = [];
    const expected: Array<[number, string]> = [];
    CANONICAL_RULES.forEach(([, good, bad, code], i) => {
      lines.push(JSON.stringify({ ...(shift(good, delta) as object), event_id: `nd-good-${i}` }));
      expected.push([lines.length, code]);
      lines.push(JSON.stringify(shift(bad, delta)));
    });
    const r = await post(`${s.url}/v1/events`, lines.join('\n'), { authorization: `Bearer ${WRITE_KEY}` });
    expect(r.status).toBe(200);
    expect((r.json.rejected as Array<{ index: number; code: string }>).map((x) => [x.index, x.code])).toEqual(expected);
    expect(r.json.accepted).toBe(CANONICAL_RULES.length);
  });

  it('Arrow: a column of the wrong type or a missing required column is a 400 naming the column', async () => {
    const { ws, next } = await openWs(s.server.port);
    const now = Date.now();
    const cases: Array<[string, Uint8Array, RegExp]> = [
      ['user_id as Bool', tableToIPC(new Table({ user_id: vectorFromArray([true], new Bool()), event_type: vectorFromArray(['x'], new Utf8()), event_time: makeVector(Float64Array.of(now)) }), 'stream'), /column user_id has type Bool/],
      ['event_type as Int32', tableToIPC(tableFromArrays({ user_id: ['u'], event_type: Int32Array.of(42), event_time: Float64Array.of(now) }), 'stream'), /column event_type has type Int32/],
      ['event_time as Bool', tableToIPC(new Table({ user_id: vectorFromArray(['u'], new Utf8()), event_type: vectorFromArray(['x'], new Utf8()), event_time: vectorFromArray([true], new Bool()) }), 'stream'), /column event_time has type Bool/],
      ['no event_time', tableToIPC(tableFromArrays({ user_id: ['u'], event_type: ['x'] }), 'stream'), /lacks column\(s\) event_time/],
      ['no user', tableToIPC(tableFromArrays({ event_type: ['x'], event_time: Float64Array.of(now) }), 'stream'), /lacks column\(s\) user_id/],
    ];
    for (const [what, bytes, message] of cases) {
      ws.send(bytes);
      const ack = await next();
      expect(ack, what).toMatchObject({ ok: false, status: 400, code: 'invalid_schema' });
      expect(String(ack.message), what).toMatch(message);
    }
    ws.close();
  });

  it('Arrow: an Int64 user_id beyond 2^53 − 1 is rejected with its exact value in the dead letter; one within is kept as its decimal text', async () => {
    const { ws, next } = await openWs(s.server.port);
    const now = Date.now();
    const table = new Table({
      event_id: vectorFromArray(['i64-big', 'i64-ok'], new Utf8()),
      user_id: vectorFromArray([2n ** 60n + 1n, 9_007_199_254_740_991n], new Int64()),
      event_type: vectorFromArray(['x', 'x'], new Utf8()),
      event_time: makeVector(Float64Array.of(now, now)),
    });
    ws.send(tableToIPC(table, 'stream'));
    const ack = await next();
    expect(ack).toMatchObject({ ok: true, accepted: 1, rejected: [{ index: 0, code: 'invalid_user_id' }] });
    const message = String((ack.rejected as Array<{ message: string }>)[0]!.message);
    expect(message).toBe('column user_id holds a 64-bit integer beyond 2^53 − 1 in this row, which cannot be kept exactly; send the id as Utf8');
    ws.close();
    const letter = (await s.deadLetters()).find((d) => String(d.raw).includes('i64-big'))!;
    expect(JSON.parse(String(letter.raw))).toMatchObject({ user_id: String(2n ** 60n + 1n) });
    expect((await s.loggedEvents()).find((r) => r.event_id === 'i64-ok')).toMatchObject({ user_id: '9007199254740991' });
  });

  it('Arrow: per-row rules and an Int64-max event_time are per-row rejects, the rest accepted', async () => {
    const { ws, next } = await openWs(s.server.port);
    const now = BigInt(Date.now());
    const times = makeVector({ type: new TimestampMillisecond(), data: BigInt64Array.of(now - 5n, 9223372036854775807n, now - 7n, 10_000_000_000_000_000n, now + 86_400_000n) });
    const schema = new Schema([new Field('event_id', new Utf8()), new Field('user_id', new Utf8()), new Field('event_type', new Utf8(), true), new Field('event_time', new TimestampMillisecond())]);
    const cols = [vectorFromArray(['a0', 'a1', 'a2', 'a3', 'a4'], new Utf8()), vectorFromArray(['u0', 'u1', 'u2', 'u3', 'u4'], new Utf8()), vectorFromArray(['x', 'x', null, 'x', 'x'], new Utf8()), times];
    const batch = new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: 5, nullCount: 0, children: cols.map((c) => c.data[0]!) }));
    ws.send(tableToIPC(new Table([batch]), 'stream'));
    const ack = await next();
    ws.close();
    expect(ack).toMatchObject({ ok: true, accepted: 1 });
    expect((ack.rejected as Array<{ index: number; code: string }>).map((x) => [x.index, x.code])).toEqual([
      [1, 'invalid_timestamp'],
      [2, 'missing_type'],
      [3, 'invalid_timestamp'],
      [4, 'future_timestamp'],
    ]);
  });
});
