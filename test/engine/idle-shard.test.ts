/**
 * An idle shard must not hold back gold (R9): with two shards and traffic for shard 0's users
 * only, shard 1 never has a watermark of its own; after the idle timeout the coordinator moves it
 * to the active shards' watermark, so the hour shard 0 closed is merged into gold.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { shardOfUser } from '../../common/hash.js';
import { Coordinator } from '../../engine/coordinator.js';
import { validateEngineOptions } from '../../engine/options.js';
import { IngestBatchBuilder } from '../../ingest/batch-builder.js';
import { ingestRow as row } from '../helpers/batches.js';
import { openObjectStore } from '../../storage/open-store.js';
import { eventually } from '../helpers/eventually.js';

const T0 = Date.UTC(2026, 2, 1, 10, 0, 0);
const HOUR = 3_600_000;

const root = mkdtempSync(join(tmpdir(), 'sluice-idle-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));


describe('idle shard', () => {
  // idleTimeoutMs 1: the shard with data has gone quiet too by the time a checkpoint tick looks
  // (as on a loaded machine): the shard that never had data must still follow it.
  it.each([200, 1])('is advanced to the active shards’ watermark, so gold is not held back (idle timeout %i ms)', async (idleTimeoutMs) => {
    const users = Array.from({ length: 40 }, (_, i) => `user-${i}`).filter((u) => shardOfUser(u, 2) === 0).slice(0, 3);
    expect(users).toHaveLength(3);
    const options = validateEngineOptions({
      dataDir: join(root, `data-${idleTimeoutMs}`),
      lake: join(root, `lake-${idleTimeoutMs}`),
      shards: 2,
      workers: 1,
      flushIntervalMs: 100,
      idleTimeoutMs,
      reconcileIntervalMs: 0,
      compactAfterMs: 0,
    });
    const c = await Coordinator.start(options, pino({ level: 'silent' }));
    const store = await openObjectStore(options.lake);
    try {
      const b = new IngestBatchBuilder(16);
      // Hour 10 for every user, then one event at 13:00: shard 0's watermark becomes 11:00.
      users.forEach((u, i) => b.push(row(`e-${i}`, u, T0 + i * 60_000)));
      b.push(row('e-late-hour', users[0]!, T0 + 3 * HOUR));
      const payload = b.toIPC();
      const offset = await c.shardLogs[0]!.append(payload);
      c.submit(0, offset, payload, b.length);
      await c.drain();
      expect(c.globalWatermark()).toBe(T0 + HOUR);

      const merged = await eventually(async () => (await store.list('gold/hourly_metrics/')).some((o) => o.key.includes('/hour=10/')), 30_000);
      expect(merged).toBe(true);
      // Shard 1 was idle throughout: only shard 0 produced silver.
      const silver = await store.list('silver/events/');
      expect(silver.length).toBeGreaterThan(0);
      expect(silver.every((o) => o.key.includes('/part-s0-'))).toBe(true);
    } finally {
      await c.close();
      await store.close();
    }
  });
});
