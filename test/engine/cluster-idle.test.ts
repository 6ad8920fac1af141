/**
 * Idle shards across engine nodes (engine/coordinator.ts advanceIdleShards, on a REAL nats-server
 * and a real local lake): two nodes own one shard each; shard 0's users stop at 10:50, shard 1's
 * at 14:50, then nothing comes. Each node sees the other's shard only through the lake (its
 * watermark and whether it was idle, written with its checkpoints), and once both are idle shard 0
 * follows shard 1, so the hours shard 1 closed reach gold. Without the other node's shard, node A
 * held shard 0 at its own 10:49 and not even hour 10 was merged. Skipped only when nats-server is
 * missing.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shardOfUser } from '../../common/hash.js';
import { validateEngineOptions } from '../../engine/options.js';
import { IngestBatchBuilder } from '../../ingest/batch-builder.js';
import { JetStreamLogs } from '../../log/jetstream-log.js';
import { openObjectStore } from '../../storage/open-store.js';
import { ingestRow as row } from '../helpers/batches.js';
import { eventually } from '../helpers/eventually.js';
import { hourlyTotals, openLakeReader } from '../helpers/lake.js';
import { startEngineNode, type TestEngineNode } from '../helpers/in-process-node.js';
import { natsServerPath, startNatsCluster, type NatsCluster } from '../helpers/nats-cluster.js';

const T0 = Date.UTC(2026, 2, 1, 10, 0, 0);
const MIN = 60_000;
const HOUR = 60 * MIN;
const SHARDS = 2;
const describeNats = natsServerPath() === undefined ? describe.skip : describe;
if (natsServerPath() === undefined) console.warn('test/engine/cluster-idle.test.ts: SKIPPED — nats-server is not installed (apt-get install -y nats-server)');

describeNats('idle shards across engine nodes (real nats-server, real lake)', () => {
  let nats: NatsCluster | undefined;
  let root: string;
  beforeAll(async () => {
    nats = await startNatsCluster({ nodes: 1 });
    root = mkdtempSync(join(tmpdir(), 'sluice-cluster-idle-'));
  }, 60_000);
  afterAll(async () => {
    await nats?.stop();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  const node = (id: string): Promise<TestEngineNode> => startEngineNode(nats!.urls, id, validateEngineOptions({ dataDir: join(root, id), lake: join(root, 'lake'), shards: SHARDS, workers: 1, flushIntervalMs: 300, idleTimeoutMs: 300, allowedLatenessMs: MIN, reconcileIntervalMs: 0, compactAfterMs: 0 }));

  it("a node whose shards are all idle moves them to the other node's idle shard's watermark: the hours it closed reach gold", async () => {
    const usersOf = (shard: number): string[] => Array.from({ length: 200 }, (_, i) => `user-${i}`).filter((u) => shardOfUser(u, SHARDS) === shard).slice(0, 2);
    const writer = await JetStreamLogs.connect({ servers: nats!.urls, replicas: 1 });
    const logs = (await writer.openAll(SHARDS)).shards;
    let n = 0;
    const append = async (shard: number, times: number[]): Promise<void> => {
      const b = new IngestBatchBuilder(times.length);
      for (const t of times) b.push(row(`e-${n++}`, usersOf(shard)[n % 2]!, t));
      await logs[shard]!.append(b.toIPC());
    };
    const A = await node('a');
    let B: Awaited<ReturnType<typeof node>> | undefined;
    const store = await openObjectStore(join(root, 'lake'));
    try {
      await eventually(() => A.node.coordinator.ownedShards.length === SHARDS, 30_000);
      B = await node('b');
      expect(await eventually(() => A.node.coordinator.ownedShards.length === 1 && B!.node.coordinator.ownedShards.length === 1, 30_000), 'one shard per node').toBe(true);
      await append(0, [T0 + 5 * MIN, T0 + 20 * MIN, T0 + 50 * MIN]);
      await append(1, [T0 + 10 * MIN, T0 + 2.5 * HOUR, T0 + 4 * HOUR + 50 * MIN]);
      const merged = await eventually(async () => (await store.list('gold/hourly_metrics/')).filter((o) => o.key.endsWith('.parquet')).length >= 2, 30_000);
      expect(merged, 'hours 10 and 12 merged while nothing arrives').toBe(true);
    } finally {
      await store.close();
      await A.node.close();
      await A.js.close();
      if (B) {
        await B.node.close();
        await B.js.close();
      }
      await writer.close();
    }
    const r = await openLakeReader(join(root, 'lake'));
    try {
      expect(await hourlyTotals(r)).toEqual([
        [10, 4, 3],
        [12, 1, 1],
      ]);
    } finally {
      r.close();
    }
  }, 150_000);
});
