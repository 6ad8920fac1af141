/**
 * Arrow over WebSocket: `GET /v1/stream` — for high-throughput producers (loadgen, server-side
 * pipelines) that already hold columnar data.
 *
 * Connect:  ws://host:port/v1/stream with `Authorization: Basic base64(writeKey:)` or
 *           `Bearer writeKey` (or `?writeKey=…` for clients that cannot set headers).
 *           Unknown/missing key → the upgrade is answered 401 (no socket).
 *
 * Client → server:
 *   binary  one Arrow IPC *stream* (schema message + record batches) per message, of the
 *           canonical columns of `ingestSchema` (common/schema.ts). Required: event_type,
 *           event_time (Timestamp, any unit, or epoch-ms number) and user_id or anonymous_id.
 *           Optional: event_id (derived from the row's content when null), anonymous_id,
 *           device_type, os, app_version, country, source, properties (JSON text), raw.
 *           Strings may be Utf8 or Dictionary<Utf8>. received_at and session_id are ignored
 *           (the server stamps receive time; the engine stamps sessions). Max message size:
 *           `wsMaxPayloadBytes` (default 16 MiB); bigger messages close the socket (uWS 1009).
 *   text    optional control message `{"seq":N}`: the next binary message gets sequence
 *           number N (then N+1, …). Without it, binary messages are numbered 0, 1, 2, … per
 *           connection. Use it to carry your own numbering across reconnects.
 *
 * Server → client, one JSON text message per binary message, possibly out of order (a batch
 * whose shards fsync sooner is acked sooner) — match acks by `seq`:
 *   {"seq":N,"ok":true,"accepted":A,"rejected":[{"index":i,"code":"…","message":"…"}],
 *    "offsets":[{"shard":s,"offset":o}]}                 — only after every row is fsync'd
 *   {"seq":N,"ok":false,"status":S,"code":"…","message":"…","retryAfter":sec?}
 *       S = 400 (not Arrow / bad schema: do not resend as is), 429/503 (resend after
 *       retryAfter seconds), 500. Nothing of a message that got ok:false was stored.
 *
 * Rows are validated like every other event (bad rows → DLQ with the row as JSON), re-sharded
 * by user_id and group-committed with the HTTP traffic. A resent message after a lost ack may
 * duplicate rows in the log; the engine's dedup by event_id removes them.
 */
import { tableFromIPC, type Table, type Vector } from 'apache-arrow';
import type { IngestRow } from '../batch-builder.js';
import { normalizeCanonical, type NormalizeContext } from '../normalize.js';
import type { WriteKey } from '../options.js';
import { refuse, type Admission, type DeadLetter, type Decoded, type Refusal } from './decoded.js';

/** Columns read from a producer's batch (received_at and session_id are the server's/engine's). */
const COLUMNS = ['event_id', 'user_id', 'anonymous_id', 'event_type', 'event_time', 'device_type', 'os', 'app_version', 'country', 'source', 'properties', 'raw'] as const;

/** A text control message, or undefined when it is not one. */
export function parseControl(text: string): { seq: number } | undefined {
  try {
    const m = JSON.parse(text) as { seq?: unknown };
    if (typeof m === 'object' && m !== null && Number.isSafeInteger(m.seq) && (m.seq as number) >= 0) return { seq: m.seq as number };
  } catch {
    // not JSON
  }
  return undefined;
}

export function decodeArrowMessage(bytes: Uint8Array, key: WriteKey, admission: Admission, context: (key: WriteKey) => NormalizeContext): Decoded | Refusal {
  let table: Table;
  try {
    table = tableFromIPC(bytes);
  } catch (err) {
    return refuse(400, 'malformed_arrow', `the message is not an Arrow IPC stream: ${(err as Error).message}`);
  }
  const cols = new Map<string, Vector>();
  for (const name of COLUMNS) {
    const c = table.getChild(name);
    if (c) cols.set(name, c);
  }
  const missing = ['event_type', 'event_time'].filter((n) => !cols.has(n));
  if (!cols.has('user_id') && !cols.has('anonymous_id')) missing.push('user_id');
  if (missing.length > 0) return refuse(400, 'invalid_schema', `the batch lacks column(s) ${missing.join(', ')}; send ingestSchema columns (see ingest/protocols/arrow-ws.ts)`);
  const refused = admission.admit(key, table.numRows);
  if (refused) return refused;
  const ctx = context(key);
  const names = [...cols.keys()];
  const vectors = names.map((n) => cols.get(n)!);
  const piiRules = ctx.pii.hash.length + ctx.pii.drop.length > 0;
  const rows: IngestRow[] = [];
  const rejects: DeadLetter[] = [];
  for (let i = 0; i < table.numRows; i++) {
    const row: Record<string, unknown> = {};
    for (let c = 0; c < names.length; c++) {
      let v: unknown = vectors[c]!.get(i);
      if (typeof v === 'bigint') v = Number(v);
      else if (v instanceof Date) v = v.getTime();
      row[names[c]!] = v;
    }
    const raw = typeof row.raw === 'string' ? row.raw : undefined;
    delete row.raw;
    const r = normalizeCanonical(row, ctx);
    if (r.ok) {
      // Under PII rules raw is the masked row re-serialized; the producer's raw is never stored.
      if (!piiRules) r.event.raw = raw ?? null;
      rows.push(r.event);
    } else rejects.push({ index: i, code: r.code, message: r.message, raw: piiRules ? r.raw : (raw ?? JSON.stringify(row)) });
  }
  return { kind: 'decoded', key, rows, rejects };
}
