/**
 * Rebalancing when an engine node joins (engine/cluster-node.ts), on a REAL nats-server and a real
 * local lake: node A runs alone and owns every shard; records keep arriving on every shard while
 * node B joins. A hands its highest shards over (final checkpoint, then it releases the leases),
 * B takes them and restores their state from the lake, and both go on. Afterwards each node owns
 * half of the shards and every record is in silver exactly once (DuckDB over the lake). Skipped
 * only when nats-server is missing.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateEngineOptions } from '../../engine/options.js';
import { IngestBatchBuilder } from '../../ingest/batch-builder.js';
import { JetStreamLogs } from '../../log/jetstream-log.js';
import { ingestRow as row } from '../helpers/batches.js';
import { openLakeReader } from '../helpers/lake.js';
import { startEngineNode, type TestEngineNode } from '../helpers/in-process-node.js';
import { natsServerPath, startNatsCluster, type NatsCluster } from '../helpers/nats-cluster.js';

const T0 = Date.UTC(2026, 2, 1, 10, 0, 0);
const SHARDS = 4;
const describeNats = natsServerPath() === undefined ? describe.skip : describe;
if (natsServerPath() === undefined) console.warn('test/engine/rebalance.test.ts: SKIPPED — nats-server is not installed (apt-get install -y nats-server)');

async function eventually(what: string, check: () => boolean | Promise<boolean>, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describeNats('rebalancing when an engine node joins (real nats-server, real lake)', () => {
  let nats: NatsCluster | undefined;
  let root: string;
  beforeAll(async () => {
    nats = await startNatsCluster({ nodes: 1 });
    root = mkdtempSync(join(tmpdir(), 'sluice-rebalance-'));
  }, 60_000);
  afterAll(async () => {
    await nats?.stop();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  const node = (id: string): Promise<TestEngineNode> => startEngineNode(nats!.urls, id, validateEngineOptions({ dataDir: join(root, id), lake: join(root, 'lake'), shards: SHARDS, workers: 1, flushIntervalMs: 300, reconcileIntervalMs: 0, compactAfterMs: 0 }));

  it('the first node owns every shard, hands half over to the second with a final checkpoint; every record once in silver', async () => {
    const writer = await JetStreamLogs.connect({ servers: nats!.urls, replicas: 1 });
    const logs = (await writer.openAll(SHARDS)).shards;
    const ids: string[] = [];
    const append = async (shard: number, n: number): Promise<void> => {
      const b = new IngestBatchBuilder(n);
      for (let i = 0; i < n; i++) {
        const id = `s${shard}-e${ids.length}`;
        ids.push(id);
        b.push(row(id, `user-${shard}-${ids.length % 9}`, T0 + ids.length * 1000));
      }
      await logs[shard]!.append(b.toIPC());
    };
    const A = await node('a');
    let B: Awaited<ReturnType<typeof node>> | undefined;
    try {
      await eventually('A to own every shard', () => A.node.coordinator.ownedShards.length === SHARDS);
      let sending = true;
      // Records on every shard the whole time (bounded: at most 400 records per shard).
      const traffic = (async () => {
        for (let round = 0; sending && round < 400; round++) {
          for (let s = 0; s < SHARDS; s++) await append(s, 5);
          await new Promise((r) => setTimeout(r, 10));
        }
      })();
      await eventually('A to process some records', () => A.node.coordinator.live().processedTotal >= 200);

      B = await node('b');
      await eventually('two shards per node', () => A.node.coordinator.ownedShards.length === 2 && B!.node.coordinator.ownedShards.length === 2);
      // A gave up its highest shards, B took exactly those.
      expect(A.node.coordinator.ownedShards).toEqual([0, 1]);
      expect(B.node.coordinator.ownedShards).toEqual([2, 3]);
      expect(B.node.heldLeases).toEqual(expect.arrayContaining(['s2', 's3']));
      await eventually('B to process records of its shards', () => B!.node.coordinator.live().processedTotal >= 100);
      sending = false;
      await traffic;
    } finally {
      // A graceful close reads each owned shard's durable mark, processes up to it and commits.
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
      const got = await r.rows<{ event_id: string; n: bigint }>(`SELECT event_id, count(*) AS n FROM ${r.rel('events')} GROUP BY 1`);
      expect(got.filter((x) => x.n !== 1n), 'ids more than once').toEqual([]);
      expect(got.map((x) => x.event_id).sort()).toEqual([...ids].sort());
    } finally {
      r.close();
    }
  }, 120_000);
});
