/**
 * The load generator's driver: W partitions (worker threads, or the calling thread when W = 1),
 * each with its own users (u ≡ k mod W), generator and connections, so the union of what they
 * send does not depend on timing; totals, one merged HDR histogram and the ground truth at the end.
 */
import type { Worker } from 'node:worker_threads';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as hdr from 'hdr-histogram-js';
import { SluiceError, externalError, internalError, userError } from '../common/errors.js';
import { startModuleWorker } from '../common/ts-worker.js';
import type { GeneratorStats } from './generator.js';
import { validateLoadgenOptions, type LoadgenOptions, type LoadgenProtocol } from './options.js';
import { runPartition, type PartitionControl } from './sender.js';
import { truthSiblings, writeTruthParquet } from './truth.js';
import { emptyCounters, type PartitionCounters, type PartitionPlan, type PartitionProgress, type PartitionResult, type WorkerToMain } from './types.js';

export { validateLoadgenOptions, LOADGEN_DEFAULTS, LOADGEN_PROTOCOLS } from './options.js';
export type { LoadgenOptions, LoadgenProgress, LoadgenProtocol } from './options.js';

/** What a run did. Counts are events unless noted; latency in ms from each batch's intended send time. */
export interface LoadgenSummary extends PartitionCounters {
  protocol: LoadgenProtocol;
  workers: number;
  /** Wall time from the first partition's start to the last one's end, s. */
  elapsedS: number;
  /** Acknowledged (accepted + rejected) events per second. */
  eventsPerSecond: number;
  /** Request bytes per second (retries included), MB = 10^6 B. */
  mbPerSecond: number;
  /** Ack latency after the warm-up, ms; `count` = acknowledged requests it covers. */
  latencyMs: LatencyMs;
  /** Ack latency of the warm-up's requests (`warmupMs`), ms; count 0 without a warm-up. */
  warmupLatencyMs: LatencyMs;
  generator: GeneratorStats;
  /** Rows in the truth file, when one was written. */
  truthRows?: number;
  truthFile?: string;
  errors: string[];
}

export interface LatencyMs {
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
  count: number;
}

const ZERO_STATS: GeneratorStats = { valid: 0, duplicates: 0, invalid: 0, late: 0, tooLate: 0, sessions: 0, compressed: 0, extended: 0 };

function newWorker(plan: PartitionPlan): Worker {
  const here = import.meta.url;
  return startModuleWorker(new URL(here.endsWith('.ts') ? './worker.ts' : './worker.js', here), { workerData: plan });
}

/** Runs one partition in a worker thread; `stop` asks it to end early. */
function runInWorker(plan: PartitionPlan, onProgress: (p: PartitionProgress) => void): { done: Promise<PartitionResult>; stop: () => void } {
  const w = newWorker(plan);
  let settled = false;
  const done = new Promise<PartitionResult>((resolve, reject) => {
    w.on('message', (m: WorkerToMain) => {
      switch (m.kind) {
        case 'progress':
          onProgress(m.value);
          break;
        case 'done':
          settled = true;
          resolve(m.value);
          break;
        case 'error':
          settled = true;
          reject(m.domain === 'user' ? userError(m.code ?? 'loadgen_failed', m.message) : externalError(m.code ?? 'loadgen_failed', `loadgen worker ${plan.partition}: ${m.message}`));
          break;
      }
    });
    w.once('error', (err) => {
      settled = true;
      reject(internalError('loadgen_worker_crashed', `loadgen worker ${plan.partition} crashed: ${err.message}`, err));
    });
    w.once('exit', (code) => {
      if (!settled) reject(internalError('loadgen_worker_exited', `loadgen worker ${plan.partition} exited with code ${code} before reporting`));
    });
  });
  return { done, stop: () => w.postMessage({ kind: 'stop' }) };
}

function percentiles(h: hdr.Histogram): LatencyMs {
  const ms = (us: number): number => us / 1000;
  return {
    p50: ms(h.getValueAtPercentile(50)),
    p90: ms(h.getValueAtPercentile(90)),
    p99: ms(h.getValueAtPercentile(99)),
    p999: ms(h.getValueAtPercentile(99.9)),
    max: ms(h.maxValue),
    mean: ms(h.mean),
    count: h.totalCount,
  };
}

/**
 * Runs the load and returns its summary. Throws a user error for bad options or a refused
 * write key; network trouble is retried and then counted in `failed`, not thrown.
 */
export async function runLoadgen(input: Partial<LoadgenOptions>): Promise<LoadgenSummary> {
  const o = validateLoadgenOptions(input);
  const W = o.workers;
  const startTime = o.startTime ?? Date.now();
  const stepMs = o.stepMs ?? (o.rate !== undefined ? 1000 / o.rate : undefined);
  const spoolDir = o.truth === undefined ? undefined : await mkdtemp(join(tmpdir(), 'sluice-truth-'));
  const { onProgress, signal, ...plain } = o;
  const plans: PartitionPlan[] = Array.from({ length: W }, (_, k) => ({
    options: plain,
    partition: k,
    partitions: W,
    startTime,
    // Each partition steps W times further so the whole run advances stepMs per event.
    stepMs: stepMs === undefined ? undefined : stepMs * W,
    maxEvents: o.events === undefined ? Infinity : Math.floor(o.events / W) + (k < o.events % W ? 1 : 0),
    truthSpool: spoolDir === undefined ? undefined : join(spoolDir, `truth-${k}.ndjson`),
  }));

  const latest = new Map<number, PartitionProgress>();
  const started = performance.now();
  let lastTick = { t: started, acked: 0 };
  const timer = onProgress
    ? setInterval(() => {
        const total = emptyCounters();
        const h = hdr.build();
        for (const p of latest.values()) {
          for (const k of Object.keys(total) as Array<keyof PartitionCounters>) total[k] += p[k];
          if (p.histogram) {
            const part = hdr.decodeFromCompressedBase64(p.histogram);
            h.add(part);
            part.destroy();
          }
        }
        const t = performance.now();
        const done = total.acked + total.rejected;
        onProgress({
          elapsedS: (t - started) / 1000,
          rate: ((done - lastTick.acked) * 1000) / Math.max(1, t - lastTick.t),
          sent: total.sent,
          acked: total.acked,
          rejected: total.rejected,
          retried: total.retried,
          failed: total.failed,
          p50: h.getValueAtPercentile(50) / 1000,
          p99: h.getValueAtPercentile(99) / 1000,
        });
        h.destroy();
        lastTick = { t, acked: done };
      }, 1000)
    : undefined;

  let results: PartitionResult[];
  try {
    if (W === 1) {
      const control: PartitionControl = { stopped: false };
      const stop = (): void => void (control.stopped = true);
      signal?.addEventListener('abort', stop, { once: true });
      try {
        results = [await runPartition(plans[0]!, control, (p) => latest.set(0, p))];
      } finally {
        signal?.removeEventListener('abort', stop);
      }
    } else {
      const runs = plans.map((plan) => runInWorker(plan, (p) => latest.set(plan.partition, p)));
      const stopAll = (): void => runs.forEach((r) => r.stop());
      signal?.addEventListener('abort', stopAll, { once: true });
      try {
        const settled = await Promise.allSettled(runs.map((r) => r.done));
        const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
        if (failed) throw failed.reason;
        results = settled.map((s) => (s as PromiseFulfilledResult<PartitionResult>).value);
      } finally {
        signal?.removeEventListener('abort', stopAll);
      }
    }
  } catch (err) {
    if (spoolDir) await rm(spoolDir, { recursive: true, force: true });
    throw err instanceof SluiceError ? err : internalError('loadgen_failed', `loadgen failed: ${(err as Error).message}`, err);
  } finally {
    if (timer) clearInterval(timer);
  }

  const hist = hdr.build();
  const warmHist = hdr.build();
  const total = emptyCounters();
  const generator: GeneratorStats = { ...ZERO_STATS };
  for (const r of results) {
    for (const [into, encoded] of [[hist, r.histogram], [warmHist, r.warmupHistogram]] as const) {
      const part = hdr.decodeFromCompressedBase64(encoded);
      into.add(part);
      part.destroy();
    }
    for (const k of Object.keys(total) as Array<keyof PartitionCounters>) total[k] += r[k];
    for (const k of Object.keys(generator) as Array<keyof GeneratorStats>) generator[k] += r.generator[k];
  }
  const elapsedS = Math.max(1e-3, (Math.max(...results.map((r) => r.endedAt)) - Math.min(...results.map((r) => r.startedAt))) / 1000);
  const summary: LoadgenSummary = {
    protocol: o.protocol,
    workers: W,
    ...total,
    elapsedS,
    eventsPerSecond: (total.acked + total.rejected) / elapsedS,
    mbPerSecond: total.bytesSent / elapsedS / 1e6,
    latencyMs: percentiles(hist),
    warmupLatencyMs: percentiles(warmHist),
    generator,
    errors: [...new Set(results.flatMap((r) => r.errors))].slice(0, 10),
  };
  hist.destroy();
  warmHist.destroy();
  if (o.truth !== undefined && spoolDir !== undefined) {
    try {
      summary.truthRows = await writeTruthParquet(o.truth, plans.map((p) => p.truthSpool!));
      summary.truthFile = o.truth;
      const { summary: summaryFile } = truthSiblings(o.truth);
      await writeFile(summaryFile, JSON.stringify({ options: { ...plain, writeKey: undefined, startTime, stepMs }, summary }, null, 2) + '\n');
    } finally {
      await rm(spoolDir, { recursive: true, force: true });
    }
  }
  return summary;
}
