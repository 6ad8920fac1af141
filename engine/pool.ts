/**
 * The shard pool: a piscina pool whose load balancer pins shard s to worker s mod W, so shard
 * state is worker-local. Tasks for one shard reach its worker in submission order (the balancer
 * always accepts, and a worker runs its shards' tasks through per-shard queues), so each shard
 * consumes its log in offset order.
 */
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Piscina } from 'piscina';
import type { PiscinaTask } from 'piscina';
import type { BatchResult, CheckpointResult, LiveResult, OpenResult, PurgeResult, ShardResult, ShardRuntimeOptions, ShardTask, TaskFailure } from './types.js';
import { internalError, SluiceError, type SerializedError } from '../common/errors.js';
import { workerExecArgv } from '../common/ts-worker.js';

/**
 * A shard task that failed in its worker, rebuilt on this thread with the worker's `domain`,
 * `retry`, `code` and stack. `stopped`: the shard now refuses every task until a restart.
 */
export class ShardTaskError extends SluiceError {
  readonly shard: number;
  readonly stopped: boolean;

  constructor(shard: number, stopped: boolean, error: SerializedError) {
    super(error.message, { domain: error.domain, retry: error.retry, code: error.code });
    this.name = 'ShardTaskError';
    this.shard = shard;
    this.stopped = stopped;
    if (error.stack !== undefined) this.stack = error.stack;
  }
}

const isTaskFailure = (r: ShardResult): r is TaskFailure => typeof r === 'object' && r !== null && 'taskFailed' in r;

interface QueueOptions {
  shard: number;
}

const kQueue = Piscina.queueOptionsSymbol;

/**
 * A worker entry next to this module, `name` without extension: dist/engine/{name}.js when running
 * compiled (what runs in production), engine/{name}.ts when running from sources (vitest, dev scripts).
 */
export function workerEntry(name: string): { filename: string; execArgv: string[] } {
  const here = import.meta.url;
  const ts = here.endsWith('.ts');
  const filename = new URL(ts ? `./${name}.ts` : `./${name}.js`, here).href;
  // Process-wide flags (heap sizes, V8's) are refused in a Worker's execArgv and apply to it anyway;
  // the young generation's size reaches the workers through resourceLimits (workerHeapLimits).
  const execArgv = workerExecArgv();
  if (!ts || process.execArgv.some((a) => a.includes('tsx'))) return { filename, execArgv };
  // From sources, workers need the main thread's loader. `--import` resolves a bare name against
  // the working directory, so give it tsx's loader by absolute URL, found from this module.
  const tsx = pathToFileURL(createRequire(here).resolve('tsx')).href;
  return { filename, execArgv: [...execArgv, '--import', tsx] };
}

/**
 * The workers' young generation follows the process's `--max-semi-space-size` (MiB; V8's young
 * generation is three semi-spaces: two for copying plus the new large-object space), so one flag
 * sizes every heap of the engine.
 */
export function workerHeapLimits(): { maxYoungGenerationSizeMb: number } | undefined {
  for (const a of process.execArgv) {
    const m = /^--max-semi-space-size=(\d+)$/.exec(a);
    if (m) return { maxYoungGenerationSizeMb: 3 * Number(m[1]) };
  }
  return undefined;
}

export class ShardPool {
  readonly workers: number;
  private readonly pool: Piscina;
  private failed: Error | undefined;

  constructor(workers: number) {
    this.workers = workers;
    const { filename, execArgv } = workerEntry('shard-worker');
    this.pool = new Piscina({
      filename,
      execArgv,
      resourceLimits: workerHeapLimits(),
      minThreads: workers,
      maxThreads: workers,
      idleTimeout: Number.MAX_SAFE_INTEGER,
      // The balancer never refuses, so per-worker concurrency is bounded by the coordinator's backpressure instead.
      concurrentTasksPerWorker: 1 << 20,
      maxQueue: Number.MAX_SAFE_INTEGER,
      loadBalancer: (task, candidates) => this.pick(task, candidates),
    });
    this.pool.on('error', (err: Error) => {
      this.failed = err;
    });
  }

  private pick(task: PiscinaTask, candidates: ReadonlyArray<{ id: number }>): never {
    const opts = (task as unknown as Record<symbol, QueueOptions | null>)[kQueue];
    const shard = opts?.shard ?? 0;
    if (candidates.length < this.workers) return null as never; // wait until every worker is up, so pinning is stable
    const sorted = [...candidates].sort((a, b) => a.id - b.id);
    return sorted[shard % this.workers] as never;
  }

  /** Runs a task on its shard's worker; a TaskFailure answer rejects with a {@link ShardTaskError}. */
  private async run<T>(task: ShardTask, transfer: ArrayBuffer[] = []): Promise<T> {
    if (this.failed) throw internalError('worker_failed', 'a shard worker died; restart Sluice to recover from the last checkpoint', this.failed);
    const withQueue = Object.assign(task, { [kQueue]: { shard: task.shard } });
    const result = (await this.pool.run(withQueue, { transferList: transfer })) as ShardResult;
    if (isTaskFailure(result)) throw new ShardTaskError(result.shard, result.stopped, result.error);
    return result as T;
  }

  open(shard: number, options: ShardRuntimeOptions): Promise<OpenResult> {
    return this.run({ kind: 'open', shard, options });
  }

  /**
   * Sends consecutive log records to their shard as one task. Each payload's buffer is transferred
   * (copied first if it is a view of a larger buffer).
   */
  batch(shard: number, records: ReadonlyArray<{ offset: number; payload: Uint8Array }>): Promise<BatchResult> {
    const offsets = records.map((r) => r.offset);
    const payloads = records.map(({ payload }) =>
      payload.byteOffset === 0 && payload.byteLength === payload.buffer.byteLength && payload.buffer instanceof ArrayBuffer
        ? payload.buffer
        : new Uint8Array(payload).buffer, // copies just the view (Buffer#slice would not)
    );
    return this.run({ kind: 'batch', shard, offsets, payloads }, payloads);
  }

  advance(shard: number, watermarkMs: number): Promise<BatchResult> {
    return this.run({ kind: 'advance', shard, watermarkMs });
  }

  checkpoint(shard: number): Promise<CheckpointResult> {
    return this.run({ kind: 'checkpoint', shard });
  }

  live(shard: number): Promise<LiveResult> {
    return this.run({ kind: 'live', shard });
  }

  /** Erasure: drops the users' open sessions from the shard's state (engine/erasure-job.ts). */
  purgeUsers(shard: number, users: string[]): Promise<PurgeResult> {
    return this.run({ kind: 'purge-users', shard, users });
  }

  /** Erasure: the shard checkpoints, closes, compacts its LMDB file and reopens (engine/erasure-offline.ts). */
  compactState(shard: number): Promise<void> {
    return this.run({ kind: 'compact-state', shard });
  }

  close(shard: number): Promise<void> {
    return this.run({ kind: 'close', shard });
  }

  destroy(): Promise<void> {
    return this.pool.destroy();
  }
}
