/**
 * The one-pass Segment scanner (ingest/segment-scan.ts) against the JSON.parse path it replaces
 * for batch bodies (`decodeParsed`, V8's parser: an implementation it shares nothing with).
 *
 *   - whatever the scanner accepts, JSON.parse accepts (random bodies, then every byte of valid
 *     bodies mutated: flipped, dropped, doubled, replaced by a JSON-significant byte);
 *   - for every body, decodeSegment (which takes the scanner where it can) returns exactly what
 *     decodeParsed returns: rows, rejects with their codes, messages and raw, refusals;
 *   - the shapes real SDKs and hostile clients send: escaped and duplicated keys, surrogates,
 *     numbers in every JSON form, a batch context, screen/page/alias/group/identify specifics,
 *     nesting 100 000 deep.
 */
import fc from 'fast-check';
import { isAscii } from 'node:buffer';
import { isDeepStrictEqual } from 'node:util';
import { describe, expect, it } from 'vitest';
import { decodeParsed, decodeSegment } from '../../ingest/protocols/segment.js';
import type { Admission } from '../../ingest/protocols/decoded.js';
import { SegmentBatchScanner } from '../../ingest/segment-scan.js';
import type { NormalizeContext } from '../../ingest/normalize.js';

const RECEIVED_AT = Date.UTC(2026, 11, 5, 12, 0, 0);
/** The body's writeKey is echoed into the key, so a difference in reading it shows in the result. */
const admission: Admission = { authenticate: (k) => ({ key: `key:${JSON.stringify(k) ?? 'none'}` }), admit: () => undefined };
const context = (): NormalizeContext => ({ writeKey: 'k', source: 'segment', receivedAt: RECEIVED_AT, maxFutureSkewMs: 600_000, maxEventBytes: 4096, maxJsonDepth: 8, pii: { hash: [], drop: [], salt: '' } });

/** A decode result without the body reference each row carries (compared by its ranges instead). */
const plain = (d: unknown): unknown => JSON.parse(JSON.stringify(d, (k, v: unknown) => (k === 'bytes' ? undefined : v)));

const scanner = new SegmentBatchScanner();

/** Asserts both paths agree on `text`; returns whether the scanner took it. */
function agree(text: string | Buffer): boolean {
  const body = typeof text === 'string' ? Buffer.from(text) : text;
  const utf8 = Buffer.from(body.toString('utf8')).equals(body);
  const taken = utf8 && scanner.scan(body, isAscii(body));
  if (taken) expect(() => JSON.parse(body.toString('utf8')), `the scanner accepted what JSON.parse refuses: ${body.toString('utf8').slice(0, 300)}`).not.toThrow();
  const fast = plain(decodeSegment(body, undefined, admission, context));
  const parsed = plain(decodeParsed(body, utf8, undefined, admission, context));
  if (!isDeepStrictEqual(fast, parsed)) expect(fast, `body: ${body.toString('utf8').slice(0, 400)}`).toEqual(parsed);
  return taken;
}

const ISO = fc.integer({ min: Date.UTC(2026, 11, 5, 10), max: RECEIVED_AT + 900_000 }).map((t) => new Date(t).toISOString());
const scalar = fc.oneof(fc.string({ maxLength: 12 }), fc.integer(), fc.double(), fc.boolean(), fc.constant(null), ISO);
const anyJson = fc.jsonValue({ maxDepth: 3 });
const fieldValue = fc.oneof({ weight: 4, arbitrary: scalar }, { weight: 1, arbitrary: anyJson });
/** Keys as the wire spells them: the known ones, sometimes with an escaped letter, and others. */
const KEYS = ['type', 'event', 'userId', 'anonymousId', 'messageId', 'timestamp', 'originalTimestamp', 'sentAt', 'name', 'groupId', 'previousId', 'context', 'properties', 'traits', 'integrations', 'writeKey', 'batch', 'device', 'channel'];
const spelledKey = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...KEYS).map((k) => JSON.stringify(k)) },
  { weight: 1, arbitrary: fc.constantFrom(...KEYS).map((k) => `"\\u${k.charCodeAt(0).toString(16).padStart(4, '0')}${k.slice(1)}"`) },
  { weight: 1, arbitrary: fc.string({ maxLength: 8 }).map((k) => JSON.stringify(k)) },
);
const dims = fc.record(
  {
    device: fc.oneof(fc.record({ type: fc.oneof(fc.constantFrom('ios', 'android', ''), fieldValue), model: fc.string() }, { requiredKeys: [] }), fieldValue),
    os: fc.record({ name: fc.oneof(fc.constantFrom('iOS', 'Android'), fieldValue), version: fc.string() }, { requiredKeys: [] }),
    app: fc.record({ version: fc.oneof(fc.constantFrom('1.0', '2.3.1'), fieldValue) }, { requiredKeys: [] }),
    location: fc.oneof(fc.record({ country: fc.oneof(fc.constantFrom('BR', 'ÜK'), fieldValue) }, { requiredKeys: [] }), fc.constant(null)),
    traits: fc.oneof(fc.dictionary(fc.string({ maxLength: 5 }), scalar, { maxKeys: 3 }), fieldValue),
    library: fc.record({ name: fc.string(), version: fc.string() }),
  },
  { requiredKeys: [] },
);
/** An item as JSON text: mostly plausible SDK messages, with duplicated, escaped and odd keys mixed in. */
const item = fc
  .tuple(
    fc.record(
      {
        type: fc.oneof({ weight: 8, arbitrary: fc.constantFrom('track', 'screen', 'page', 'identify', 'alias', 'group') }, { weight: 1, arbitrary: fieldValue }),
        event: fc.oneof(fc.constantFrom('Application Opened', 'Product Viewed', 'Ünïcode 🎉'), fieldValue),
        userId: fc.oneof(fc.constantFrom('user-1', 'user-2', ''), fc.integer(), fieldValue),
        anonymousId: fc.oneof(fc.uuid(), fieldValue),
        messageId: fc.oneof(fc.uuid(), fieldValue),
        timestamp: fc.oneof(ISO, fc.integer({ min: Date.UTC(2026, 11, 5, 10), max: RECEIVED_AT }), fieldValue),
        originalTimestamp: fc.oneof(ISO, fieldValue),
        sentAt: fc.oneof(ISO, fieldValue),
        name: fc.oneof(fc.constantFrom('Home', 'Cart'), fieldValue),
        groupId: fieldValue,
        previousId: fieldValue,
        context: fc.oneof({ weight: 4, arbitrary: dims }, { weight: 1, arbitrary: fieldValue }),
        properties: fc.oneof({ weight: 4, arbitrary: fc.dictionary(fc.constantFrom('name', 'price', 'x', '__proto__'), fc.oneof(anyJson, fc.constantFrom('Home', 'Cart')), { maxKeys: 4 }) }, { weight: 1, arbitrary: fieldValue }),
        traits: fc.oneof(fc.dictionary(fc.string({ maxLength: 5 }), scalar, { maxKeys: 3 }), fieldValue),
        integrations: fieldValue,
      },
      { requiredKeys: [] },
    ),
    fc.array(fc.tuple(spelledKey, fieldValue), { maxLength: 3 }),
    fc.boolean(),
  )
  .map(([fields, extra, extraFirst]) => {
    const own = Object.entries(fields).map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`);
    const more = extra.map(([k, v]) => `${k}:${JSON.stringify(v)}`);
    return `{${(extraFirst ? [...more, ...own] : [...own, ...more]).join(',')}}`;
  });
const WS = fc.constantFrom('', '', '', ' ', '\n', '\t', '\r\n  ');
const body = fc
  .record({
    items: fc.array(item, { maxLength: 6 }),
    sentAt: fc.option(fc.oneof(ISO, fieldValue), { nil: undefined }),
    context: fc.option(fc.oneof({ weight: 4, arbitrary: dims }, { weight: 1, arbitrary: fieldValue }), { nil: undefined }),
    writeKey: fc.option(fieldValue, { nil: undefined }),
    ws: WS,
    batchLast: fc.boolean(),
  })
  .map(({ items, sentAt, context: ctx, writeKey, ws, batchLast }) => {
    const batch = `"batch"${ws}:${ws}[${ws}${items.join(`${ws},${ws}`)}${ws}]`;
    const rest = [sentAt === undefined ? undefined : `"sentAt":${JSON.stringify(sentAt)}`, ctx === undefined ? undefined : `"context":${JSON.stringify(ctx)}`, writeKey === undefined ? undefined : `"writeKey":${JSON.stringify(writeKey)}`].filter((s) => s !== undefined);
    return `${ws}{${ws}${(batchLast ? [...rest, batch] : [batch, ...rest]).join(`${ws},${ws}`)}${ws}}${ws}`;
  });

describe('segment-scan: the one-pass scanner agrees with JSON.parse', () => {
  it('random Segment bodies: the same rows, rejects and refusals as the JSON.parse path', () => {
    let taken = 0;
    let runs = 0;
    fc.assert(
      fc.property(body, (text) => {
        runs++;
        if (agree(text)) taken++;
      }),
      { numRuns: 600 },
    );
    // Not vacuous: about half the generated bodies are ones the scanner takes (the others have an
    // odd envelope or an escaped key, which it leaves to the JSON.parse path).
    expect(taken / runs).toBeGreaterThan(0.4);
  });

  it('every single-byte mutation of a valid body: accepted only when JSON.parse accepts, and then decoded alike', () => {
    const SIGNIFICANT = [...'{}[]":,\\ 0123456789-+.eEtfnu'].map((c) => c.charCodeAt(0)).concat([0x00, 0x1f, 0x7f, 0xc3]);
    fc.assert(
      fc.property(body, fc.nat(), fc.constantFrom('flip', 'drop', 'double', 'replace'), fc.constantFrom(...SIGNIFICANT), (text, at, how, byte) => {
        const b = Buffer.from(text);
        if (b.length === 0) return;
        const i = at % b.length;
        const mutated =
          how === 'drop'
            ? Buffer.concat([b.subarray(0, i), b.subarray(i + 1)])
            : how === 'double'
              ? Buffer.concat([b.subarray(0, i + 1), b.subarray(i)])
              : Buffer.concat([b.subarray(0, i), Buffer.from([how === 'flip' ? b[i]! ^ (1 << (at % 7)) : byte]), b.subarray(i + 1)]);
        agree(mutated);
      }),
      { numRuns: 3000 },
    );
  });

  it('the grammar at the edges: numbers, literals, escapes, control characters, trailing bytes', () => {
    const wrap = (v: string): string => `{"batch":[{"type":"track","event":"e","userId":${v},"timestamp":"2026-12-05T11:59:00.000Z","properties":{"v":${v}}}]}`;
    const valid = ['0', '-0', '12', '-12', '1.5', '1e5', '1E+2', '2e-3', '-0.0e0', '123456789012345678901234567890', '"a"', '"\\"\\\\\\/\\b\\f\\n\\r\\t"', '"\\u00e9\\uD83C\\uDF89"', '"\\ud800"', 'true', 'false', 'null', '[]', '{}', '[1,[2,{"a":[]}]]', '"é🎉"'];
    const invalid = ['01', '1.', '.5', '-', '+1', '1e', '1e+', '0x1', 'NaN', 'Infinity', 'tru', 'nul', 'True', '"\\x41"', '"\\u12"', '"\\u12G4"', "'a'", '"a\u0001"', '"a\tb"', '[1,]', '{"a":1,}', '{"a"}', '{a:1}', '[1 2]', '[1}', '{"a":1]', '"unterminated'];
    for (const v of valid) expect(agree(wrap(v)), v).toBe(true);
    for (const v of invalid) expect(agree(wrap(v)), v).toBe(false);
    expect(agree('{"batch":[]}')).toBe(true);
    for (const t of ['{"batch":[]} x', '{"batch":[]},', '\ufeff{"batch":[]}', '{"batch":[]}{}', '', ' ', '[]', '{}', '{"batch":{}}', '{"batch":[1]}', '{"batch":[],"context":"c"}']) expect(agree(t), JSON.stringify(t)).toBe(false);
  });

  it("duplicate and escaped keys: the last one wins; a known key spelled with escapes is left to the JSON.parse path", () => {
    expect(agree('{"batch":[{"type":"track","type":"screen","name":"Home","userId":"u","userId":"v","timestamp":"2026-12-05T11:59:00.000Z","properties":{"a":1},"properties":{"b":2}}]}')).toBe(true);
    expect(agree('{"\\u0062atch":[{"\\u0074ype":"track","event":"e","user\\u0049d":"u","context":{"d\\u0065vice":{"typ\\u0065":"ios"}}}]}')).toBe(false);
    expect(agree('{"batch":[{"type":"track","event":"e","userId":"u","propert\\u0069es":{"a":1}}]}')).toBe(false);
    expect(agree('{"batch":[{"type":"track","event":"e","userId":"u","\\u00e9":{"a":1}}]}')).toBe(true);
    expect(agree('{"batch":[{"type":"track","event":"e","userId":"u"}],"batch":[{"type":"track","event":"f","anonymousId":"a"}]}')).toBe(true);
    expect(agree('{"batch":[{"type":"track","event":"e","userId":"u","context":{"os":{"name":"iOS"},"os":{"version":"1"}}}],"context":{"os":{"name":"Android"}}}')).toBe(true);
  });

  it('what normalization reads inside objects: screen names, alias previousId, group traits, identify context traits, batch context', () => {
    const t = '"timestamp":"2026-12-05T11:59:00.000Z"';
    const bodies = [
      `{"batch":[{"type":"screen","name":"Home","userId":"u",${t},"properties":{"name":"Home"}},{"type":"screen","name":"Cart","userId":"u",${t},"properties":{"x":1}},{"type":"page","name":"P","userId":"u",${t},"properties":{}},{"type":"screen","name":"N","userId":"u",${t},"properties":{"name":"Other"}}]}`,
      `{"batch":[{"type":"alias","previousId":"old","userId":"u",${t},"properties":{"a":1}},{"type":"alias","userId":"u",${t},"properties":{"a":[1,{"b":null}]}}]}`,
      `{"batch":[{"type":"group","groupId":"g","userId":"u",${t},"traits":{"plan":"pro"}},{"type":"group","userId":"u",${t},"traits":{"plan":"pro"}}]}`,
      `{"batch":[{"type":"identify","userId":"u",${t},"context":{"traits":{"email":"e@x"}}},{"type":"identify","userId":"u",${t}}],"context":{"traits":{"plan":"free"},"device":{"type":"ios"}}}`,
      `{"batch":[{"type":"track","event":"e","userId":"u",${t},"context":{"device":{"model":"x"},"app":"not an object"}}],"context":{"device":{"type":"android"},"location":{"country":"BR"}},"sentAt":"2026-12-05T11:59:30.000Z"}`,
      `{"batch":[{"type":"track","event":"e","userId":"u",${t},"context":{"device":{"type":7}}}]}`,
      `{"batch":[{"type":"track","event":"e","userId":"u",${t},"properties":"text"},{"type":"track","event":"e","userId":"u",${t},"integrations":[1]}]}`,
    ];
    for (const b of bodies) expect(agree(b), b).toBe(true);
  });

  it('a key with PII rules: the JSON.parse path, masked raw (nothing unmasked is stored)', () => {
    const pii = (): NormalizeContext => ({ ...context(), pii: { hash: ['userId'], drop: ['context.ip'], salt: 's' } });
    const text = '{"batch":[{"type":"track","event":"e","userId":"alice","timestamp":"2026-12-05T11:59:00.000Z","context":{"ip":"10.0.0.1"}}]}';
    const body = Buffer.from(text);
    expect(scanner.scan(body, true)).toBe(true);
    const fast = decodeSegment(body, undefined, admission, pii);
    expect(plain(fast)).toEqual(plain(decodeParsed(body, true, undefined, admission, pii)));
    if (fast.kind !== 'decoded') throw new Error('refused');
    expect(fast.rows[0]!.raw).not.toContain('alice');
    expect(fast.rows[0]!.raw).not.toContain('10.0.0.1');
  });

  it('nesting 1 000 and 100 000 deep: no stack overflow, the same too_deep answers as the JSON.parse path', () => {
    const nested = (n: number): string => `${'['.repeat(n)}${']'.repeat(n)}`;
    expect(agree(`{"batch":[{"type":"track","event":"e","userId":"u","properties":{"a":${nested(1000)}}}]}`)).toBe(true);
    expect(agree(`{"batch":[],"x":${nested(1000)}}`)).toBe(true);
    // Deeper than any maxJsonDepth allows: left to the JSON.parse path.
    expect(agree(`{"batch":[{"type":"track","event":"e","userId":"u","properties":{"a":${nested(100_000)}}}]}`)).toBe(false);
    expect(agree(`{"batch":[],"x":${nested(100_000)}}`)).toBe(false);
    expect(agree(`{"batch":[{"type":"track","event":"e","userId":"u","properties":{"a":${'['.repeat(100_000)}}}]}`)).toBe(false);
  });
});
