/**
 * Runs one background compaction of the lake in its own worker thread (engine/compaction-worker.ts),
 * so the coordinator's thread goes on dispatching ranges meanwhile. The thread opens the lake from
 * its URL (as the coordinator did), runs at the niceness it is given (below the shard workers', so
 * under saturation a run yields to them rather than lengthening their checkpoints), and exits after
 * the run, taking its parquet-wasm heap with it.
 */
import { deserializeError, internalError, type SerializedError } from '../common/errors.js';
import { startModuleWorker } from '../common/ts-worker.js';
import type { compactAll } from '../storage/compact.js';
import { workerEntry, workerHeapLimits } from './pool.js';

type CompactAllOptions = Parameters<typeof compactAll>[1];
/** compactAll's result, and the niceness the thread ran at. */
export type CompactAllResult = Awaited<ReturnType<typeof compactAll>> & { nice: number };

/** What the worker needs: where the lake is, and compactAll's options (no signal: abort is a message). */
export interface CompactionJob {
  lake: string;
  s3Endpoint?: string;
  /** The thread's niceness at least (Linux: per thread; never raised above the creating thread's priority). */
  nice?: number;
  options: Omit<CompactAllOptions, 'signal' | 'records'>;
}

/** `compactAll` over the lake at `job.lake`, in a worker thread; `signal` stops it between partitions. */
export function compactInWorker(job: CompactionJob, signal?: AbortSignal): Promise<CompactAllResult> {
  const { filename, execArgv } = workerEntry('compaction-worker');
  return new Promise<CompactAllResult>((resolve, reject) => {
    const worker = startModuleWorker(new URL(filename), { workerData: job, execArgv, resourceLimits: workerHeapLimits() });
    let answered = false;
    const onAbort = (): void => worker.postMessage('abort');
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
    worker.once('message', (m: { result?: CompactAllResult; error?: SerializedError }) => {
      answered = true;
      void worker.terminate();
      if (m.error !== undefined) reject(deserializeError(m.error));
      else resolve(m.result!);
    });
    worker.once('error', (err) => {
      answered = true;
      reject(err);
    });
    worker.once('exit', (code) => {
      signal?.removeEventListener('abort', onAbort);
      if (!answered) reject(internalError('compaction_worker_exited', `the compaction worker exited with code ${code} before it answered`));
    });
  });
}

