/**
 * What every protocol decoder hands the server: the accepted rows and the per-event rejects of
 * one request (or WebSocket message), or a whole-request failure with its HTTP status.
 */
import type { IngestRow } from '../batch-builder.js';
import type { RejectCode } from '../normalize.js';
import type { WriteKey } from '../options.js';

/** One rejected event: its position in the request, why, and its raw payload (for the DLQ). */
export interface DeadLetter {
  index: number;
  code: RejectCode;
  message: string;
  raw: string;
}

/** A refusal of the whole request (nothing stored). */
export interface Refusal {
  kind: 'refused';
  status: 400 | 401 | 413 | 429 | 503;
  code: string;
  message: string;
  headers?: Record<string, string>;
}

export interface Decoded {
  kind: 'decoded';
  key: WriteKey;
  rows: IngestRow[];
  rejects: DeadLetter[];
}

export const refuse = (status: Refusal['status'], code: string, message: string, headers?: Record<string, string>): Refusal => ({ kind: 'refused', status, code, message, headers });

/** The server's checks a decoder calls once it knows the key and the event count (auth, size, rate). */
export interface Admission {
  /** Resolves the write key (header first, then the body's `writeKey`), or refuses with 401. */
  authenticate(bodyKey: unknown): WriteKey | Refusal;
  /** Checks the event count against maxBatchEvents (413) and the key's rate limit (429). */
  admit(key: WriteKey, events: number): Refusal | undefined;
}
