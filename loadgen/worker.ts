/**
 * Worker-thread entry of the load generator: runs one partition (workerData: PartitionPlan),
 * posts progress about once a second and then its result; a `stop` message ends generation early.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { runPartition, type PartitionControl } from './sender.js';
import type { MainToWorker, PartitionPlan, WorkerToMain } from './types.js';

const port = parentPort!;
const control: PartitionControl = { stopped: false };
const post = (m: WorkerToMain): void => port.postMessage(m);
port.on('message', (m: MainToWorker) => {
  if (m.kind === 'stop') control.stopped = true;
});
try {
  const result = await runPartition(workerData as PartitionPlan, control, (value) => post({ kind: 'progress', value }));
  post({ kind: 'done', value: result });
} catch (err) {
  const e = err as { message?: string; code?: string; domain?: string };
  post({ kind: 'error', message: e.message ?? String(err), code: e.code, domain: e.domain });
}
port.close();
