/**
 * Request bodies for each protocol from generated events. Segment bodies reuse each message's
 * cached JSON (`GeneratedEvent.json`), so a duplicate costs no second serialization.
 */
import { IngestBatchBuilder } from '../ingest/batch-builder.js';
import type { CanonicalEvent } from '../ingest/normalize.js';
import { FUTURE_MS, type GeneratedEvent } from './generator.js';

/** The JSON of an event's Segment message, serialized once. */
export function messageJson(e: GeneratedEvent): string {
  return (e.json ??= JSON.stringify(e.message));
}

/** `{"batch":[…],"sentAt":…}` — sentAt (device clock) only when given. */
export function segmentBody(events: readonly GeneratedEvent[], sentAt?: string): string {
  let body = '{"batch":[';
  for (let i = 0; i < events.length; i++) {
    if (i > 0) body += ',';
    body += messageJson(events[i]!);
  }
  body += ']';
  if (sentAt !== undefined) body += `,"sentAt":"${sentAt}"`;
  return body + '}';
}

/**
 * The event time a canonical (NDJSON / Arrow) producer sends: the true time — such producers
 * are servers with good clocks, so no skew — or what makes an invalid event invalid.
 */
function canonicalTime(e: GeneratedEvent): number {
  return e.invalid === 'future_timestamp' || e.invalid === 'bad_timestamp' ? e.eventTime + FUTURE_MS : e.eventTime;
}

/** One NDJSON line: the canonical event's fields (event_time in epoch ms, properties as an object). */
export function ndjsonLine(e: GeneratedEvent): string {
  const m = e.message;
  const c = m.context;
  const row: Record<string, unknown> = { event_id: m.messageId };
  if (e.invalid !== 'missing_user') {
    if (m.userId !== undefined) row.user_id = m.userId;
    row.anonymous_id = m.anonymousId ?? null;
  }
  if (e.invalid !== 'missing_event') row.event_type = e.eventType;
  row.event_time = e.invalid === 'bad_timestamp' ? 'not-a-time' : canonicalTime(e);
  row.device_type = c.device.type;
  row.os = c.os.name;
  row.app_version = c.app.version;
  row.country = c.location.country;
  row.properties = m.type === 'screen' ? { name: m.name, ...m.properties } : m.properties;
  return JSON.stringify(row);
}

export function ndjsonBody(events: readonly GeneratedEvent[]): string {
  let body = '';
  for (const e of events) body += ndjsonLine(e) + '\n';
  return body;
}

/** The canonical row an Arrow producer sends (an unparseable time cannot be Arrow: it goes ten years ahead instead). */
export function canonicalRow(e: GeneratedEvent, receivedAt: number): CanonicalEvent {
  const m = e.message;
  const c = m.context;
  return {
    event_id: m.messageId,
    user_id: e.invalid === 'missing_user' ? '' : e.userId,
    anonymous_id: e.invalid === 'missing_user' ? null : (m.anonymousId ?? null),
    event_type: e.eventType,
    event_time: canonicalTime(e),
    received_at: receivedAt,
    device_type: c.device.type,
    os: c.os.name,
    app_version: c.app.version,
    country: c.location.country,
    source: 'loadgen',
    properties: JSON.stringify(m.type === 'screen' ? { name: m.name, ...m.properties } : m.properties),
    raw: null,
  };
}

/** Arrow IPC stream bytes (one record batch of ingestSchema); `builder` is reset and reused. */
export function arrowBody(events: readonly GeneratedEvent[], builder: IngestBatchBuilder, receivedAt: number): Uint8Array {
  builder.reset();
  for (const e of events) builder.push(canonicalRow(e, receivedAt));
  const bytes = builder.toIPC();
  builder.reset();
  return bytes;
}

export { IngestBatchBuilder };
