/**
 * Encodes a request's rejected events as one `dlqSchema` Arrow IPC stream (one DLQ log record).
 * Written by the fixed-layout IPC writer like the shard records: with 0.5 % invalid events about
 * a quarter of 50-event Segment requests carry a reject, and Arrow JS's builders plus
 * tableToIPC cost ≈ 0.6 ms per call whatever the row count — as much ack-thread CPU per event
 * as the JSON parse (bench/results/cpu-2026-12-02.md).
 */
import { createHash } from 'node:crypto';
import { RecordBatch, Struct, Table, makeData, tableToIPC } from 'apache-arrow';
import { dlqSchema } from '../common/schema.js';
import { Utf8Column } from './batch-builder.js';
import { encodeIpcStream, schemaMessageOf, type ColumnParts } from '../common/ipc-write.js';
import type { DeadLetter } from './protocols/decoded.js';

const keyIds = new Map<string, string>();

/** A stable, non-reversible id of a write key for the DLQ (the key itself is a credential). */
export function writeKeyId(key: string): string {
  let id = keyIds.get(key);
  if (id === undefined) {
    id = `wk-${createHash('sha256').update(key).digest('hex').slice(0, 12)}`;
    if (keyIds.size < 10_000) keyIds.set(key, id);
  }
  return id;
}

let schemaBytes: Uint8Array | undefined;
/** dlqSchema's encapsulated schema message, encoded once by Arrow JS. */
function schemaMessage(): Uint8Array {
  if (schemaBytes === undefined) {
    const empty = new RecordBatch(dlqSchema, makeData({ type: new Struct(dlqSchema.fields), length: 0, nullCount: 0, children: dlqSchema.fields.map((f) => makeData({ type: f.type, length: 0 } as never)) }));
    schemaBytes = schemaMessageOf(tableToIPC(new Table([empty]), 'stream'));
  }
  return schemaBytes;
}

// Reused across calls (the ack thread is single-threaded; encodeIpcStream copies the bytes out).
const columns = { source: new Utf8Column(), keyId: new Utf8Column(), code: new Utf8Column(), message: new Utf8Column(16, 96), raw: new Utf8Column(16, 512) };
const EMPTY = new Uint8Array(0);

/** One dlqSchema batch as IPC stream bytes (fresh, owned by the caller). `receivedAt`: epoch ms. */
export function encodeDeadLetters(rejects: readonly DeadLetter[], source: string, writeKey: string, receivedAt: number): Uint8Array {
  const keyId = writeKeyId(writeKey);
  const n = rejects.length;
  const c = columns;
  for (const col of [c.source, c.keyId, c.code, c.message, c.raw]) col.reset();
  const times = new Int32Array(n * 2);
  for (let i = 0; i < n; i++) {
    const r = rejects[i]!;
    times[2 * i] = receivedAt % 4294967296;
    times[2 * i + 1] = Math.floor(receivedAt / 4294967296);
    c.source.pushString(source);
    c.keyId.pushString(keyId);
    c.code.pushString(r.code);
    c.message.pushString(r.message);
    c.raw.pushString(r.raw);
  }
  const parts: ColumnParts[] = [{ length: n, nullCount: 0, buffers: [EMPTY, new Uint8Array(times.buffer)] }, c.source.parts(), c.keyId.parts(), c.code.parts(), c.message.parts(), c.raw.parts()];
  return encodeIpcStream(schemaMessage(), [], parts, n);
}
