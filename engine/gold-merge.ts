/**
 * Turns merged metric rows into gold Arrow batches (hourlyMetricsSchema / dailyMetricsSchema).
 * Low volume (one row per window × grouping-set combination), so builders are fine here.
 */
import { makeBuilder, makeData, RecordBatch, Struct, type Schema } from 'apache-arrow';
import { dailyMetricsSchema, hourlyMetricsSchema } from '../common/schema.js';
import { mergePartials } from './operators/aggregate-operator.js';

/** A gold metrics row; times in epoch ms, counts as numbers. */
export type MetricRow = Record<string, unknown>;

const toMillis = (v: unknown): number => {
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  if (v instanceof Date) return v.getTime();
  if (typeof v === 'string') return Date.parse(v.endsWith('Z') || /[+-]\d\d:?\d\d$/.test(v) ? v : `${v}Z`);
  throw new TypeError(`not a time: ${String(v)}`);
};

export function metricRowsToBatch(granularity: 'hourly' | 'daily', rows: MetricRow[]): RecordBatch {
  const schema: Schema = granularity === 'hourly' ? hourlyMetricsSchema : dailyMetricsSchema;
  const children = schema.fields.map((field) => {
    const b = makeBuilder({ type: field.type, nullValues: [null, undefined] });
    for (const row of rows) {
      const v = row[field.name];
      if (v === null || v === undefined) b.append(null);
      else if (field.name === 'window_start') b.append(toMillis(v) as never);
      else if (typeof field.type.ArrayType === 'function' && field.type.ArrayType === BigInt64Array) b.append(BigInt(Math.round(Number(v))) as never);
      else b.append(v as never);
    }
    return b.finish().flush();
  });
  return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: rows.length, nullCount: 0, children }));
}

/** Merges the per-shard partials of one window into its gold batch. */
export function mergeWindowPartials(granularity: 'hourly' | 'daily', partials: unknown[]): RecordBatch {
  return metricRowsToBatch(granularity, mergePartials(granularity, partials as never) as MetricRow[]);
}
