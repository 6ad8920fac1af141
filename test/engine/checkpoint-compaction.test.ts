/**
 * A checkpoint round does not wait for a background compaction when there is nothing to erase.
 * Each round ran the erasure step, which awaited any compaction in progress first, so a round that
 * overlapped a compaction lasted as long as the compaction (soak 2026-12-03: rounds of 10–30 s at
 * 2,500 ev/s). Here the compaction never ends: the round must commit all the same.
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

const root = mkdtempSync(join(tmpdir(), 'sluice-checkpoint-compaction-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('checkpoint rounds and background compaction', () => {
  it('a round commits while a compaction is still running (no erasure open)', async () => {
    const lake = join(root, 'lake');
    const c = await Coordinator.start(
      validateEngineOptions({ dataDir: join(root, 'data'), lake, shards: 1, workers: 1, flushIntervalMs: 3_600_000, reconcileIntervalMs: 0, compactAfterMs: 0 }),
      pino({ level: 'silent' }),
    );
    // Stands for a compaction run that is slow (minutes on a big lake): it ends only when the test does.
    const inside = c as unknown as { compacting: Promise<void> | undefined };
    let endCompaction = (): void => undefined;
    try {
      const b = new IngestBatchBuilder(3);
      const ids = ['cc-0', 'cc-1', 'cc-2'];
      ids.forEach((id, i) => b.push(ingestRow(id, 'u1', Date.UTC(2026, 2, 1, 10) + i * 1000)));
      const payload = b.toIPC();
      c.submit(0, await c.shardLogs[0]!.append(payload), payload, ids.length);
      await c.drain(10_000);
      inside.compacting = new Promise<void>((resolve) => (endCompaction = resolve));
      const round = await Promise.race([c.checkpointNow().then(() => 'committed'), new Promise((r) => setTimeout(() => r('waited for the compaction'), 15_000))]);
      expect(round).toBe('committed');
      expect([...(await silverCounts(lake)).entries()].sort()).toEqual(ids.map((id) => [id, 1]));
    } finally {
      endCompaction();
      inside.compacting = undefined;
      await c.close();
    }
  }, 60_000);
});
