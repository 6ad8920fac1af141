/**
 * Ingest's Prometheus metrics, on prom-client's default registry (`register`), which GET /metrics
 * serves — the engine registers its own metrics on the same registry. Every accepted, rejected,
 * rate-limited or refused event or request is counted here; nothing is dropped silently.
 */
import { constants, monitorEventLoopDelay, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { Counter, Gauge, Histogram, register, type Metric } from 'prom-client';

/** Event-loop delay of this thread (ingest's: the ack thread), sampled every 5 ms, reset at each scrape. */
const LOOP_DELAY_RESOLUTION_MS = 5;
const loopDelay = monitorEventLoopDelay({ resolution: LOOP_DELAY_RESOLUTION_MS });
loopDelay.enable();
/** The histogram records the whole interval between its timer's runs: the delay is what exceeds the resolution. */
const loopDelaySeconds = (ns: number): number => Math.max(0, ns / 1e9 - LOOP_DELAY_RESOLUTION_MS / 1000);

/** perf_hooks' GC kinds, as the metric's `kind` label. */
const GC_KINDS: Record<number, string> = {
  [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
  [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
};

function once<T extends Metric>(name: string, make: () => T): T {
  return (register.getSingleMetric(name) as T | undefined) ?? make();
}

export const ingestMetrics = {
  /** Events accepted and durably logged (acknowledged), by protocol (segment | ndjson | arrow). */
  events: once('sluice_ingest_events_total', () => new Counter({ name: 'sluice_ingest_events_total', help: 'Events accepted and durably logged, by protocol.', labelNames: ['protocol'] })),
  bytes: once('sluice_ingest_bytes_total', () => new Counter({ name: 'sluice_ingest_bytes_total', help: 'Request body bytes received (before gunzip), by protocol.', labelNames: ['protocol'] })),
  requests: once('sluice_ingest_requests_total', () => new Counter({ name: 'sluice_ingest_requests_total', help: 'Requests (WebSocket messages) answered, by protocol and status.', labelNames: ['protocol', 'status'] })),
  rejected: once('sluice_ingest_rejected_total', () => new Counter({ name: 'sluice_ingest_rejected_total', help: 'Events rejected (sent to the DLQ), by reason code.', labelNames: ['code'] })),
  bodyTimeouts: once('sluice_ingest_body_timeouts_total', () => new Counter({ name: 'sluice_ingest_body_timeouts_total', help: 'Requests answered 408 because their body stalled past bodyTimeoutMs.' })),
  aborted: once('sluice_ingest_aborted_requests_total', () => new Counter({ name: 'sluice_ingest_aborted_requests_total', help: 'Requests whose client closed the connection before its answer (nothing of them acknowledged).' })),
  rateLimited: once('sluice_ingest_rate_limited_total', () => new Counter({ name: 'sluice_ingest_rate_limited_total', help: 'Requests refused with 429 by the per-key rate limit.' })),
  backpressure: once(
    'sluice_ingest_backpressure_total',
    () => new Counter({ name: 'sluice_ingest_backpressure_total', help: 'Requests refused with 503 because the engine backlog or lag, the uncommitted log, a log\'s unsynced bytes or memory was past its mark, by reason (backlog, lag, uncommitted, log, memory).', labelNames: ['reason'] }),
  ),
  fsyncSeconds: once(
    'sluice_log_fsync_seconds',
    () => new Histogram({ name: 'sluice_log_fsync_seconds', help: 'Duration of one group-commit fsync of a log.', buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1] }),
  ),
  ackSeconds: once(
    'sluice_ingest_ack_seconds',
    // 15 and 30 ms around the 20 ms p99 goal (issue 13), so a p99 near it reads as more than "≤ 20" / "≤ 50".
    () => new Histogram({ name: 'sluice_ingest_ack_seconds', help: 'Time from request received to acknowledgement sent.', buckets: [0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1, 5] }),
  ),
  /** How long the oldest acknowledged event the running engine has not processed has waited (deps.lagMs), sampled. */
  engineLag: once(
    'sluice_engine_lag_seconds',
    () => new Gauge({ name: 'sluice_engine_lag_seconds', help: 'How long the oldest acknowledged event the running engine has not processed yet has waited (0: caught up, or the engine is down); above --max-lag ingest answers 503.' }),
  ),
  /** Acknowledged events not yet processed downstream (deps.backlog), sampled per request. */
  queueDepth: once('sluice_engine_queue_depth_events', () => new Gauge({ name: 'sluice_engine_queue_depth_events', help: 'Events acknowledged but not yet processed by the shards.' })),
  logPendingBytes: once('sluice_log_pending_bytes', () => new Gauge({ name: 'sluice_log_pending_bytes', help: 'Largest amount of appended-but-unsynced bytes over the shard and DLQ logs.' })),
  eventLoopDelay: once(
    'sluice_ingest_event_loop_delay_seconds',
    () =>
      new Gauge({
        name: 'sluice_ingest_event_loop_delay_seconds',
        help: 'Event-loop delay of the ack thread since the last scrape (p50, p99, p99.9, max): how long a ready ack may wait for the thread.',
        labelNames: ['quantile'],
        collect() {
          if (loopDelay.count === 0) return;
          for (const [q, p] of [
            ['0.5', 50],
            ['0.99', 99],
            ['0.999', 99.9],
          ] as const) this.set({ quantile: q }, loopDelaySeconds(loopDelay.percentile(p)));
          this.set({ quantile: 'max' }, loopDelaySeconds(loopDelay.max));
          loopDelay.reset();
        },
      }),
  ),
  /**
   * Garbage-collection pauses of this thread (ingest's: the ack thread), by kind: minor
   * (scavenges), major (the atomic pause of a mark-compact), incremental (marking steps run on
   * the thread). With V8's default heap growth the ack thread ran a full mark-compact about
   * every second under load; bin/sluice.js's heap growth factor is what removed them
   * (bench/results/heap-growing-2026-12-05.md).
   */
  gcPauseSeconds: once(
    'sluice_ingest_gc_pause_seconds',
    () => new Histogram({ name: 'sluice_ingest_gc_pause_seconds', help: 'Garbage-collection pauses of the ack thread, by kind (minor, major, incremental, weakcb).', labelNames: ['kind'], buckets: [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1] }),
  ),
  uncommittedBytes: once('sluice_log_uncommitted_bytes', () => new Gauge({ name: 'sluice_log_uncommitted_bytes', help: 'Bytes of the shard logs (framing included) acknowledged but not yet committed by the engine, against ingest.maxBacklogBytes.' })),
  uncommittedEvents: once('sluice_log_uncommitted_events', () => new Gauge({ name: 'sluice_log_uncommitted_events', help: 'Events acknowledged into the shard logs since this start and not yet committed by the engine.' })),
  memoryBytes: once('sluice_memory_resident_bytes', () => new Gauge({ name: 'sluice_memory_resident_bytes', help: 'Anonymous resident memory of the server (ingest and engine processes: heaps, buffers; not file pages such as LMDB\'s map, which the kernel reclaims), against ingest.maxMemoryBytes.' })),
  memoryMarkBytes: once('sluice_memory_admission_mark_bytes', () => new Gauge({ name: 'sluice_memory_admission_mark_bytes', help: 'Resident memory above which ingest answers 503: ingest.maxMemoryBytes, or memory at rest plus a quarter of it when the rest is already over the budget (ingest/memory-budget.ts).' })),
  inFlight: once('sluice_ingest_in_flight_requests', () => new Gauge({ name: 'sluice_ingest_in_flight_requests', help: 'Requests (and WebSocket messages) being decoded or waiting for their fsync.' })),
};

const gcObserver = new PerformanceObserver((list) => {
  for (const e of list.getEntries() as Array<PerformanceEntry & { detail?: { kind?: number } }>) {
    ingestMetrics.gcPauseSeconds.observe({ kind: GC_KINDS[e.detail?.kind ?? -1] ?? 'other' }, e.duration / 1000);
  }
});
gcObserver.observe({ entryTypes: ['gc'] });

/** For SegmentLog's `onFsync` option: records one group commit's duration. */
export function observeFsync(durationMs: number): void {
  ingestMetrics.fsyncSeconds.observe(durationMs / 1000);
}

/**
 * Conditions that make the server not ready, reported by the components that see them (the
 * engine: a failing checkpoint, a stopped shard, a log on a full disk) and cleared when they pass;
 * GET /readyz answers 503 naming them. Process-wide like prom-client's registry: keys should
 * carry their owner (`engine#1:shard-3`) and an owner clears its own on close.
 */
export class Readiness {
  private readonly conditions = new Map<string, string>();

  /** Records (or updates) why `key` is not ready. */
  set(key: string, reason: string): void {
    this.conditions.set(key, reason);
  }

  clear(key: string): void {
    this.conditions.delete(key);
  }

  /** Clears every key starting with `prefix` (an owner closing). */
  clearPrefix(prefix: string): void {
    for (const k of [...this.conditions.keys()]) if (k.startsWith(prefix)) this.conditions.delete(k);
  }

  /** Current reasons, in key order. */
  reasons(): string[] {
    return [...this.conditions].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, r]) => r);
  }
}

export const readiness = new Readiness();
