/**
 * common/ts-worker `workerExecArgv`: the node flags a worker thread gets, as Node itself sorts
 * them — process-wide flags (refused in a Worker's execArgv, and in effect for every thread anyway)
 * dropped, per-thread flags and their values kept; and a worker started with what it returns runs.
 */
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { workerExecArgv } from '../../common/ts-worker.js';

const runs = (execArgv: string[]): Promise<number> =>
  new Promise((resolve, reject) => {
    const w = new Worker('require("node:worker_threads").parentPort.postMessage(6 * 7)', { eval: true, execArgv });
    w.once('message', resolve);
    w.once('error', reject);
  });

describe('workerExecArgv', () => {
  it('drops the flags a Worker refuses (V8 and per-process ones, with a value given apart) and keeps the rest in order', async () => {
    const argv = ['--stack-size=2000', '--trace-warnings', '--expose-gc', '--title', 'sluice', '--conditions', 'node', '--max-old-space-size=512', '--no-warnings', '--single-threaded-gc'];
    // Each dropped one is refused alone, each kept one accepted alone.
    expect(() => new Worker('', { eval: true, execArgv: ['--expose-gc'] })).toThrow(expect.objectContaining({ code: 'ERR_WORKER_INVALID_EXEC_ARGV' }));
    const kept = workerExecArgv(argv);
    expect(kept).toEqual(['--trace-warnings', '--conditions', 'node', '--no-warnings']);
    expect(await runs(kept)).toBe(42);
    expect(workerExecArgv([])).toEqual([]);
    expect(workerExecArgv(['--enable-source-maps'])).toEqual(['--enable-source-maps']);
  });
});
