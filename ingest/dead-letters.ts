/**
 * Encodes a request's rejected events as one `dlqSchema` Arrow IPC stream (one DLQ log record).
 * Rare path: Arrow builders are fine here.
 */
import { createHash } from 'node:crypto';
import { makeBuilder, makeData, RecordBatch, Struct, Table, tableToIPC } from 'apache-arrow';
import { dlqSchema } from '../common/schema.js';
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

/** One dlqSchema batch as IPC stream bytes. `receivedAt`: epoch ms. */
export function encodeDeadLetters(rejects: readonly DeadLetter[], source: string, writeKey: string, receivedAt: number): Uint8Array {
  const keyId = writeKeyId(writeKey);
  const columns: Record<string, (r: DeadLetter) => unknown> = {
    received_at: () => receivedAt,
    source: () => source,
    write_key_id: () => keyId,
    code: (r) => r.code,
    message: (r) => r.message,
    raw: (r) => r.raw,
  };
  const children = dlqSchema.fields.map((f) => {
    const b = makeBuilder({ type: f.type, nullValues: [null, undefined] });
    const get = columns[f.name]!;
    for (const r of rejects) b.append(get(r) as never);
    return b.finish().flush();
  });
  const batch = new RecordBatch(dlqSchema, makeData({ type: new Struct(dlqSchema.fields), length: rejects.length, nullCount: 0, children }));
  return tableToIPC(new Table([batch]), 'stream');
}
