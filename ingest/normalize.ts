/**
 * Validation and normalization of incoming events into the canonical event.
 *
 * Segment mapping (design): messageId → event_id (or a deterministic hash of the write key and
 * the event's raw JSON), userId ?? anonymousId → user_id, `event` (track) or the call type →
 * event_type, timestamp corrected for device clock skew with sentAt
 * (event_time = timestamp + (received_at − sentAt)), context.device.type / os.name /
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

/** Per-event reject codes (also the `code` column of the DLQ and the label of the rejects metric). */
export type RejectCode =
  | 'not_an_object'
  | 'malformed_json'
  | 'missing_type'
  | 'invalid_type'
  | 'missing_event'
  | 'missing_user'
  | 'invalid_timestamp'
  | 'future_timestamp'
  | 'event_too_large'
  | 'invalid_field';

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
  maxEventBytes: number;
  pii: PiiOptions;
}

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

/** context[a][b] of the item, else of the batch (Segment merges batch context under the item's). */
function dim(item: unknown, batch: unknown, a: string, b: string): string | null {
  const own = isObject(item) ? item[a] : undefined;
  const v = isObject(own) && b in own ? own[b] : isObject(batch) && isObject(batch[a]) ? (batch[a] as Record<string, unknown>)[b] : undefined;
  return str(v);
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
 * corrected one), so a client retry of the same event gets the same id.
 */
export function derivedEventId(writeKey: string, content: string | Uint8Array): string {
  return `sl-${createHash('sha1').update(writeKey).update('\u0000').update(content).digest('hex').slice(0, 32)}`;
}

let lastSentRaw: unknown;
let lastSentAt = Number.NaN;

/** The event's raw JSON as a string (for rejects): the given text, else its bytes, else re-serialized. */
function rawOf(rawText: string | undefined, bytes: ItemBytes | undefined, value?: unknown): string {
  if (rawText !== undefined) return rawText;
  if (bytes) return Buffer.from(bytes.bytes.buffer, bytes.bytes.byteOffset + bytes.rawStart, bytes.rawEnd - bytes.rawStart).toString('utf8');
  return JSON.stringify(value) ?? 'undefined';
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
  const t = msg.type;
  const type = t === undefined || t === null ? call : t;
  if (type === undefined) return rejectWith('missing_type', 'an event in a batch needs a "type": track, screen, page, identify, alias or group', rawOf(rawText, bytes));
  if (typeof type !== 'string' || !SEGMENT_TYPES.has(type)) return rejectWith('invalid_type', `type must be one of track, screen, page, identify, alias, group; got ${JSON.stringify(type)}`, rawOf(rawText, bytes));
  let eventType: string;
  if (type === 'track') {
    const e = str(msg.event);
    if (e === null) return rejectWith('missing_event', 'a track call needs a non-empty "event" name', rawOf(rawText, bytes));
    eventType = e;
  } else eventType = type;
  const u = msg.userId;
  const a = msg.anonymousId;
  if ((u !== undefined && u !== null && typeof u !== 'string' && typeof u !== 'number') || (a !== undefined && a !== null && typeof a !== 'string' && typeof a !== 'number')) {
    return rejectWith('invalid_field', 'userId and anonymousId must be strings', rawOf(rawText, bytes));
  }
  const userId = str(u);
  const anonymousId = str(a);
  const user = userId ?? anonymousId;
  if (user === null) return rejectWith('missing_user', 'an event needs a userId or an anonymousId', rawOf(rawText, bytes));
  let tsRaw = msg.timestamp;
  if (tsRaw === undefined || tsRaw === null) tsRaw = msg.originalTimestamp;
  let eventTime: number;
  if (tsRaw === undefined || tsRaw === null) eventTime = ctx.receivedAt;
  else {
    eventTime = parseTime(tsRaw);
    if (Number.isNaN(eventTime)) return rejectWith('invalid_timestamp', `timestamp must be ISO-8601 (e.g. 2024-05-01T12:00:00.000Z) or epoch ms, got ${JSON.stringify(tsRaw)}`, rawOf(rawText, bytes));
    const sentRaw = msg.sentAt ?? batchSentAt;
    if (sentRaw !== undefined && sentRaw !== null) {
      // The batch's sentAt is the same value for all its items: parse it once.
      if (sentRaw !== lastSentRaw) {
        lastSentRaw = sentRaw;
        lastSentAt = parseTime(sentRaw);
      }
      const sentAt = lastSentAt;
      if (Number.isNaN(sentAt)) return rejectWith('invalid_timestamp', `sentAt must be ISO-8601 or epoch ms, got ${JSON.stringify(sentRaw)}`, rawOf(rawText, bytes));
      eventTime += ctx.receivedAt - sentAt;
    }
  }
  if (eventTime > ctx.receivedAt + ctx.maxFutureSkewMs) {
    return rejectWith('future_timestamp', `timestamp ${new Date(eventTime).toISOString()} is more than ${ctx.maxFutureSkewMs} ms in the future (after clock-skew correction)`, rawOf(rawText, bytes));
  }
  const context = msg.context;

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
    } else if (props === undefined || props === null) props = get(context, ['traits']) ?? get(batchContext, ['traits']);
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

  const messageId = str(msg.messageId);
  const event: IngestRow = {
    event_id: messageId ?? (bytes ? derivedEventId(ctx.writeKey, bytes.bytes.subarray(bytes.rawStart, bytes.rawEnd)) : derivedEventId(ctx.writeKey, rawText!)),
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

/** A cheap shape check for JSON text given as a string (full parsing would cost the hot path). */
function looksLikeJsonObjectOrArray(s: string): boolean {
  let i = 0;
  let j = s.length - 1;
  while (i <= j && s.charCodeAt(i) <= 32) i++;
  while (j >= i && s.charCodeAt(j) <= 32) j--;
  const a = s.charCodeAt(i);
  const b = s.charCodeAt(j);
  return (a === 123 && b === 125) || (a === 91 && b === 93);
}

/**
 * One canonical event as sent to the NDJSON endpoint or read from an Arrow row: fields named as
 * the canonical columns; event_time as ISO string or epoch ms; properties as an object or JSON
 * text. `src` (optional): the line's byte ranges, for verbatim raw/properties.
 */
export function normalizeCanonical(input: unknown, ctx: NormalizeContext, rawText?: string, src?: ItemBytes): NormalizeResult {
  if (!isObject(input)) return rejectWith('not_an_object', 'each line must be a JSON object', rawText ?? String(input));
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
  if (et === undefined || et === null || et === '') return rejectWith('missing_type', 'event_type must be a non-empty string', rawOf(rawText, bytes, e));
  const eventType = str(et);
  if (eventType === null) return rejectWith('invalid_type', `event_type must be a string, got ${JSON.stringify(et)}`, rawOf(rawText, bytes, e));
  const anonymousId = str(e.anonymous_id);
  const user = str(e.user_id) ?? anonymousId;
  if (user === null) return rejectWith('missing_user', 'an event needs user_id or anonymous_id', rawOf(rawText, bytes, e));
  const t = parseTime(e.event_time);
  if (Number.isNaN(t)) return rejectWith('invalid_timestamp', `event_time must be ISO-8601 or epoch ms, got ${JSON.stringify(e.event_time)}`, rawOf(rawText, bytes, e));
  if (t > ctx.receivedAt + ctx.maxFutureSkewMs) return rejectWith('future_timestamp', `event_time ${new Date(t).toISOString()} is more than ${ctx.maxFutureSkewMs} ms in the future`, rawOf(rawText, bytes, e));
  for (const f of CANONICAL_DIMS) {
    const v = e[f];
    if (v !== undefined && v !== null && typeof v !== 'string') return rejectWith('invalid_field', `${f} must be a string`, rawOf(rawText, bytes, e));
  }
  const props = e.properties;
  let properties: string | null = null;
  let propsStart = -1;
  let propsEnd = -1;
  if (typeof props === 'string') {
    if (props !== '' && !looksLikeJsonObjectOrArray(props)) return rejectWith('invalid_field', 'properties must be a JSON object (or its JSON text)', rawOf(rawText, bytes, e));
    properties = props === '' ? null : props;
  } else if (props !== undefined && props !== null) {
    if (bytes && bytes.propsStart >= 0) {
      propsStart = bytes.propsStart;
      propsEnd = bytes.propsEnd;
    } else properties = JSON.stringify(props);
  }
  const source = ctx.fixedSource ? ctx.source : (str(e.source) ?? ctx.source);
  const eventId = str(e.event_id);
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
    device_type: str(e.device_type),
    os: str(e.os),
    app_version: str(e.app_version),
    country: str(e.country),
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
