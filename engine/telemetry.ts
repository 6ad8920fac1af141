/**
 * The engine's Prometheus metrics (main thread, default prom-client registry, served by ingest's
 * /metrics). Workers report counts in their task results; the coordinator records them here, so
 * no dedup, late or processed event goes uncounted.
 */
import { Counter, Gauge, Histogram, register } from 'prom-client';

function counter(name: string, help: string): Counter {
  return (register.getSingleMetric(name) as Counter | undefined) ?? new Counter({ name, help });
}

export const engineMetrics = {
  processed: counter('sluice_engine_events_processed_total', 'Events processed by the shard pipelines (after the log).'),
  duplicates: counter('sluice_engine_dedup_hits_total', 'Events dropped as duplicates of an event id seen within the dedup TTL.'),
  tooLate: counter('sluice_engine_late_events_total', 'Events behind the watermark for an already emitted window (written to silver and late/).'),
  checkpointSeconds:
    (register.getSingleMetric('sluice_engine_checkpoint_seconds') as Histogram | undefined) ??
    new Histogram({
      name: 'sluice_engine_checkpoint_seconds',
      help: 'Duration of a full checkpoint: encode, stage, LMDB commit, publish, gold merge.',
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30],
    }),
  watermarkLag:
    (register.getSingleMetric('sluice_engine_watermark_lag_seconds') as Gauge | undefined) ??
    new Gauge({ name: 'sluice_engine_watermark_lag_seconds', help: 'Wall clock minus the global event-time watermark.' }),
};
