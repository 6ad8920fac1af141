/**
 * The engine's Prometheus metrics (main thread, default prom-client registry, served by ingest's
 * /metrics). Workers report counts in their task results; the coordinator records them here, so
 * no dedup, late or processed event goes uncounted.
 */
import { Counter, Gauge, Histogram, register } from 'prom-client';

function counter(name: string, help: string, labelNames: string[] = []): Counter {
  return (register.getSingleMetric(name) as Counter | undefined) ?? new Counter({ name, help, labelNames });
}

function gauge(name: string, help: string, labelNames: string[] = []): Gauge {
  return (register.getSingleMetric(name) as Gauge | undefined) ?? new Gauge({ name, help, labelNames });
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
  /**
   * Where a checkpoint round's time goes: `shard` a shard's checkpoint as the coordinator waits for
   * it (behind the range in flight), `shard_commit` the shard runtime's own part of it (encode,
   * stage, LMDB, publish), `gold_merge`, `dlq_flush`, `erasure`.
   */
  checkpointStepSeconds:
    (register.getSingleMetric('sluice_engine_checkpoint_step_seconds') as Histogram | undefined) ??
    new Histogram({
      name: 'sluice_engine_checkpoint_step_seconds',
      help: 'Duration of one step of a checkpoint round, by step: shard (a shard\'s checkpoint as the coordinator waits for it, behind its range in flight), shard_commit (the shard runtime\'s own encode, stage, LMDB commit, publish), gold_merge, dlq_flush, erasure.',
      labelNames: ['step'],
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30],
    }),
  watermarkLag:
    (register.getSingleMetric('sluice_engine_watermark_lag_seconds') as Gauge | undefined) ??
    new Gauge({ name: 'sluice_engine_watermark_lag_seconds', help: 'Wall clock minus the global event-time watermark.' }),
  /** Every failed attempt, by target (`shard-N`, `coordinator`) and error code (`disk_full`, `store_stage_failed`, `s3_failed`, …). */
  checkpointFailures: counter('sluice_engine_checkpoint_failures_total', 'Failed checkpoint attempts (Parquet encode, object store, LMDB), by target and error code; each is retried with backoff.', ['target', 'code']),
  /** Consecutive failed attempts of a target now (0 once it succeeds again). */
  checkpointConsecutiveFailures: gauge('sluice_engine_checkpoint_consecutive_failures', 'Consecutive failed checkpoint attempts of a target (0 when its last attempt succeeded).', ['target']),
  checkpointFailing: gauge('sluice_engine_checkpoint_failing', 'Checkpoint targets (shards, the coordinator) whose last attempt failed.'),
  shardStopped: gauge('sluice_engine_shard_stopped', '1 while a shard is stopped by a failure that cannot be retried (restart to recover; other shards go on).', ['shard']),
  quarantined: counter('sluice_engine_quarantined_records_total', 'Log records that could not be processed and went to the DLQ instead (poison quarantine), by error code.', ['code']),
  shardHeld: counter('sluice_engine_shard_held_total', 'Times a shard stopped taking log ranges because it held maxUncommittedBytesPerShard of processed rows not yet committed (it goes on after the next checkpoint; the backlog waits in the log).'),
  logReadFailures: counter('sluice_engine_log_read_failures_total', 'Failed reads of a shard\'s log by the engine (e.g. JetStream unavailable longer than a read retries on its own), by target and error code; each is retried with backoff.', ['target', 'code']),
  logReadGaps: counter('sluice_engine_log_read_gaps_total', 'Records this process appended (acknowledged) that a read of the shard\'s log passed over; each was fetched by its offset instead (recovered: true) or is missing from the log (recovered: false — an acknowledged record the log lost).', ['recovered']),
  logFailures: counter('sluice_log_failures_total', 'Failed log appends (the request got 503), by log (shard-N, dlq) and error code.', ['log', 'code']),
  logFailed: gauge('sluice_log_failed', '1 while a log is failed (e.g. disk full) and appends get 503 until it is reopened.', ['log']),
  logReopens: counter('sluice_log_reopens_total', 'Failed logs reopened once the disk had room again (no restart).', ['log']),
  rangeRecords:
    (register.getSingleMetric('sluice_engine_range_records') as Histogram | undefined) ??
    new Histogram({
      name: 'sluice_engine_range_records',
      help: 'Log records per worker task: a shard consumes its log in ranges that grow with the lag.',
      buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000],
    }),
  /** Per shard, after its last checkpoint: the dedup hot table grows by doublings to a cap derived from --max-memory, then stays. */
  dedupHotBytes: gauge('sluice_engine_dedup_hot_bytes', 'Bytes of a shard\'s in-memory dedup id table after its last checkpoint: it grows by doublings up to a bound derived from --max-memory (engine.dedupHotCapacity ids), then stays.', ['shard']),
  dedupHotIds: gauge('sluice_engine_dedup_hot_ids', 'Event ids in a shard\'s in-memory dedup table after its last checkpoint (older ones are in LMDB only).', ['shard']),
  ready: gauge('sluice_engine_ready', '1 when the engine has no failing checkpoint, stopped shard or failed log (GET /readyz says why not).'),
};
