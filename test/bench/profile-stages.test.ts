import { describe, expect, it } from 'vitest';
import { classify, framePath, type Frame } from '../../bench/profile-stages.js';

const f = (functionName: string, url = ''): Frame => ({ functionName, url });
const dist = (path: string): string => `file:///work/main/dist/${path}`;
const nm = (path: string): string => `file:///work/main/node_modules/${path}`;

describe('framePath', () => {
  it.each([
    [dist('engine/shard-runtime.js'), 'engine/shard-runtime.js'],
    ['file:///tmp/checkout/engine/shard-runtime.ts', 'engine/shard-runtime.ts'],
    [nm('apache-arrow/ipc/reader.mjs'), 'node_modules/apache-arrow/ipc/reader.mjs'],
    ['node:internal/worker/io', 'node:internal/worker/io'],
    ['', ''],
  ])('%s → %s', (url, want) => expect(framePath(url)).toBe(want));
});

describe('classify: the first frame from the leaf that matches a rule decides', () => {
  it.each<[string, 'ingest' | 'engine', Frame[], string]>([
    ['idle', 'engine', [f('(idle)')], 'idle'],
    ['an idle piscina worker', 'engine', [f('atomicsWaitLoop', nm('piscina/dist/worker.js'))], 'idle'],
    ['GC', 'ingest', [f('(garbage collector)')], 'gc'],
    ['lmdb under the dedup operator is dedup', 'engine', [f('get', nm('lmdb/read.js')), f('processBatch', dist('engine/operators/dedup-operator.js')), f('processBatch', dist('engine/shard-runtime.js'))], 'operators'],
    ['lmdb under a checkpoint is state', 'engine', [f('putSync', nm('lmdb/write.js')), f('checkpoint', dist('engine/shard-runtime.js'))], 'state'],
    ['tableFromIPC in the engine', 'engine', [f('decodeMessage', nm('apache-arrow/ipc/metadata/message.mjs')), f('tableFromIPC', nm('apache-arrow/ipc/serialization.mjs')), f('processBatch', dist('engine/shard-runtime.js'))], 'messaging'],
    ['the IPC writer under parquet encoding', 'engine', [f('write', nm('apache-arrow/ipc/writer.mjs')), f('encodeParquet', dist('storage/parquet.js'))], 'encode'],
    ['silver assembly in the pipeline', 'engine', [f('makeData', nm('apache-arrow/data.mjs')), f('toSilver', dist('engine/operators/shard-pipeline.js'))], 'assembly'],
    ['log append in ingest', 'ingest', [f('writeBuffers'), f('flush', dist('log/segment-log.js')), f('onData', dist('ingest/server.js'))], 'log'],
    ['Segment decoding in ingest', 'ingest', [f('decodeSegment', dist('ingest/protocols/segment.js')), f('onData', dist('ingest/server.js'))], 'ingest'],
    ['a bare timer', 'engine', [f('processTimers', 'node:internal/timers')], 'other'],
  ])('%s', (_, role, stack, want) => expect(classify(role, stack)).toBe(want));
});

describe('workerTids: a worker is the newest `node` thread below the profiler thread it started', () => {
  it('skips the main thread and its profiler, pairs each later profiler with the thread before it', async () => {
    const { workerTids } = await import('../../bench/profile.js');
    const t = (tid: number, comm: string) => ({ tid, comm, cpuS: 0 });
    const threads = [t(100, 'node'), t(101, 'node'), t(102, 'v8:ProfEvntProc'), t(110, 'node'), t(111, 'v8:ProfEvntProc'), t(112, 'node'), t(120, 'node'), t(121, 'node'), t(122, 'v8:ProfEvntProc')];
    expect(workerTids(threads, 100)).toEqual([110, 121]);
  });
});
