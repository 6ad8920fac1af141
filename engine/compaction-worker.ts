/**
 * Background compaction, off the coordinator's thread: one worker thread per run (started by
 * engine/compaction.ts), which opens the lake itself and runs `compactAll` over it.
 *
 * Why a thread: compaction decodes and re-encodes Parquet in parquet-wasm, synchronously, up to a
 * `maxBytesPerParquetCall` per call. On the coordinator's thread that stopped it from dispatching
 * ranges to the shards for as long as a run took (measured: processing at 0 for 15–27 s of every
 * minute at 25 K events/s, and then ingest's lag bound refused events at 60 % of max). Its wasm
 * heap, which grows to the biggest call, now goes away with the thread.
 *
 *   workerData: { lake, s3Endpoint, nice, options }   ─▶  { result (with the thread's niceness) } | { error }
 *   message 'abort': stop between partitions (each partition's compaction is atomic)
 */
import { parentPort, workerData } from 'node:worker_threads';
import { serializeError } from '../common/errors.js';
import { niceAtLeast } from '../common/nice.js';
import { compactAll } from '../storage/compact.js';
import { openObjectStore } from '../storage/open-store.js';
import type { CompactionJob } from './compaction.js';

const job = workerData as CompactionJob;
const nice = niceAtLeast(job.nice ?? 0);
const abort = new AbortController();
parentPort!.on('message', (m: unknown) => {
  if (m === 'abort') abort.abort();
});
// The run's own I/O keeps the thread alive; the port must not keep it alive after the answer.
parentPort!.unref();

try {
  const store = await openObjectStore(job.lake, { s3Endpoint: job.s3Endpoint });
  let result: Awaited<ReturnType<typeof compactAll>>;
  try {
    result = await compactAll(store, { ...job.options, signal: abort.signal });
  } finally {
    await store.close();
  }
  // Answered once the store is closed: the caller ends the thread when the answer arrives.
  parentPort!.postMessage({ result: { ...result, nice } });
} catch (err) {
  parentPort!.postMessage({ error: serializeError(err) });
}
