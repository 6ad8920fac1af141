/**
 * Everything that crosses between the load generator's main thread and its workers.
 * Histograms travel as hdr-histogram-js compressed base64 (small strings), never as objects.
 */
import type { GeneratorStats } from './generator.js';
import type { LoadgenOptions } from './options.js';

/** What one partition (worker) runs: the validated options minus callbacks, plus its share. */
export interface PartitionPlan {
  options: Omit<LoadgenOptions, 'onProgress' | 'signal'>;
  partition: number;
  partitions: number;
  /** Event time of this partition's first event (epoch ms). */
  startTime: number;
  /**
   * Simulated ms between this partition's events; undefined: event time = startTime + wall time
   * since the partition started. The partition's open-loop schedule and its --duration both start
   * when it starts (not when the run was asked for), so thread start-up is not counted as latency.
   */
  stepMs: number | undefined;
  /** Events this partition sends at most (Infinity when only the duration bounds the run). */
  maxEvents: number;
  /** NDJSON file for this partition's truth rows, when a truth file was asked for. */
  truthSpool?: string;
}

/** Running totals of a partition. */
export interface PartitionCounters {
  /** Events handed to the wire (each once, retries not counted). */
  sent: number;
  /** Events the server accepted (its `accepted`). */
  acked: number;
  /** Events the server rejected (its `rejected` entries). */
  rejected: number;
  /** Retries of a request or Arrow batch (429/503, network errors, lost connections). */
  retried: number;
  /** Of the retries, those answered 429/503 (throttled). */
  throttled: number;
  /** Events in batches given up after maxRetries or a non-retryable answer. */
  failed: number;
  duplicatesSent: number;
  invalidSent: number;
  lateSent: number;
  tooLateSent: number;
  /** Valid or duplicate events the server rejected (should be 0). */
  rejectedValid: number;
  /** Invalid events the server accepted (should be 0). */
  acceptedInvalid: number;
  /** Acknowledged requests (HTTP 200 or an ok Arrow ack); each one latency sample. */
  requests: number;
  /** Bytes of request bodies / Arrow messages put on the wire, retries included. */
  bytesSent: number;
}

export interface PartitionProgress extends PartitionCounters {
  /** Ack latency so far (µs) after the warm-up, compressed base64 HDR histogram. */
  histogram: string;
  /** Ack latency (µs) of the warm-up's batches (see LoadgenOptions.warmupMs), same encoding. */
  warmupHistogram: string;
}

export interface PartitionResult extends PartitionProgress {
  generator: GeneratorStats;
  /** Epoch ms the partition started and finished sending. */
  startedAt: number;
  endedAt: number;
  truthRows: number;
  /** First few distinct error messages (non-retryable answers, exhausted retries). */
  errors: string[];
}

export type WorkerToMain =
  | { kind: 'progress'; value: PartitionProgress }
  | { kind: 'done'; value: PartitionResult }
  | { kind: 'error'; message: string; code?: string; domain?: string };

export type MainToWorker = { kind: 'stop' };

export function emptyCounters(): PartitionCounters {
  return {
    sent: 0,
    acked: 0,
    rejected: 0,
    retried: 0,
    throttled: 0,
    failed: 0,
    duplicatesSent: 0,
    invalidSent: 0,
    lateSent: 0,
    tooLateSent: 0,
    rejectedValid: 0,
    acceptedInvalid: 0,
    requests: 0,
    bytesSent: 0,
  };
}
