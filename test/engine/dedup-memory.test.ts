/**
 * The dedup hot table is memory that grows with traffic by design (up to a bound derived from
 * --max-memory), so /metrics shows it per shard after each checkpoint: the ids it holds and the
 * bytes of its arrays. Duplicates add nothing.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { register } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import { Coordinator } from '../../engine/coordinator.js';
import { validateEngineOptions } from '../../engine/options.js';
import { IngestBatchBuilder } from '../../ingest/batch-builder.js';
import { ingestRow } from '../helpers/batches.js';

const root = mkdtempSync(join(tmpdir(), 'sluice-dedup-memory-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const gauge = async (name: string, shard: number): Promise<number | undefined> => {
  const text = await register.getSingleMetricAsString(name);
  const m = new RegExp(`^${name}\\{shard="${shard}"\\} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
};

describe('dedup hot table in /metrics', () => {
  it('reports the ids held and the bytes of the table per shard after a checkpoint', async () => {
    const c = await Coordinator.start(
      validateEngineOptions({ dataDir: join(root, 'data'), lake: join(root, 'lake'), shards: 1, workers: 1, flushIntervalMs: 3_600_000, reconcileIntervalMs: 0, compactAfterMs: 0 }),
      pino({ level: 'silent' }),
    );
    try {
      const send = async (ids: string[]): Promise<void> => {
        const b = new IngestBatchBuilder(ids.length);
        ids.forEach((id, i) => b.push(ingestRow(id, `u${i % 11}`, Date.UTC(2026, 2, 1, 10) + i * 1000)));
        const payload = b.toIPC();
        c.submit(0, await c.shardLogs[0]!.append(payload), payload, ids.length);
      };
      const ids = Array.from({ length: 3000 }, (_, i) => `dm-${i}`);
      await send(ids.slice(0, 2000));
      await send([...ids.slice(2000), ...ids.slice(0, 500)]); // 500 duplicates
      await c.drain(10_000);
      await c.checkpointNow();
      expect(await gauge('sluice_engine_dedup_hot_ids', 0)).toBe(3000);
      const bytes = (await gauge('sluice_engine_dedup_hot_bytes', 0))!;
      // 12 B per slot, a power of two of slots, at most half full.
      expect(bytes % 12).toBe(0);
      expect(Math.log2(bytes / 12) % 1).toBe(0);
      expect(bytes / 12).toBeGreaterThanOrEqual(2 * 3000);
    } finally {
      await c.close();
    }
  });
});
