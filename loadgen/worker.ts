/**
 * Worker-thread entry of the load generator: runs one partition and posts progress and result.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { runPartition } from './sender.js';

const { options, partition, partitions } = workerData as { options: Parameters<typeof runPartition>[0]; partition: number; partitions: number };
const result = await runPartition(options, partition, partitions, (value) => parentPort!.postMessage({ kind: 'progress', value }));
parentPort!.postMessage({ kind: 'done', value: result });
