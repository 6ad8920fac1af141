/**
 * The engine's worker threads run at the configured niceness (acks on the main thread first),
 * and only they do: read back from /proc (Linux) while a real coordinator runs.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { getPriority, setPriority, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { Coordinator } from '../../engine/coordinator.js';
import { validateEngineOptions } from '../../engine/options.js';

const root = mkdtempSync(join(tmpdir(), 'sluice-nice-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Niceness of every thread of this process (field 19 of /proc/self/task/<tid>/stat). */
function threadNiceness(): number[] {
  return readdirSync('/proc/self/task').map((tid) => {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
  });
}

describe('engine worker niceness', () => {
  it('applies workerNice to each worker thread and leaves the main thread alone', async () => {
    expect(threadNiceness().filter((n) => n === 7)).toHaveLength(0);
    const options = validateEngineOptions({ dataDir: join(root, 'data'), lake: join(root, 'lake'), shards: 4, workers: 2, workerNice: 7, reconcileIntervalMs: 0, compactAfterMs: 0 });
    const c = await Coordinator.start(options, pino({ level: 'silent' }));
    try {
      expect(threadNiceness().filter((n) => n === 7)).toHaveLength(2);
      expect(Number(readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ')[16])).toBe(0);
    } finally {
      await c.close();
    }
  });

  // Sluice started under `nice -n 5` runs its engine process at 15: worker threads asking for 10
  // used to raise their priority, which an unprivileged process may not (EACCES: no shard opened).
  it('never makes a worker thread less nice than the thread that started it', async () => {
    const own = getPriority();
    setPriority(12);
    try {
      const before = threadNiceness().filter((n) => n === 12).length;
      const options = validateEngineOptions({ dataDir: join(root, 'data-nicer'), lake: join(root, 'lake-nicer'), shards: 2, workers: 2, workerNice: 7, reconcileIntervalMs: 0, compactAfterMs: 0 });
      const c = await Coordinator.start(options, pino({ level: 'silent' }));
      try {
        expect(threadNiceness().filter((n) => n === 7)).toHaveLength(0);
        expect(threadNiceness().filter((n) => n === 12).length).toBeGreaterThanOrEqual(before + 2);
      } finally {
        await c.close();
      }
    } finally {
      restorePriority(own);
    }
  });
});

/** Back to `nice` on this thread; lowering niceness needs privilege, so unprivileged the thread stays nicer (harmless to other tests). */
function restorePriority(nice: number): void {
  try {
    setPriority(nice);
  } catch {
    // EACCES: not root
  }
}
