/**
 * Deterministic engine benchmark input: the loadgen's seeded traffic (zipf users, sessions,
 * duplicates, out-of-order delivery) as pre-built ingestSchema batches, the shape a shard reads
 * from its log. Shared by bench/engine-kernels.bench.ts and the perf-regression cases.
 */
import type { RecordBatch } from 'apache-arrow';
import { IngestBatchBuilder } from '../ingest/batch-builder.js';
import { TrafficGenerator } from '../loadgen/generator.js';

export interface EngineBenchInput {
  batches: RecordBatch[];
  rows: number;
}

/** `rows` events of `users` users in batches of `batchRows` (2 % duplicates, 10 % out of order by ≤ 2 min). */
export function engineBenchInput(rows: number, options: { users?: number; batchRows?: number; seed?: number } = {}): EngineBenchInput {
  const gen = new TrafficGenerator({
    seed: options.seed ?? 7,
    users: options.users ?? 20_000,
    startTime: Date.UTC(2026, 10, 2),
    stepMs: 20,
    duplicateRate: 0.02,
    jitterMs: 120_000,
    outOfOrderRate: 0.1,
  });
  const batchRows = options.batchRows ?? 8192;
  const builder = new IngestBatchBuilder(batchRows);
  const batches: RecordBatch[] = [];
  for (let made = 0; made < rows; ) {
    const e = gen.next();
    if (e.kind === 'invalid') continue;
    const m = e.message;
    const c = m.context;
    const properties = m.type === 'screen' ? { name: m.name, ...m.properties } : m.properties;
    builder.push({
      event_id: m.messageId,
      user_id: e.userId,
      anonymous_id: m.anonymousId ?? null,
      event_type: e.eventType,
      event_time: e.eventTime,
      received_at: e.eventTime + 500,
      device_type: c.device.type,
      os: c.os.name,
      app_version: c.app.version,
      country: c.location.country,
      source: 'bench',
      properties: JSON.stringify(properties),
      raw: null,
    });
    made++;
    if (builder.full || made === rows) {
      batches.push(builder.build());
      builder.reset();
    }
  }
  return { batches, rows };
}
