/**
 * Ingest's view of a JetStream log (issue 10, docs/SCALE-OUT.md): what the stream holds that the
 * engines have not truncated yet, POLLED (one stream-info request per interval, never per
 * request), as the uncommitted-log bound of `ingest.maxBacklogBytes` (`--max-backlog`): past it,
 * requests get 503 + Retry-After (ingest/server.ts, counted in
 * `sluice_ingest_backpressure_total{reason="uncommitted"}`). So an ingest node refuses before the
 * stream reaches its `maxBytes` (where appends would fail) and before engines fall further behind.
 *
 *   every intervalMs:  STREAM.INFO (subjects_filter <prefix>.events.*) ──▶ bytes, messages per shard
 *                          │                                                   │
 *   request ──▶ uncommitted() (the last poll) ──▶ > maxBacklogBytes? 503     gauges on /metrics
 *
 * Also the JetStream metrics of /metrics: publish→PubAck latency (`observePublish`, the
 * `onPublish` option of `JetStreamLogs`) and the backlog per shard.
 */
import { Counter, Gauge, Histogram, register, type Metric } from 'prom-client';
import type { JetStreamLogs } from '../log/jetstream-log.js';

function once<T extends Metric>(name: string, make: () => T): T {
  return (register.getSingleMetric(name) as T | undefined) ?? make();
}

export const jetstreamMetrics = {
  publishSeconds: once(
    'sluice_jetstream_publish_seconds',
    () =>
      new Histogram({
        name: 'sluice_jetstream_publish_seconds',
        help: 'Time from the first publish attempt of a log record to its PubAck (stored on a quorum of the replicas), retries included.',
        buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1, 5, 30],
      }),
  ),
  backlogBytes: once('sluice_jetstream_backlog_bytes', () => new Gauge({ name: 'sluice_jetstream_backlog_bytes', help: 'Bytes the JetStream stream holds (not yet truncated by the engines), as last polled.' })),
  backlogRecords: once(
    'sluice_jetstream_backlog_records',
    () => new Gauge({ name: 'sluice_jetstream_backlog_records', help: 'Messages of each shard subject the stream holds (not yet truncated by the engines), as last polled.', labelNames: ['shard'] }),
  ),
  pollFailures: once(
    'sluice_jetstream_backlog_poll_failures_total',
    () => new Counter({ name: 'sluice_jetstream_backlog_poll_failures_total', help: 'Stream-info polls that failed (the last known backlog stays in force).' }),
  ),
};

/** For the `onPublish` option of `JetStreamLogs`: one append's publish→PubAck time. */
export function observePublish(durationMs: number): void {
  jetstreamMetrics.publishSeconds.observe(durationMs / 1000);
}

export interface JetStreamBacklogOptions {
  /** Shard subjects to report (0 … shards-1). */
  shards: number;
  /** Poll interval (ms). Default 1000. */
  intervalMs?: number;
  logger?: { warn(obj: object, msg: string): void };
}

/** Polls the stream's backlog; `uncommitted()` is ingest's `deps.uncommitted`. Start with {@link JetStreamBacklog.start}. */
export class JetStreamBacklog {
  private last = { bytes: 0, events: 0 };
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private failures = 0;

  private constructor(
    private readonly logs: JetStreamLogs,
    private readonly options: Required<Omit<JetStreamBacklogOptions, 'logger'>> & Pick<JetStreamBacklogOptions, 'logger'>,
  ) {}

  /** Polls once (so the first request already sees the stream), then every `intervalMs`. */
  static async start(logs: JetStreamLogs, options: JetStreamBacklogOptions): Promise<JetStreamBacklog> {
    const b = new JetStreamBacklog(logs, { intervalMs: 1000, ...options });
    await b.poll();
    b.timer = setInterval(() => {
      b.polling ??= b.poll().finally(() => (b.polling = undefined));
    }, b.options.intervalMs);
    b.timer.unref();
    return b;
  }

  /**
   * The stream's bytes as last polled. `events` is 0: the stream counts messages (records of
   * many events), reported per shard in `sluice_jetstream_backlog_records`.
   */
  uncommitted(): { bytes: number; events: number } {
    return this.last;
  }

  private async poll(): Promise<void> {
    try {
      const b = await this.logs.backlog(this.options.shards);
      this.last = { bytes: b.bytes, events: 0 };
      jetstreamMetrics.backlogBytes.set(b.bytes);
      b.perShard.forEach((n, s) => jetstreamMetrics.backlogRecords.set({ shard: String(s) }, n));
      this.failures = 0;
    } catch (err) {
      jetstreamMetrics.pollFailures.inc();
      // The last known backlog stays in force; say so once per outage.
      if (this.failures++ === 0) this.options.logger?.warn({ err: (err as Error)?.message }, 'JetStream backlog poll failed; keeping the last known backlog');
    }
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.polling;
  }
}
