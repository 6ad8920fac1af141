/** Test batches built with Arrow JS's own builders (each dictionary column gets the batch's own dictionary). */
import { makeBuilder, makeData, RecordBatch, Struct, type Schema } from 'apache-arrow';
import type { IngestRow } from '../../ingest/batch-builder.js';

export function batchOf(schema: Schema, rows: Array<Record<string, unknown>>): RecordBatch {
  const children = schema.fields.map((f) => {
    const b = makeBuilder({ type: f.type, nullValues: [null, undefined] });
    for (const r of rows) b.append(r[f.name] as never);
    return b.finish().flush();
  });
  return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: rows.length, nullCount: 0, children }));
}

/** One ingest row of `user` at event time `t` (received at the same time), the rest fixed: for engine tests that only need ids, users and times. */
export function ingestRow(id: string, user: string, t: number, extra: Partial<IngestRow> = {}): IngestRow {
  return { event_id: id, user_id: user, anonymous_id: null, event_type: 'Application Opened', event_time: t, received_at: t, device_type: 'ios', os: 'iOS', app_version: '4.0', country: 'DE', source: 'test', properties: null, raw: null, ...extra };
}
