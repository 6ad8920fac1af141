/**
 * `recordBatchOf(schema, length, children)`: a RecordBatch of columns that already have the
 * batch's length, without Arrow JS's per-batch constructor work. That constructor checks every
 * column's length and, whatever it finds, rebuilds the Schema (`schema.assign`: a new Schema, its
 * metadata maps merged, its dictionary map rebuilt) and the struct Data. On the engine's hot path
 * (several batches per log record: the record, its bronze and silver forms, per-partition takes)
 * that was a visible share of the CPU, and the fresh Schema defeated every cache keyed by schema.
 *
 * The result is what the constructor leaves for equal-length columns — `schema`, `data` (a
 * struct Data of `children`), empty batch metadata — with the caller's Schema object itself. A
 * column of another length goes through the constructor (which makes it nullable and backfills).
 */
import { Data, RecordBatch, Struct, type Schema } from 'apache-arrow';

/** Schema → the struct type of its batches, made once per schema. */
const structOf = new WeakMap<Schema, Struct>();
/** The struct's validity, as makeData leaves it for a struct without nulls. */
const NO_NULLS = new Uint8Array(0);

export function recordBatchOf(schema: Schema, length: number, children: Data[]): RecordBatch {
  let type = structOf.get(schema);
  if (type === undefined) structOf.set(schema, (type = new Struct(schema.fields)));
  const data = new Data(type, 0, length, 0, [undefined, undefined, NO_NULLS] as never, children);
  if (children.length !== schema.fields.length || children.some((c) => c.length !== length)) return new RecordBatch(schema, data);
  const batch = Object.create(RecordBatch.prototype) as RecordBatch;
  Object.assign(batch, { schema, data, _metadata: new Map<string, string>() });
  return batch;
}
