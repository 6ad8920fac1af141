/**
 * Validation and normalization of incoming events into the canonical event.
 *
 * Segment mapping (design): messageId → event_id (or a deterministic hash of the write key and
 * the event's raw JSON), userId ?? anonymousId → user_id, `event` (track) or the call type →
 * event_type, the event time corrected for device clock skew with sentAt as Segment does
 * (see {@link eventTimeOf}), context.device.type / os.name /
 * app.version / location.country → dimensions (the item's context over the batch's),
 * properties (traits for identify/group; previousId for alias; the call's `name` for
 * screen/page) → properties JSON text.
 *
 * `raw` is the event's JSON exactly as received (a byte range of the body) unless PII rules
 * apply, in which case it is the re-serialized, masked event: nothing unmasked is ever stored.
 */
import { createHash } from 'node:crypto';
import type { IngestRow } from './batch-builder.js';
import type { PiiOptions } from './options.js';
import { parseTime } from './parse-time.js';
import { jsonValueDepth } from './segment-scan.js';
import { LONE_SURROGATE, loneSurrogateEscape } from './utf8.js';

export { parseTime } from './parse-time.js';

/** A canonical event as ingest builds it (one row of ingestSchema). Times in epoch ms. */
export interface CanonicalEvent {
  event_id: string;
  user_id: string;
  anonymous_id: string | null;
  event_type: string;
  event_time: number;
  received_at: number;
  device_type: string | null;
  os: string | null;
  app_version: string | null;
  country: string | null;
  source: string;
  properties: string | null;
  raw: string | null;
}

/**
 * Per-event reject codes (also the `code` column of the DLQ and the label of the rejects metric).
 * One code per rule; docs/VALIDATION.md lists each with the field it checks.
 */
export type RejectCode =
  | 'not_an_object'
  | 'malformed_json'
  | 'invalid_utf8'
  | 'too_deep'
  | 'event_too_large'
  | 'missing_type'
  | 'invalid_type'
  | 'missing_event'
  | 'invalid_event'
  | 'missing_user'
  | 'invalid_user_id'
  | 'invalid_anonymous_id'
  | 'invalid_message_id'
  | 'invalid_timestamp'
  | 'invalid_sent_at'
  | 'invalid_original_timestamp'
  | 'timestamp_too_old'
  | 'future_timestamp'
  | 'invalid_properties'
  | 'invalid_traits'
  | 'invalid_context'
  | 'invalid_integrations'
  | 'invalid_dimension'
  | 'invalid_field';

/** Longest accepted event name (Segment `event`, canonical `event_type`), in UTF-16 code units. */
export const MAX_EVENT_NAME_CHARS = 255;

/**
 * Any raw time value (timestamp, originalTimestamp, sentAt, event_time) must lie in
 * [1970-01-01T00:00:00.000Z, 9999-12-31T23:59:59.999Z] before anything is computed from it: a
 * device clock reset to 1970 is still corrected by sentAt, while 1e16, −1e18 or Int64 max are
 * not times at all. The corrected event time then has to fall in [minEventTimeMs, receivedAt +
 * maxFutureSkewMs].
 */
export const RAW_TIME_MIN_MS = 0;
export const RAW_TIME_MAX_MS = Date.UTC(9999, 11, 31, 23, 59, 59, 999);

export interface Rejection {
  index: number;
  code: RejectCode;
  message: string;
}

export interface NormalizeContext {
  writeKey: string;
  /** Source stamped on events (the write key's configured source, else the protocol). */
  source: string;
  /** When true, `source` overrides a canonical event's own `source` field. */
  fixedSource?: boolean;
  /** Receive time, epoch ms. */
  receivedAt: number;
  maxFutureSkewMs: number;
  /** Deepest JSON nesting per event (checked by the protocol decoders). Default (when absent) 64. */
  maxJsonDepth?: number;
  /** Oldest accepted (corrected) event time, epoch ms. Default (when absent) 2000-01-01T00:00:00Z. */
  minEventTimeMs?: number;
  maxEventBytes: number;
  pii: PiiOptions;
}

const DEFAULT_MIN_EVENT_TIME_MS = Date.UTC(2000, 0, 1);
export const DEFAULT_MAX_JSON_DEPTH = 64;

/**
 * Byte ranges of one item inside the request body (from JsonScanner); −1 = not found. When
 * given (and no PII rule applies), raw and properties are copied from these bytes verbatim.
 */
export interface ItemBytes {
  bytes: Uint8Array;
  rawStart: number;
  rawEnd: number;
  propsStart: number;
  propsEnd: number;
  traitsStart: number;
  traitsEnd: number;
}

export type NormalizeResult = { ok: true; event: IngestRow } | { ok: false; code: RejectCode; message: string; raw: string };

const SEGMENT_TYPES = new Set(['track', 'screen', 'page', 'identify', 'alias', 'group']);

const str = (v: unknown): string | null => (typeof v === 'string' ? (v === '' ? null : v) : typeof v === 'number' && Number.isFinite(v) ? String(v) : null);
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function get(obj: unknown, path: string[]): unknown {
  let cur = obj;
  for (const p of path) {
    if (typeof cur !== 'object' || cur === null) return undefined;
    cur = (cur as Record<string, unknown>)[p];
  }
  return cur;
}

/** A present value: neither undefined nor null (JSON null means "not given" throughout). */
const given = (v: unknown): boolean => v !== undefined && v !== null;
/**
 * What is wrong with an id field, or undefined: a string, or a number (stored as its decimal text);
 * null/absent allowed. An integer beyond 2^53 − 1 is refused: a JSON number that large reaches
 * JavaScript rounded (1234567890123456789 reads as 1234567890123456800), and ids that differ only
 * in the rounded digits would be merged into one user.
 */
function idError(name: string, v: unknown): string | undefined {
  if (v === undefined || v === null || typeof v === 'string') return undefined;
  if (typeof v !== 'number') return `${name} must be a string (or a number), got ${typeOf(v)}`;
  if (Number.isInteger(v) && !Number.isSafeInteger(v)) return `${name} is a number beyond 2^53 − 1 (it reads as ${String(v)}), which JSON cannot carry exactly; send the id as a string`;
  return undefined;
}
/** An object-valued field (`properties`, `traits`, `context`, `integrations`): a plain object; null/absent allowed. */
const objectOrAbsent = (v: unknown): boolean => v === undefined || v === null || isObject(v);

/** context[a][b] of the item, else of the batch (Segment merges batch context under the item's). */
function dim(item: unknown, batch: unknown, a: string, b: string): string | null {
  const own = isObject(item) ? item[a] : undefined;
  const v = isObject(own) && b in own ? own[b] : isObject(batch) && isObject(batch[a]) ? (batch[a] as Record<string, unknown>)[b] : undefined;
  return typeof v === 'string' && v !== '' ? v : null;
}

/** The context dimensions Sluice reads: [object key, field] → `context.<key>.<field>`. */
const CONTEXT_DIMS = [
  ['device', 'type'],
  ['os', 'name'],
  ['app', 'version'],
  ['location', 'country'],
] as const;

/** The path of the first context dimension that is not a string (or whose parent is not an object), else undefined. */
function badContextDim(context: unknown): string | undefined {
  if (!isObject(context)) return undefined;
  for (const [a, b] of CONTEXT_DIMS) {
    const parent = context[a];
    if (!given(parent)) continue;
    if (!isObject(parent)) return `context.${a}`;
    const v = parent[b];
    if (given(v) && typeof v !== 'string') return `context.${a}.${b}`;
  }
  return undefined;
}

/** An epoch-ms value as ISO text for messages (never throws, unlike toISOString out of Date's range). */
export function describeTime(ms: number): string {
  return Number.isFinite(ms) && Math.abs(ms) <= 8.64e15 ? new Date(ms).toISOString() : String(ms);
}

/** Epoch ms of a raw time value within [RAW_TIME_MIN_MS, RAW_TIME_MAX_MS], else NaN. */
export function parseRawTime(v: unknown): number {
  const t = parseTime(v);
  return t >= RAW_TIME_MIN_MS && t <= RAW_TIME_MAX_MS ? t : NaN;
}

const TIME_FORMAT = 'ISO-8601 (e.g. 2024-05-01T12:00:00.000Z) or epoch ms, between 1970-01-01 and 9999-12-31';

/**
 * The reject of a corrected event time outside [minEventTimeMs, receivedAt + maxFutureSkewMs],
 * else undefined.
 */
function timeWindowReject(t: number, ctx: NormalizeContext): { code: RejectCode; message: string } | undefined {
  const min = ctx.minEventTimeMs ?? DEFAULT_MIN_EVENT_TIME_MS;
  if (t < min) return { code: 'timestamp_too_old', message: `event time ${describeTime(t)} is before ${describeTime(min)} (after clock-skew correction); fix the device clock or the timestamp` };
  if (t > ctx.receivedAt + ctx.maxFutureSkewMs) {
    return { code: 'future_timestamp', message: `event time ${describeTime(t)} is more than ${ctx.maxFutureSkewMs} ms in the future (after clock-skew correction)` };
  }
  return undefined;
}

/**
 * A Segment event's time, epoch ms, from its parsed timestamp, originalTimestamp and sentAt (NaN =
 * absent) and the receive time — Segment's clock-skew correction, first that applies:
 *
 *   sentAt and originalTimestamp  → receivedAt − (sentAt − originalTimestamp)
 *   sentAt and timestamp          → timestamp + (receivedAt − sentAt)
 *   otherwise                     → timestamp ?? originalTimestamp ?? receivedAt
 *
 * originalTimestamp is the device clock's time of the event, sentAt the device clock's time of
 * sending. A `timestamp` next to an originalTimestamp (an exported or relayed payload) is already
 * corrected: correcting it again shifted it by the relay's delay (hours into the future).
 */
export function eventTimeOf(ts: number, ot: number, sentAt: number, receivedAt: number): number {
  if (!Number.isNaN(sentAt)) {
    if (!Number.isNaN(ot)) return receivedAt - (sentAt - ot);
    if (!Number.isNaN(ts)) return ts + (receivedAt - sentAt);
  }
  return !Number.isNaN(ts) ? ts : !Number.isNaN(ot) ? ot : receivedAt;
}

/** Applies PII hashing and dropping in place (paths are dot-separated, relative to the message). */
export function applyPii(msg: Record<string, unknown>, pii: PiiOptions): void {
  for (const path of pii.drop) {
    const parts = path.split('.');
    const parent = get(msg, parts.slice(0, -1));
    if (typeof parent === 'object' && parent !== null) delete (parent as Record<string, unknown>)[parts[parts.length - 1]!];
  }
  for (const path of pii.hash) {
    const parts = path.split('.');
    const parent = get(msg, parts.slice(0, -1));
    const leaf = parts[parts.length - 1]!;
    if (typeof parent === 'object' && parent !== null && leaf in parent) {
      const value = (parent as Record<string, unknown>)[leaf];
      if (value !== null && value !== undefined) {
        (parent as Record<string, unknown>)[leaf] = createHash('sha256').update(pii.salt).update(typeof value === 'string' ? value : JSON.stringify(value)).digest('hex');
      }
    }
  }
}

/**
 * Deterministic event id for an event sent without one: SHA-1 of the write key and the event's
 * content (its raw JSON, which holds the original timestamp, not the receive-time-dependent
 * corrected one), so a client retry of the same event gets the same id. `call`: the type the
 * endpoint gives a single call (/v1/page, /v1/screen, …) whose body does not name it — the same
 * body sent as a page and as a screen is two events; a body that names its type gets the id it
 * has in a batch.
 */
export function derivedEventId(writeKey: string, content: string | Uint8Array, call?: string): string {
  const h = createHash('sha1').update(writeKey).update('\u0000').update(content);
  if (call !== undefined) h.update('\u0000').update(call);
  return `sl-${h.digest('hex').slice(0, 32)}`;
}

let lastSentRaw: unknown;
let lastSentAt = Number.NaN;

/** The event's raw JSON as a string (for rejects): the given text, else its bytes, else re-serialized. */
function rawOf(rawText: string | undefined, bytes: ItemBytes | undefined, value?: unknown): string {
  if (rawText !== undefined) return rawText;
  if (bytes) return Buffer.from(bytes.bytes.buffer, bytes.bytes.byteOffset + bytes.rawStart, bytes.rawEnd - bytes.rawStart).toString('utf8');
  return JSON.stringify(value) ?? 'undefined';
}

/** The JSON type name of a value for messages ('array', 'null', 'string', …). */
function typeOf(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v === 'object' ? 'an object' : `${typeof v} ${preview(v)}`;
}

/** A short, safe rendering of a scalar for messages. */
function preview(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  return v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v;
}

const rejectWith = (code: RejectCode, message: string, raw: string): NormalizeResult => ({ ok: false, code, message, raw });

const hasPii = (pii: PiiOptions): boolean => pii.drop.length + pii.hash.length > 0;

/**
 * One Segment message → canonical event (an IngestRow) or a rejection.
 * `call`: the endpoint's call type (`/v1/track` → 'track'), undefined for /v1/batch items.
 * `src`: the item's byte ranges in the body, for verbatim raw/properties (optional).
 * `item` may be mutated (PII rules) — pass a parsed value the caller owns.
 */
export function normalizeSegmentItem(
  item: unknown,
  call: string | undefined,
  batchSentAt: unknown,
  batchContext: unknown,
  ctx: NormalizeContext,
  src?: ItemBytes,
): NormalizeResult {
  if (!isObject(item)) {
    const raw = src ? Buffer.from(src.bytes.buffer, src.bytes.byteOffset + src.rawStart, src.rawEnd - src.rawStart).toString('utf8') : (JSON.stringify(item) ?? 'undefined');
    return rejectWith('not_an_object', 'each event must be a JSON object', raw);
  }
  const msg = item;
  let rawText: string | undefined;
  let bytes: ItemBytes | undefined = src;
  if (hasPii(ctx.pii)) {
    applyPii(msg, ctx.pii);
    bytes = undefined;
  }
  let rawBytes: number;
  if (bytes) rawBytes = bytes.rawEnd - bytes.rawStart;
  else {
    rawText = JSON.stringify(msg);
    rawBytes = Buffer.byteLength(rawText);
  }
  // (No closures here: tsx/esbuild wraps each in a __name() call, per event.)
  if (rawBytes > ctx.maxEventBytes) return rejectWith('event_too_large', `event is ${rawBytes} bytes; the limit is ${ctx.maxEventBytes}`, rawOf(rawText, bytes));
  // A single call's endpoint says what it is (a "type" in its body does not turn /v1/track into a screen).
  const t = msg.type;
  const type = call ?? (t === null ? undefined : t);
  // The endpoint's type goes into a derived id only when the body does not say it already: a body
  // naming its type has the id it has as a batch item (an SDK switching to batching resends it there).
  const idCall = call !== undefined && t !== call ? call : undefined;
  if (type === undefined) return rejectWith('missing_type', 'an event in a batch needs a "type": track, screen, page, identify, alias or group', rawOf(rawText, bytes));
  if (typeof type !== 'string' || !SEGMENT_TYPES.has(type)) return rejectWith('invalid_type', `type must be one of track, screen, page, identify, alias, group; got ${JSON.stringify(type)}`, rawOf(rawText, bytes));
  let eventType: string;
  if (type === 'track') {
    const e = msg.event;
    if (!given(e) || e === '') return rejectWith('missing_event', 'a track call needs a non-empty "event" name', rawOf(rawText, bytes));
    if (typeof e !== 'string') return rejectWith('invalid_event', `"event" must be a string, got ${typeof e}`, rawOf(rawText, bytes));
    if (e.length > MAX_EVENT_NAME_CHARS) return rejectWith('invalid_event', `"event" is ${e.length} UTF-16 code units long (an emoji counts 2); the limit is ${MAX_EVENT_NAME_CHARS}`, rawOf(rawText, bytes));
    eventType = e;
  } else eventType = type;
  const u = msg.userId;
  const a = msg.anonymousId;
  const badUser = idError('userId', u);
  if (badUser !== undefined) return rejectWith('invalid_user_id', badUser, rawOf(rawText, bytes));
  const badAnonymous = idError('anonymousId', a);
  if (badAnonymous !== undefined) return rejectWith('invalid_anonymous_id', badAnonymous, rawOf(rawText, bytes));
  const userId = str(u);
  const anonymousId = str(a);
  const user = userId ?? anonymousId;
  if (user === null) return rejectWith('missing_user', 'an event needs a userId or an anonymousId', rawOf(rawText, bytes));
  const mid = msg.messageId;
  if (given(mid) && typeof mid !== 'string') return rejectWith('invalid_message_id', `messageId must be a string, got ${typeOf(mid)}`, rawOf(rawText, bytes));
  const context = msg.context;
  if (!objectOrAbsent(context)) return rejectWith('invalid_context', `context must be an object, got ${typeOf(context)}`, rawOf(rawText, bytes));
  if (!objectOrAbsent(msg.properties)) return rejectWith('invalid_properties', `properties must be an object, got ${typeOf(msg.properties)}`, rawOf(rawText, bytes));
  if (!objectOrAbsent(msg.traits)) return rejectWith('invalid_traits', `traits must be an object, got ${typeOf(msg.traits)}`, rawOf(rawText, bytes));
  if (!objectOrAbsent(msg.integrations)) return rejectWith('invalid_integrations', `integrations must be an object, got ${typeOf(msg.integrations)}`, rawOf(rawText, bytes));
  const badDim = badContextDim(context);
  if (badDim !== undefined) return rejectWith('invalid_dimension', `${badDim} must be ${badDim.split('.').length === 2 ? 'an object' : 'a string'}`, rawOf(rawText, bytes));
  if ((type === 'screen' || type === 'page') && given(msg.name) && typeof msg.name !== 'string') return rejectWith('invalid_field', `name must be a string, got ${typeOf(msg.name)}`, rawOf(rawText, bytes));
  const badOtherId = type === 'group' ? idError('groupId', msg.groupId) : type === 'alias' ? idError('previousId', msg.previousId) : undefined;
  if (badOtherId !== undefined) return rejectWith('invalid_field', badOtherId, rawOf(rawText, bytes));

  // Times: each raw value range-checked first, then the corrected time against the window.
  const tsGiven = msg.timestamp;
  const otGiven = msg.originalTimestamp;
  let ts = Number.NaN;
  let ot = Number.NaN;
  if (given(tsGiven)) {
    ts = parseRawTime(tsGiven);
    if (Number.isNaN(ts)) return rejectWith('invalid_timestamp', `timestamp must be ${TIME_FORMAT}; got ${preview(tsGiven)}`, rawOf(rawText, bytes));
  }
  if (given(otGiven)) {
    ot = parseRawTime(otGiven);
    if (Number.isNaN(ot)) return rejectWith('invalid_original_timestamp', `originalTimestamp must be ${TIME_FORMAT}; got ${preview(otGiven)}`, rawOf(rawText, bytes));
  }
  const sentRaw = given(msg.sentAt) ? msg.sentAt : batchSentAt;
  let sentAt = Number.NaN;
  if (given(sentRaw)) {
    // The batch's sentAt is the same value for all its items: parse it once.
    if (sentRaw !== lastSentRaw) {
      lastSentRaw = sentRaw;
      lastSentAt = parseRawTime(sentRaw);
    }
    sentAt = lastSentAt;
    if (Number.isNaN(sentAt)) return rejectWith('invalid_sent_at', `sentAt must be ${TIME_FORMAT}; got ${preview(sentRaw)}`, rawOf(rawText, bytes));
  }
  const eventTime = eventTimeOf(ts, ot, sentAt, ctx.receivedAt);
  const outside = timeWindowReject(eventTime, ctx);
  if (outside) return rejectWith(outside.code, outside.message, rawOf(rawText, bytes));


  // properties: a verbatim byte range where possible, else JSON.stringify of the parsed value.
  let props: unknown;
  let propsStart = -1;
  let propsEnd = -1;
  let propsPrefix: string | undefined;
  let properties: string | null = null;
  if (type === 'identify' || type === 'group') {
    props = msg.traits;
    if (props !== undefined && props !== null && bytes) {
      propsStart = bytes.traitsStart;
      propsEnd = bytes.traitsEnd;
    } else if (props === undefined || props === null) {
      props = get(context, ['traits']) ?? get(batchContext, ['traits']);
      if (!objectOrAbsent(props)) return rejectWith('invalid_traits', `context.traits must be an object, got ${typeOf(props)}`, rawOf(rawText, bytes));
    }
    if (type === 'group' && msg.groupId !== undefined) {
      props = { ...(isObject(props) ? props : {}), groupId: msg.groupId };
      propsStart = -1;
    }
  } else if (type === 'alias') {
    props = msg.previousId === undefined ? msg.properties : { ...(isObject(msg.properties) ? msg.properties : {}), previousId: msg.previousId };
  } else {
    props = msg.properties;
    if (props !== undefined && props !== null && bytes) {
      propsStart = bytes.propsStart;
      propsEnd = bytes.propsEnd;
    }
    if ((type === 'screen' || type === 'page') && typeof msg.name === 'string') {
      if (!isObject(props)) {
        props = { name: msg.name };
        propsStart = -1;
      } else if (props.name === msg.name) {
        // already there (RudderStack's screen calls repeat it): keep the verbatim bytes
      } else if ('name' in props || propsStart < 0) {
        props = { ...props, name: msg.name };
        propsStart = -1;
      } else {
        let empty = true;
        for (const _ in props) {
          empty = false;
          break;
        }
        propsPrefix = `{"name":${JSON.stringify(msg.name)}${empty ? '' : ','}`;
        propsStart += 1; // after the object's '{'
      }
    }
  }
  if (propsStart < 0 && props !== undefined && props !== null) properties = JSON.stringify(props);

  const messageId = typeof mid === 'string' && mid !== '' ? mid : null;
  const event: IngestRow = {
    event_id: messageId ?? (bytes ? derivedEventId(ctx.writeKey, bytes.bytes.subarray(bytes.rawStart, bytes.rawEnd), idCall) : derivedEventId(ctx.writeKey, rawText!, idCall)),
    user_id: user,
    anonymous_id: anonymousId,
    event_type: eventType,
    event_time: eventTime,
    received_at: ctx.receivedAt,
    device_type: dim(context, batchContext, 'device', 'type'),
    os: dim(context, batchContext, 'os', 'name'),
    app_version: dim(context, batchContext, 'app', 'version'),
    country: dim(context, batchContext, 'location', 'country'),
    source: ctx.source,
    properties,
    raw: bytes ? null : rawText!,
    // Always the same fields in the same order: one hidden class for every row.
    bytes: bytes ? bytes.bytes : undefined,
    rawStart: bytes ? bytes.rawStart : -1,
    rawEnd: bytes ? bytes.rawEnd : -1,
    propsStart,
    propsEnd,
    propsPrefix,
  };
  return { ok: true, event };
}

/**
 * One Segment message (with its batch's context already merged, or none) → canonical event with
 * `raw` as a string. Convenience over {@link normalizeSegmentItem} for tests and tools.
 */
export function normalizeSegment(input: unknown, defaultType: string | undefined, batchSentAt: unknown, ctx: NormalizeContext): NormalizeResult {
  return normalizeSegmentItem(input, defaultType, batchSentAt, undefined, ctx);
}

/** Merges a batch-level context under an item's own context (the item wins, one level deep). */
export function mergeContext(item: unknown, batchContext: unknown): unknown {
  if (!isObject(batchContext) || !isObject(item)) return item;
  const own = isObject(item.context) ? item.context : {};
  const merged: Record<string, unknown> = { ...batchContext };
  for (const [k, v] of Object.entries(own)) {
    const base = merged[k];
    merged[k] = isObject(v) && isObject(base) ? { ...base, ...v } : v;
  }
  return { ...item, context: merged };
}

const CANONICAL_DIMS = ['device_type', 'os', 'app_version', 'country'] as const;
const dimStr = (v: unknown): string | null => (typeof v === 'string' && v !== '' ? v : null);

/** A cheap shape check for JSON object text given as a string (full parsing would cost the hot path). */
/**
 * What is wrong with properties given as JSON text, or undefined: it must be an object's valid JSON
 * (a line holding `"properties":"{not json}"` made every `properties->>'$.x'` query over the lake
 * fail in DuckDB), nested no deeper than the line itself may be.
 */
function propertiesTextError(text: string, maxDepth: number): { code: RejectCode; message: string } | undefined {
  if (!looksLikeJsonObject(text)) return { code: 'invalid_properties', message: 'properties must be a JSON object (or its JSON text)' };
  const depth = jsonValueDepth(Buffer.from(text));
  if (depth < 0) return { code: 'invalid_properties', message: 'properties is text that is not valid JSON (or nests deeper than 1024 levels); send the object itself or its valid JSON text' };
  if (depth > maxDepth) return { code: 'too_deep', message: `properties nests JSON deeper than ${maxDepth} levels; flatten it` };
  if (text.includes('\\u') && loneSurrogateEscape(Buffer.from(text)) >= 0) return { code: 'invalid_utf8', message: LONE_SURROGATE };
  return undefined;
}

function looksLikeJsonObject(s: string): boolean {
  let i = 0;
  let j = s.length - 1;
  while (i <= j && s.charCodeAt(i) <= 32) i++;
  while (j >= i && s.charCodeAt(j) <= 32) j--;
  const a = s.charCodeAt(i);
  const b = s.charCodeAt(j);
  return a === 123 && b === 125;
}

/**
 * One canonical event as sent to the NDJSON endpoint or read from an Arrow row: fields named as
 * the canonical columns; event_time as ISO string or epoch ms; properties as an object or JSON
 * text. `src` (optional): the line's byte ranges, for verbatim raw/properties.
 */
export function normalizeCanonical(input: unknown, ctx: NormalizeContext, rawText?: string, src?: ItemBytes): NormalizeResult {
  if (!isObject(input)) return rejectWith('not_an_object', 'each line must be a JSON object', rawOf(rawText, src, Array.isArray(input) ? 'an array' : input));
  const e = input;
  let bytes = src;
  if (hasPii(ctx.pii)) {
    applyPii(e, ctx.pii);
    rawText = JSON.stringify(e);
    bytes = undefined;
  }
  const rawBytes = bytes ? bytes.rawEnd - bytes.rawStart : rawText === undefined ? -1 : Buffer.byteLength(rawText);
  if (rawBytes > ctx.maxEventBytes) return rejectWith('event_too_large', `event is ${rawBytes} bytes; the limit is ${ctx.maxEventBytes}`, rawOf(rawText, bytes, e));
  const et = e.event_type;
  if (!given(et) || et === '') return rejectWith('missing_type', 'event_type must be a non-empty string', rawOf(rawText, bytes, e));
  if (typeof et !== 'string') return rejectWith('invalid_type', `event_type must be a string, got ${typeOf(et)}`, rawOf(rawText, bytes, e));
  if (et.length > MAX_EVENT_NAME_CHARS) return rejectWith('invalid_type', `event_type is ${et.length} UTF-16 code units long (an emoji counts 2); the limit is ${MAX_EVENT_NAME_CHARS}`, rawOf(rawText, bytes, e));
  const eventType = et;
  const badUser = idError('user_id', e.user_id);
  if (badUser !== undefined) return rejectWith('invalid_user_id', badUser, rawOf(rawText, bytes, e));
  const badAnonymous = idError('anonymous_id', e.anonymous_id);
  if (badAnonymous !== undefined) return rejectWith('invalid_anonymous_id', badAnonymous, rawOf(rawText, bytes, e));
  const anonymousId = str(e.anonymous_id);
  const user = str(e.user_id) ?? anonymousId;
  if (user === null) return rejectWith('missing_user', 'an event needs user_id or anonymous_id', rawOf(rawText, bytes, e));
  const eid = e.event_id;
  if (given(eid) && typeof eid !== 'string') return rejectWith('invalid_message_id', `event_id must be a string, got ${typeOf(eid)}`, rawOf(rawText, bytes, e));
  const t = parseRawTime(e.event_time);
  if (!given(e.event_time)) return rejectWith('invalid_timestamp', `event_time is missing; every event needs one, ${TIME_FORMAT}`, rawOf(rawText, bytes, e));
  if (Number.isNaN(t)) return rejectWith('invalid_timestamp', `event_time must be ${TIME_FORMAT}; got ${preview(e.event_time)}`, rawOf(rawText, bytes, e));
  const outside = timeWindowReject(t, ctx);
  if (outside) return rejectWith(outside.code, outside.message, rawOf(rawText, bytes, e));
  for (const f of CANONICAL_DIMS) {
    const v = e[f];
    if (given(v) && typeof v !== 'string') return rejectWith('invalid_dimension', `${f} must be a string, got ${typeOf(v)}`, rawOf(rawText, bytes, e));
  }
  if (given(e.source) && typeof e.source !== 'string') return rejectWith('invalid_field', `source must be a string, got ${typeOf(e.source)}`, rawOf(rawText, bytes, e));
  const props = e.properties;
  let properties: string | null = null;
  let propsStart = -1;
  let propsEnd = -1;
  if (typeof props === 'string') {
    const bad = props === '' ? undefined : propertiesTextError(props, ctx.maxJsonDepth ?? DEFAULT_MAX_JSON_DEPTH);
    if (bad !== undefined) return rejectWith(bad.code, bad.message, rawOf(rawText, bytes, e));
    properties = props === '' ? null : props;
  } else if (given(props)) {
    if (!isObject(props)) return rejectWith('invalid_properties', `properties must be an object (or its JSON text), got ${typeOf(props)}`, rawOf(rawText, bytes, e));
    if (bytes && bytes.propsStart >= 0) {
      propsStart = bytes.propsStart;
      propsEnd = bytes.propsEnd;
    } else properties = JSON.stringify(props);
  }
  const source = ctx.fixedSource ? ctx.source : (str(e.source) ?? ctx.source);
  const eventId = typeof eid === 'string' && eid !== '' ? eid : null;
  const event: IngestRow = {
    event_id:
      eventId ??
      (bytes
        ? derivedEventId(ctx.writeKey, bytes.bytes.subarray(bytes.rawStart, bytes.rawEnd))
        : derivedEventId(ctx.writeKey, rawText ?? `${user}\u0000${anonymousId ?? ''}\u0000${eventType}\u0000${t}\u0000${properties ?? ''}`)),
    user_id: user,
    anonymous_id: anonymousId,
    event_type: eventType,
    event_time: t,
    received_at: ctx.receivedAt,
    device_type: dimStr(e.device_type),
    os: dimStr(e.os),
    app_version: dimStr(e.app_version),
    country: dimStr(e.country),
    source,
    properties,
    raw: bytes ? null : (rawText ?? null),
    bytes: bytes ? bytes.bytes : undefined,
    rawStart: bytes ? bytes.rawStart : -1,
    rawEnd: bytes ? bytes.rawEnd : -1,
    propsStart,
    propsEnd,
    propsPrefix: undefined,
  };
  return { ok: true, event };
}
