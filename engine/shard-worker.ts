/**
 * The piscina worker module. A worker hosts the runtimes of the shards pinned to it and runs
 * each shard's tasks strictly one after another, in arrival order (a promise chain per shard),
 * while different shards on the same worker interleave at await points.
 *
 * A failed task answers a `TaskFailure` (the error as data) instead of throwing across the
 * thread. Whether the shard goes on:
 *   checkpoint / close failing with a retryable error (disk, object store, LMDB) → goes on: the
 *     runtime kept its buffers or its recorded commit, and the coordinator retries with backoff;
 *   live failing → goes on (read-only);
 *   anything else (open, a batch that even quarantine could not absorb, advance, a bug) → the
 *     shard stops: skipping a batch would break exactly-once, so only a restart may go on.
 */
import { join } from 'node:path';
import { niceAtLeast } from '../common/nice.js';
import { assertNever, classifyError, internalError, serializeError } from '../common/errors.js';
import { compactLmdbFile } from './erasure-offline.js';
import { isFenced } from './lease-fence.js';
import { ShardRuntime } from './shard-runtime.js';
import type { ShardResult, ShardRuntimeOptions, ShardTask, TaskFailure } from './types.js';

const runtimes = new Map<number, ShardRuntime>();
/** Each shard's open options (a compact-state task reopens the runtime with them). */
const opened = new Map<number, ShardRuntimeOptions>();
const chains = new Map<number, Promise<unknown>>();
/** A shard whose task failed stays failed: skipping a batch would break exactly-once, so only a restart (recovery) may go on. */
const failures = new Map<number, unknown>();

async function execute(task: ShardTask): Promise<ShardResult> {
  if (task.kind === 'open') {
    const stale = runtimes.get(task.shard);
    if (stale !== undefined && task.options.fence === undefined) throw internalError('shard_already_open', `shard ${task.shard} is already open on this worker`);
    // Engine node: a shard whose lease was lost, retaken later — its old runtime (uncommitted, fenced) is dropped; the new one restores from the lake.
    if (stale !== undefined) {
      runtimes.delete(task.shard);
      await stale.discard().catch(() => undefined);
    }
    failures.delete(task.shard);
    // This thread only (the main thread keeps its own); never less nice than the process already is.
    niceAtLeast(task.options.workerNice);
    const runtime = await ShardRuntime.open(task.shard, task.options);
    runtimes.set(task.shard, runtime);
    opened.set(task.shard, task.options);
    return runtime.openResult;
  }
  const runtime = runtimes.get(task.shard);
  if (!runtime) throw internalError('shard_not_open', `shard ${task.shard} got a ${task.kind} task before open`);
  switch (task.kind) {
    case 'batch':
      return runtime.processRecords(task.offsets, task.payloads);
    case 'advance':
      return runtime.advance(task.watermarkMs);
    case 'checkpoint':
      return runtime.checkpoint();
    case 'live':
      return runtime.live();
    case 'purge-users':
      return runtime.purgeUsers(task.users);
    case 'compact-state': {
      // A failed checkpoint (in close) leaves the runtime open; past it, a failure leaves the shard without one (stopped).
      await runtime.close();
      runtimes.delete(task.shard);
      const options = opened.get(task.shard)!;
      await compactLmdbFile(join(options.dataDir, 'shards', String(task.shard), 'state.mdb'));
      runtimes.set(task.shard, await ShardRuntime.open(task.shard, options));
      return undefined;
    }
    case 'close':
      await runtime.close();
      runtimes.delete(task.shard);
      return undefined;
    default:
      return assertNever(task);
  }
}

/** True when a failure of `task` leaves the shard able to go on. */
function survivable(task: ShardTask, err: unknown): boolean {
  if (task.kind === 'live') return true;
  return (task.kind === 'checkpoint' || task.kind === 'close' || task.kind === 'compact-state') && classifyError(err).retry === 'backoff';
}

export default function handle(task: ShardTask): Promise<ShardResult> {
  const previous = chains.get(task.shard) ?? Promise.resolve();
  const next = previous.then(() => {
    if (failures.has(task.shard) && !(task.kind === 'open' && task.options.fence !== undefined)) {
      const earlier = failures.get(task.shard);
      // Fenced (engine node): given up, not broken — every later task says so, whichever the coordinator hears first.
      if (isFenced(earlier)) throw earlier;
      throw internalError('shard_failed', `shard ${task.shard} failed earlier and must be recovered by a restart`, earlier);
    }
    return execute(task);
  });
  const answered = next.catch((err: unknown): TaskFailure => {
    const stopped = failures.has(task.shard) || !survivable(task, err);
    if (stopped && !failures.has(task.shard)) failures.set(task.shard, err);
    return { taskFailed: true, shard: task.shard, error: serializeError(err), stopped };
  });
  chains.set(task.shard, answered);
  return answered;
}
