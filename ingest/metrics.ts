/**
 * Ingest's Prometheus metrics (default prom-client registry; served at GET /metrics together with
 * the engine's). Every rejected, rate-limited or refused event is counted here.
 */
import { Counter, Gauge, Histogram, register, type Metric } from 'prom-client';

function once<T extends Metric>(name: string, make: () => T): T {
  return (register.getSingleMetric(name) as T | undefined) ?? make();
}

export const ingestMetrics = {
  events: once('sluice_ingest_events_total', () => new Counter({ name: 'sluice_ingest_events_total', help: 'Events accepted and durably logged, by protocol.', labelNames: ['protocol'] })),
  bytes: once('sluice_ingest_bytes_total', () => new Counter({ name: 'sluice_ingest_bytes_total', help: 'Request body bytes received (before gunzip), by protocol.', labelNames: ['protocol'] })),
  requests: once('sluice_ingest_requests_total', () => new Counter({ name: 'sluice_ingest_requests_total', help: 'Requests answered, by protocol and status.', labelNames: ['protocol', 'status'] })),
  rejected: once('sluice_ingest_rejected_total', () => new Counter({ name: 'sluice_ingest_rejected_total', help: 'Events rejected (sent to the DLQ), by reason code.', labelNames: ['code'] })),
  rateLimited: once('sluice_ingest_rate_limited_total', () => new Counter({ name: 'sluice_ingest_rate_limited_total', help: 'Requests refused with 429 by the per-key rate limit.' })),
  backpressure: once('sluice_ingest_backpressure_total', () => new Counter({ name: 'sluice_ingest_backpressure_total', help: 'Requests refused with 503 because shard queues or logs were past their high-water marks.' })),
  fsyncSeconds: once(
    'sluice_log_fsync_seconds',
    () => new Histogram({ name: 'sluice_log_fsync_seconds', help: 'Duration of one group-commit fsync of a shard log.', buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1] }),
  ),
  ackSeconds: once(
    'sluice_ingest_ack_seconds',
    () => new Histogram({ name: 'sluice_ingest_ack_seconds', help: 'Time from request received to acknowledgement sent.', buckets: [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1, 5] }),
  ),
  queueDepth: once('sluice_engine_queue_depth_events', () => new Gauge({ name: 'sluice_engine_queue_depth_events', help: 'Events acknowledged but not yet processed by the shards.' })),
};

/** For SegmentLog's `onFsync` option. */
export function observeFsync(durationMs: number): void {
  ingestMetrics.fsyncSeconds.observe(durationMs / 1000);
}
