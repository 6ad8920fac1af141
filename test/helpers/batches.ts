/** Test batches built with Arrow JS's own builders (each dictionary column gets the batch's own dictionary). */
import { makeBuilder, makeData, RecordBatch, Struct, type Schema } from 'apache-arrow';

export function batchOf(schema: Schema, rows: Array<Record<string, unknown>>): RecordBatch {
  const children = schema.fields.map((f) => {
    const b = makeBuilder({ type: f.type, nullValues: [null, undefined] });
    for (const r of rows) b.append(r[f.name] as never);
    return b.finish().flush();
  });
  return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: rows.length, nullCount: 0, children }));
}
