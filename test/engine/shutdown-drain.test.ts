/**
 * Shutdown with a backlog larger than the drain bound: close() commits what was processed and
 * leaves the rest in the log, resolving in bounded time instead of failing (and, in the engine
 * process, being killed by serve's close timeout); the next start processes the rest, and every
 * event is in silver exactly once (DuckDB over the lake).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { Coordinator } from '../../engine/coordinator.js';
import { validateEngineOptions } from '../../engine/options.js';
import { IngestBatchBuilder } from '../../ingest/batch-builder.js';
import { ingestRow } from '../helpers/batches.js';
import { silverCounts } from '../helpers/lake.js';

const root = mkdtempSync(join(tmpdir(), 'sluice-shutdown-drain-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('shutdown drain bound', () => {
  it('commits what was processed, leaves the rest in the log, and the next start commits it: every event once', async () => {
    const base = { dataDir: join(root, 'data'), lake: join(root, 'lake'), shards: 1, workers: 1, flushIntervalMs: 3_600_000, maxRangeRecords: 1, reconcileIntervalMs: 0, compactAfterMs: 0 };
    const first = await Coordinator.start(validateEngineOptions({ ...base, shutdownDrainMs: 0 }), pino({ level: 'silent' }));
    const ids: string[] = [];
    // Every record is in the log before the engine hears of any, then close() follows in the same tick:
    // the backlog cannot be processed before the (zero) drain bound, whatever the machine's speed.
    const records: Array<{ offset: number; payload: Uint8Array }> = [];
    for (let r = 0; r < 40; r++) {
      const b = new IngestBatchBuilder(100);
      for (let i = 0; i < 100; i++) {
        const id = `d-${r}-${i}`;
        ids.push(id);
        const t = Date.UTC(2026, 2, 1, 10) + ids.length * 1000;
        b.push(ingestRow(id, `u${i % 20}`, t));
      }
      const payload = b.toIPC();
      records.push({ offset: await first.shardLogs[0]!.append(payload), payload });
    }
    for (const { offset, payload } of records) first.submit(0, offset, payload, 100);
    await first.close(); // resolves: no 'timed out draining'
    const afterFirst = await silverCounts(base.lake).catch(() => new Map<string, number>());
    expect(afterFirst.size).toBeLessThan(ids.length); // a backlog was left in the log
    [...afterFirst.values()].forEach((n) => expect(n).toBe(1));

    const second = await Coordinator.start(validateEngineOptions(base), pino({ level: 'silent' }));
    await second.close();
    const counts = await silverCounts(base.lake);
    expect([...counts.keys()].sort()).toEqual([...ids].sort());
    expect([...counts.values()].filter((n) => n !== 1)).toEqual([]);
  }, 60_000);
});
