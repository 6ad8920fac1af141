/**
 * Ingest server options, defaults and validator (exact messages, pinned by tests).
 */
import type { Logger } from 'pino';
import { userError } from '../common/errors.js';

export interface WriteKey {
  key: string;
  /** Source name stamped on events sent with this key. Default 'segment' / 'ndjson' / 'arrow' by protocol. */
  source?: string;
}

export interface PiiOptions {
  /** Paths (e.g. `context.ip`, `properties.email`, `traits.phone`) whose values are replaced by a salted SHA-256. */
  hash: string[];
  /** Paths removed before anything is stored. */
  drop: string[];
  salt: string;
}

export interface IngestOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  writeKeys: WriteKey[];
  /** Per event, bytes of its JSON. Segment: 32 KB. */
  maxEventBytes: number;
  /** Per request body, after gunzip. Segment: 500 KB. */
  maxBodyBytes: number;
  /** Events per batch request. Segment: 2,500. */
  maxBatchEvents: number;
  /** Events timestamped further than this in the future (after skew correction) are rejected. */
  maxFutureSkewMs: number;
  /** Token bucket per write key. */
  rateLimit: { eventsPerSecond: number; burst: number };
  /** 503 while the engine has more acknowledged-but-unprocessed events than this. */
  maxBacklogEvents: number;
  /** 503 while a shard log has more unsynced bytes than this. */
  maxLogPendingBytes: number;
  pii: PiiOptions;
  /** Group commit: a shard record is appended when it has this many rows, or at the end of the event-loop turn. */
  groupCommitMaxRows: number;
  /** WebSocket maximum message size (uWS drops larger ones unless set). */
  wsMaxPayloadBytes: number;
  logger?: Logger;
}

export function defaultIngestOptions(): IngestOptions {
  return {
    host: '127.0.0.1',
    port: 8080,
    writeKeys: [],
    maxEventBytes: 32 * 1024,
    maxBodyBytes: 500 * 1024,
    maxBatchEvents: 2500,
    maxFutureSkewMs: 10 * 60_000,
    rateLimit: { eventsPerSecond: 1_000_000, burst: 2_000_000 },
    maxBacklogEvents: 2_000_000,
    maxLogPendingBytes: 256 * 1024 * 1024,
    pii: { hash: [], drop: [], salt: '' },
    groupCommitMaxRows: 16_384,
    wsMaxPayloadBytes: 64 * 1024 * 1024,
  };
}

export function validateIngestOptions(partial: Partial<IngestOptions>): IngestOptions {
  const o: IngestOptions = { ...defaultIngestOptions(), ...Object.fromEntries(Object.entries(partial).filter(([, v]) => v !== undefined)) };
  o.pii = { ...defaultIngestOptions().pii, ...partial.pii };
  o.rateLimit = { ...defaultIngestOptions().rateLimit, ...partial.rateLimit };
  const posInt = (name: string, v: number): void => {
    if (!Number.isInteger(v) || v <= 0) throw userError('invalid_option', `${name} must be a positive integer, got ${v}`);
  };
  if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535) throw userError('invalid_option', `port must be an integer in 0..65535, got ${o.port}`);
  if (o.writeKeys.length === 0) throw userError('invalid_option', 'writeKeys must name at least one write key');
  for (const k of o.writeKeys) if (typeof k.key !== 'string' || k.key === '') throw userError('invalid_option', 'writeKeys entries must have a non-empty key');
  posInt('maxEventBytes', o.maxEventBytes);
  posInt('maxBodyBytes', o.maxBodyBytes);
  posInt('maxBatchEvents', o.maxBatchEvents);
  posInt('groupCommitMaxRows', o.groupCommitMaxRows);
  posInt('wsMaxPayloadBytes', o.wsMaxPayloadBytes);
  posInt('maxBacklogEvents', o.maxBacklogEvents);
  posInt('maxLogPendingBytes', o.maxLogPendingBytes);
  if (!(o.maxFutureSkewMs >= 0)) throw userError('invalid_option', `maxFutureSkewMs must be ≥ 0, got ${o.maxFutureSkewMs}`);
  if (!(o.rateLimit.eventsPerSecond > 0) || !(o.rateLimit.burst >= 1)) {
    throw userError('invalid_option', `rateLimit needs eventsPerSecond > 0 and burst ≥ 1, got ${JSON.stringify(o.rateLimit)}`);
  }
  return o;
}
