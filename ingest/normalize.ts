/**
 * Validation and normalization of incoming events into the canonical event.
 *
 * Segment mapping (design): messageId → event_id (or a deterministic hash of the write key and
 * the event's content), userId ?? anonymousId → user_id, `event` (track) or the call type →
 * event_type, timestamp corrected for device clock skew with sentAt
 * (event_time = timestamp + (received_at − sentAt)), context.device.type / os.name /
 * app.version / location.country → dimensions, properties (traits for identify/group; the
 * call's `name` for screen/page) → properties JSON text.
 */
import { createHash } from 'node:crypto';
import type { PiiOptions } from './options.js';

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

export type RejectCode =
  | 'not_an_object'
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
  source: string;
  receivedAt: number;
  maxFutureSkewMs: number;
  maxEventBytes: number;
  pii: PiiOptions;
}

const SEGMENT_TYPES = new Set(['track', 'screen', 'page', 'identify', 'alias', 'group']);

/** Parses an ISO-8601 string or epoch-ms number; NaN when invalid. */
export function parseTime(v: unknown): number {
  if (typeof v === 'number') return Number.isFinite(v) ? v : NaN;
  if (typeof v !== 'string' || v.length < 10) return NaN;
  return Date.parse(v);
}

const str = (v: unknown): string | null => (typeof v === 'string' && v !== '' ? v : typeof v === 'number' && Number.isFinite(v) ? String(v) : null);

function get(obj: unknown, path: string[]): unknown {
  let cur = obj;
  for (const p of path) {
    if (typeof cur !== 'object' || cur === null) return undefined;
    cur = (cur as Record<string, unknown>)[p];
  }
  return cur;
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
        (parent as Record<string, unknown>)[leaf] = createHash('sha256').update(pii.salt).update(String(value)).digest('hex');
      }
    }
  }
}

/** Deterministic event id for an event sent without one: the same content from the same key gets the same id. */
export function derivedEventId(writeKey: string, raw: string): string {
  return `sl-${createHash('sha1').update(writeKey).update('\u0000').update(raw).digest('hex').slice(0, 32)}`;
}

type Result = { ok: true; event: CanonicalEvent } | { ok: false; code: RejectCode; message: string; raw: string };

function reject(code: RejectCode, message: string, raw: string): Result {
  return { ok: false, code, message, raw };
}

/**
 * One Segment message (already merged with its batch's context) → canonical event or a
 * rejection. `defaultType` is the endpoint's call type (`/v1/track` → 'track').
 */
export function normalizeSegment(input: unknown, defaultType: string | undefined, batchSentAt: unknown, ctx: NormalizeContext): Result {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return reject('not_an_object', 'each event must be a JSON object', JSON.stringify(input) ?? 'undefined');
  const msg = input as Record<string, unknown>;
  if (ctx.pii.drop.length + ctx.pii.hash.length > 0) applyPii(msg, ctx.pii);
  const raw = JSON.stringify(msg);
  if (Buffer.byteLength(raw) > ctx.maxEventBytes) return reject('event_too_large', `event is ${Buffer.byteLength(raw)} bytes; the limit is ${ctx.maxEventBytes}`, raw.slice(0, 4096));
  const type = typeof msg.type === 'string' ? msg.type : defaultType;
  if (type === undefined || !SEGMENT_TYPES.has(type)) return reject('invalid_type', `type must be one of track, screen, page, identify, alias, group; got ${JSON.stringify(msg.type)}`, raw);
  let eventType: string;
  if (type === 'track') {
    const e = str(msg.event);
    if (e === null) return reject('missing_event', 'a track call needs a non-empty "event" name', raw);
    eventType = e;
  } else eventType = type;
  const userId = str(msg.userId);
  const anonymousId = str(msg.anonymousId);
  const user = userId ?? anonymousId;
  if (user === null) return reject('missing_user', 'an event needs a userId or an anonymousId', raw);
  const tsRaw = msg.timestamp ?? msg.originalTimestamp;
  let eventTime = tsRaw === undefined ? ctx.receivedAt : parseTime(tsRaw);
  if (Number.isNaN(eventTime)) return reject('invalid_timestamp', `timestamp must be ISO-8601 or epoch ms, got ${JSON.stringify(tsRaw)}`, raw);
  const sentAt = parseTime(msg.sentAt ?? batchSentAt);
  if (tsRaw !== undefined && !Number.isNaN(sentAt)) eventTime = Math.round(eventTime + (ctx.receivedAt - sentAt));
  if (eventTime > ctx.receivedAt + ctx.maxFutureSkewMs) {
    return reject('future_timestamp', `timestamp ${new Date(eventTime).toISOString()} is more than ${ctx.maxFutureSkewMs} ms in the future`, raw);
  }
  const context = msg.context;
  let props: unknown = type === 'identify' || type === 'group' ? (msg.traits ?? get(context, ['traits'])) : msg.properties;
  if ((type === 'screen' || type === 'page') && typeof msg.name === 'string') {
    props = { ...(typeof props === 'object' && props !== null ? (props as object) : {}), name: msg.name };
  }
  const messageId = str(msg.messageId);
  return {
    ok: true,
    event: {
      event_id: messageId ?? derivedEventId(ctx.writeKey, raw),
      user_id: user,
      anonymous_id: anonymousId,
      event_type: eventType,
      event_time: eventTime,
      received_at: ctx.receivedAt,
      device_type: str(get(context, ['device', 'type'])),
      os: str(get(context, ['os', 'name'])),
      app_version: str(get(context, ['app', 'version'])),
      country: str(get(context, ['location', 'country'])),
      source: ctx.source,
      properties: props === undefined || props === null ? null : JSON.stringify(props),
      raw,
    },
  };
}

/** Merges a batch-level context under an item's own context (the item wins, one level deep). */
export function mergeContext(item: unknown, batchContext: unknown): unknown {
  if (typeof batchContext !== 'object' || batchContext === null || typeof item !== 'object' || item === null) return item;
  const msg = item as Record<string, unknown>;
  const own = (typeof msg.context === 'object' && msg.context !== null ? msg.context : {}) as Record<string, unknown>;
  const merged: Record<string, unknown> = { ...(batchContext as Record<string, unknown>) };
  for (const [k, v] of Object.entries(own)) {
    const base = merged[k];
    merged[k] = typeof v === 'object' && v !== null && !Array.isArray(v) && typeof base === 'object' && base !== null ? { ...base, ...v } : v;
  }
  return { ...msg, context: merged };
}

/**
 * One canonical event as sent to the NDJSON endpoint or read from an Arrow row: fields named as
 * the canonical columns; event_time as ISO string or epoch ms; properties as object or JSON text.
 */
export function normalizeCanonical(input: unknown, ctx: NormalizeContext, rawText?: string): Result {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return reject('not_an_object', 'each line must be a JSON object', rawText ?? String(input));
  const e = input as Record<string, unknown>;
  if (ctx.pii.drop.length + ctx.pii.hash.length > 0) {
    applyPii(e, ctx.pii);
    rawText = JSON.stringify(e);
  }
  const raw = rawText ?? JSON.stringify(e);
  if (Buffer.byteLength(raw) > ctx.maxEventBytes) return reject('event_too_large', `event is ${Buffer.byteLength(raw)} bytes; the limit is ${ctx.maxEventBytes}`, raw.slice(0, 4096));
  const eventType = str(e.event_type);
  if (eventType === null) return reject('missing_event', 'event_type must be a non-empty string', raw);
  const anonymousId = str(e.anonymous_id);
  const user = str(e.user_id) ?? anonymousId;
  if (user === null) return reject('missing_user', 'an event needs user_id or anonymous_id', raw);
  const t = parseTime(e.event_time);
  if (Number.isNaN(t)) return reject('invalid_timestamp', `event_time must be ISO-8601 or epoch ms, got ${JSON.stringify(e.event_time)}`, raw);
  if (t > ctx.receivedAt + ctx.maxFutureSkewMs) return reject('future_timestamp', `event_time ${new Date(t).toISOString()} is more than ${ctx.maxFutureSkewMs} ms in the future`, raw);
  for (const f of ['device_type', 'os', 'app_version', 'country'] as const) {
    if (e[f] !== undefined && e[f] !== null && typeof e[f] !== 'string') return reject('invalid_field', `${f} must be a string`, raw);
  }
  const props = e.properties;
  return {
    ok: true,
    event: {
      event_id: str(e.event_id) ?? derivedEventId(ctx.writeKey, raw),
      user_id: user,
      anonymous_id: anonymousId,
      event_type: eventType,
      event_time: t,
      received_at: ctx.receivedAt,
      device_type: str(e.device_type),
      os: str(e.os),
      app_version: str(e.app_version),
      country: str(e.country),
      source: str(e.source) ?? ctx.source,
      properties: props === undefined || props === null ? null : typeof props === 'string' ? props : JSON.stringify(props),
      raw,
    },
  };
}
