/**
 * Segment-compatible tracking API: `POST /v1/batch` (and `/v1/import`) with
 * `{"batch":[…], "context"?, "sentAt"?, "writeKey"?}`, and the single calls `/v1/track`,
 * `/v1/screen`, `/v1/page`, `/v1/identify`, `/v1/alias`, `/v1/group` whose body is one message;
 * the browser SDK's short paths (`/v1/t`, `/v1/s`, `/v1/p`, `/v1/i`, `/v1/a`, `/v1/g`, and `/v1/b`
 * for a batch) are the same endpoints.
 *
 * A batch body is read in one pass (segment-scan.ts) that validates the JSON, decodes only the
 * fields normalization reads and finds each item's byte range (and its properties/traits), so raw
 * and properties are stored verbatim without re-serializing. Every other body (single calls, PII
 * rules, anything that pass does not take) is parsed with JSON.parse and its ranges found by a
 * structural scan of the same bytes (json-scan.ts). The content type is ignored (RudderStack
 * labels JSON as application/x-www-form-urlencoded).
 */
import { isAscii } from 'node:buffer';
import type { IngestRow } from '../batch-builder.js';
import { jsonDepth, JsonScanner, type ItemRanges } from '../json-scan.js';
import { SegmentBatchScanner } from '../segment-scan.js';
import { DEFAULT_MAX_JSON_DEPTH, normalizeSegmentItem, type ItemBytes, type NormalizeContext } from '../normalize.js';
import { LONE_SURROGATE, loneSurrogateEscape, utf8Repaired, utf8Valid } from '../utf8.js';
import type { WriteKey } from '../options.js';
import { refuse, type Admission, type DeadLetter, type Decoded, type Refusal } from './decoded.js';

export const SEGMENT_CALLS = ['track', 'screen', 'page', 'identify', 'alias', 'group'] as const;

/**
 * The paths Segment's browser SDK (analytics.js / analytics-next) posts to under its `apiHost`:
 * each call to its type's first letter (`/v1/t`, …), a batch in its batching mode to `/v1/b`.
 */
export const SEGMENT_BROWSER_PATHS: Readonly<Record<(typeof SEGMENT_CALLS)[number], string>> = { track: 't', screen: 's', page: 'p', identify: 'i', alias: 'a', group: 'g' };
export const SEGMENT_BROWSER_BATCH_PATH = 'b';

const BATCH = Buffer.from('batch');
const scanner = new JsonScanner();
const batchScanner = new SegmentBatchScanner();

/**
 * Decodes one Segment request body (already gunzipped). `call` is the endpoint's call type, or
 * undefined for /v1/batch. `context(key)` gives the normalization context for the resolved key.
 *
 * Hostile input: the body's nesting depth is bounded (per item → `too_deep`, the envelope → 400)
 * before any recursive code (JSON.stringify) sees a value, and its bytes are checked as UTF-8
 * (an item with an invalid sequence → `invalid_utf8`; the envelope → 400) before anything is
 * copied verbatim into the log.
 */
export function decodeSegment(body: Buffer, call: string | undefined, admission: Admission, context: (key: WriteKey) => NormalizeContext): Decoded | Refusal {
  // One simdutf pass in the common case: ASCII is valid UTF-8.
  const ascii = isAscii(body);
  const utf8 = ascii || utf8Valid(body);
  if (call === undefined && utf8 && batchScanner.scan(body, ascii)) {
    const decoded = decodeScanned(body, batchScanner, admission, context);
    if (decoded !== undefined) return decoded;
  }
  return decodeParsed(body, utf8, call, admission, context);
}

/**
 * The JSON.parse path of {@link decodeSegment}: every body the one-pass scanner does not take
 * (single calls, PII rules, anything invalid or unusual), and the oracle its tests compare with.
 */
export function decodeParsed(body: Buffer, utf8: boolean, call: string | undefined, admission: Admission, context: (key: WriteKey) => NormalizeContext): Decoded | Refusal {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    return refuse(400, 'malformed_json', 'the body is not valid JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return refuse(400, 'malformed_body', 'the body must be a JSON object');
  const b = parsed as Record<string, unknown>;
  const key = admission.authenticate(b.writeKey);
  if ('kind' in key) return key;
  const ctx = context(key);
  const maxDepth = ctx.maxJsonDepth ?? DEFAULT_MAX_JSON_DEPTH;
  let items: unknown[];
  let ranges = false;
  let hadKey = false;
  let keyed: Uint8Array | undefined;
  if (call === undefined) {
    if (!Array.isArray(b.batch)) return refuse(400, 'malformed_body', 'a batch body needs a "batch" array of messages');
    if (b.context !== undefined && b.context !== null && (typeof b.context !== 'object' || Array.isArray(b.context))) return refuse(400, 'malformed_body', 'the batch\'s "context" must be an object');
    items = b.batch;
    const refused = admission.admit(key, items.length);
    if (refused) return refused;
    keyed = removeItemKeys(items);
    ranges = scanner.scanBatch(body, BATCH) && scanner.count === items.length;
    if (ranges && scanner.envelopeDepth > maxDepth) return tooDeep(maxDepth);
  } else {
    items = [b];
    const refused = admission.admit(key, 1);
    if (refused) return refused;
    hadKey = 'writeKey' in b;
    if (hadKey) delete b.writeKey; // never store the key: this message is re-serialized, not copied
    ranges = scanner.scanObject(body);
  }
  // Without the scanner's item ranges, neither depth nor UTF-8 can be pinned on one item.
  if (!ranges && jsonDepth(body) > maxDepth + (call === undefined ? 2 : 0)) return tooDeep(maxDepth);
  let invalid: Uint8Array | undefined;
  if (!utf8) {
    if (!ranges) return refuse(400, 'invalid_utf8', 'the body is not valid UTF-8; send UTF-8 encoded JSON');
    invalid = invalidItems(body, scanner);
    if (invalid === undefined) return refuse(400, 'invalid_utf8', 'the body is not valid UTF-8 outside its events; send UTF-8 encoded JSON');
  }
  const { rows, rejects } = normalizeItems(items, body, ranges ? scanner : undefined, call, call === undefined ? b.sentAt : undefined, call === undefined ? b.context : undefined, ctx, invalid, call === undefined ? keyed : hadKey);
  return { kind: 'decoded', key, rows, rejects };
}

/**
 * A batch body the one-pass scanner read (segment-scan.ts): the same checks, in the same order, as
 * the JSON.parse path below. Undefined when the key has PII rules (they rewrite whole events, so
 * they need the parsed objects): the caller then takes that path.
 */
function decodeScanned(body: Buffer, scanned: SegmentBatchScanner, admission: Admission, context: (key: WriteKey) => NormalizeContext): Decoded | Refusal | undefined {
  const key = admission.authenticate(scanned.writeKey);
  if ('kind' in key) return key;
  const ctx = context(key);
  if (ctx.pii.drop.length + ctx.pii.hash.length > 0) return undefined;
  const maxDepth = ctx.maxJsonDepth ?? DEFAULT_MAX_JSON_DEPTH;
  const refused = admission.admit(key, scanned.count);
  if (refused) return refused;
  if (scanned.envelopeDepth > maxDepth) return tooDeep(maxDepth);
  const { rows, rejects } = normalizeItems(scanned.items, body, scanned, undefined, scanned.sentAt, scanned.context, ctx);
  return { kind: 'decoded', key, rows, rejects };
}

/**
 * Removes a `writeKey` from each batch item that holds one (analytics.js's batching mode sends the
 * key in every event as well as in the envelope): the key is never stored, so those items are
 * re-serialized instead of copied. Per item, 1 when it held one; undefined when none did.
 */
function removeItemKeys(items: unknown[]): Uint8Array | undefined {
  let keyed: Uint8Array | undefined;
  for (let i = 0; i < items.length; i++) {
    const item = items[i];
    if (typeof item !== 'object' || item === null || Array.isArray(item) || !Object.hasOwn(item, 'writeKey')) continue;
    delete (item as Record<string, unknown>).writeKey;
    (keyed ??= new Uint8Array(items.length))[i] = 1;
  }
  return keyed;
}

const tooDeep = (max: number): Refusal => refuse(400, 'too_deep', `JSON nesting deeper than ${max} levels; flatten the payload`);

/**
 * Flags of the scanned items that hold invalid UTF-8, or undefined when the invalid bytes are
 * (also) outside every item (in the envelope).
 */
function invalidItems(body: Buffer, scanned: ItemRanges): Uint8Array | undefined {
  const n = scanned.count;
  const flags = new Uint8Array(n);
  let prev = 0;
  for (let i = 0; i < n; i++) {
    const s = scanned.itemStart[i]!;
    const e = scanned.itemEnd[i]!;
    if (!utf8Valid(body, prev, s)) return undefined;
    if (!utf8Valid(body, s, e)) flags[i] = 1;
    prev = e;
  }
  return utf8Valid(body, prev, body.length) ? flags : undefined;
}

/**
 * Normalizes parsed Segment messages. With `scanned` (a scanner that found every item's byte
 * ranges in `body`), raw and properties are taken verbatim from those ranges, and items nested
 * deeper than ctx.maxJsonDepth are rejected (`too_deep`). `invalidUtf8`: per item, 1 when its
 * bytes are not valid UTF-8 (rejected as `invalid_utf8`, DLQ raw with U+FFFD replacements).
 * `depthOnly`: use `scanned` for depths and UTF-8 flags but not for verbatim bytes — for every
 * item (true), or for the items flagged 1 (they were rewritten: their writeKey removed).
 */
export function normalizeItems(
  items: unknown[],
  body: Buffer,
  scanned: ItemRanges | undefined,
  call: string | undefined,
  batchSentAt: unknown,
  batchContext: unknown,
  ctx: NormalizeContext,
  invalidUtf8?: Uint8Array,
  depthOnly: boolean | Uint8Array = false,
): { rows: IngestRow[]; rejects: DeadLetter[] } {
  const rows: IngestRow[] = [];
  const rejects: DeadLetter[] = [];
  const maxDepth = ctx.maxJsonDepth ?? DEFAULT_MAX_JSON_DEPTH;
  const verbatim = scanned !== undefined && depthOnly !== true;
  const rewritten = typeof depthOnly === 'boolean' ? undefined : depthOnly;
  const src: ItemBytes | undefined = verbatim ? { bytes: body, rawStart: 0, rawEnd: 0, propsStart: -1, propsEnd: -1, traitsStart: -1, traitsEnd: -1 } : undefined;
  // Lone surrogate escapes: looked for per item only when the body holds one at all (one scan, and
  // only of bodies with a \u escape).
  const lone = body.indexOf('\\u') >= 0 && loneSurrogateEscape(body) >= 0;
  for (let i = 0; i < items.length; i++) {
    if (lone) {
      const at = scanned ? loneSurrogateEscape(body, scanned.itemStart[i]!, scanned.itemEnd[i]!) : loneSurrogateEscape(Buffer.from(JSON.stringify(items[i]) ?? ''));
      if (at >= 0) {
        const raw = scanned ? utf8Repaired(body, scanned.itemStart[i]!, scanned.itemEnd[i]!) : JSON.stringify(items[i]);
        rejects.push({ index: i, code: 'invalid_utf8', message: LONE_SURROGATE, raw });
        continue;
      }
    }
    if (scanned) {
      if (invalidUtf8 !== undefined && invalidUtf8[i] === 1) {
        rejects.push({ index: i, code: 'invalid_utf8', message: 'the event holds bytes that are not valid UTF-8 (replaced by U+FFFD in the dead letter); send UTF-8', raw: utf8Repaired(body, scanned.itemStart[i]!, scanned.itemEnd[i]!) });
        continue;
      }
      if (scanned.itemDepth[i]! > maxDepth) {
        rejects.push({ index: i, code: 'too_deep', message: `the event nests JSON deeper than ${maxDepth} levels; flatten its properties`, raw: utf8Repaired(body, scanned.itemStart[i]!, scanned.itemEnd[i]!) });
        continue;
      }
    }
    if (src) {
      src.rawStart = scanned!.itemStart[i]!;
      src.rawEnd = scanned!.itemEnd[i]!;
      src.propsStart = scanned!.propsStart[i]!;
      src.propsEnd = scanned!.propsEnd[i]!;
      src.traitsStart = scanned!.traitsStart[i]!;
      src.traitsEnd = scanned!.traitsEnd[i]!;
    }
    const r = normalizeSegmentItem(items[i], call, batchSentAt, batchContext, ctx, rewritten !== undefined && rewritten[i] === 1 ? undefined : src);
    if (r.ok) rows.push(r.event);
    else rejects.push({ index: i, code: r.code, message: r.message, raw: r.raw });
  }
  return { rows, rejects };
}
