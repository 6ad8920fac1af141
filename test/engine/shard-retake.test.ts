/**
 * An engine node that loses a shard's lease while the shard's log read hangs (a NATS server down:
 * renewals and reads fail together), and retakes the lease before that read returns. The new
 * ownership resumes from the lake's checkpoint; the read begun under the old one must not hand
 * its range to the new runtime nor move the new ownership's offsets. Before ownership epochs, the
 * stale read set the shard's next offset past everything between the checkpoint and its own
 * start: those records were never processed.
 *
 * Also what a fenced commit does to a shard's later tasks, and a fenced gold merge (the `gold`
 * lease given up, the stop succeeding).
 *
 * Real coordinator, worker, LMDB, segment log and lake; the read that hangs is a gate in front of
 * the real log (the stall a dead server causes), the leases are fences written to the lake the way
 * engine/cluster-node.ts raises them.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { Coordinator } from '../../engine/coordinator.js';
import type { ShardPool } from '../../engine/pool.js';
import { validityCell, writeFence, type LeaseFence } from '../../engine/lease-fence.js';
import { validateEngineOptions } from '../../engine/options.js';
import { IngestBatchBuilder } from '../../ingest/batch-builder.js';
import type { LogRecord } from '../../log/log.js';
import { SegmentLog } from '../../log/segment-log.js';
import { openObjectStore } from '../../storage/open-store.js';
import { ingestRow as row } from '../helpers/batches.js';
import { openLakeReader } from '../helpers/lake.js';
import { eventually, WrappedSegmentLog } from '../helpers/wrapped-log.js';

const T0 = Date.UTC(2026, 2, 1, 10, 0, 0);
const root = mkdtempSync(join(tmpdir(), 'sluice-retake-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A segment log whose next read, once `stall()` was called, waits until `release()`. */
class StallingLog extends WrappedSegmentLog {
  private gate: Promise<void> | undefined;
  private open: (() => void) | undefined;
  stalledAt: number | undefined;
  stall(): void {
    this.gate = new Promise((r) => (this.open = r));
  }
  release(): void {
    this.open?.();
  }
  override async *read(fromOffset: number): AsyncGenerator<LogRecord> {
    const gate = this.gate;
    if (gate !== undefined) {
      this.gate = undefined; // one read hangs; later ones go through
      this.stalledAt = fromOffset;
      await gate;
    }
    yield* this.inner.read(fromOffset);
  }
}

/** One engine node's coordinator with shard 0 on a stalling log, and leases raised as fences in the lake (`gold` too). */
async function node(name: string) {
  const dataDir = join(root, name, 'data');
  const lake = join(root, name, 'lake');
  const options = validateEngineOptions({ dataDir, lake, shards: 1, workers: 1, flushIntervalMs: 3_600_000, reconcileIntervalMs: 0, compactAfterMs: 0, stateInObjectStore: true });
  const log = new StallingLog(await SegmentLog.open({ dir: join(dataDir, 'test-log', 'shard-0'), shard: 0 }));
  const dlq = await SegmentLog.open({ dir: join(dataDir, 'test-log', 'dlq'), shard: -1 });
  const store = await openObjectStore(lake);
  const fences = new Map<string, LeaseFence>();
  /** Roles given up after a fenced commit (ClusterNode stops renewing them; here they just go). */
  const givenUp: string[] = [];
  const c = await Coordinator.start(options, pino({ level: process.env.T_LOG ?? 'silent' }), {
    shards: [log],
    dlq,
    cluster: {
      owned: [],
      fence: (s) => fences.get(`s${s}`),
      role: (name) => fences.get(name),
      giveUp: (name) => void (givenUp.push(name), fences.delete(name)),
    },
  });
  const ids: string[] = [];
  return {
    c,
    log,
    ids,
    givenUp,
    store,
    /** Takes the lease `name` (default shard 0's) with `token` (its fence in the lake); returns its validity cell. */
    async lease(token: number, lease = 's0'): Promise<ReturnType<typeof validityCell>> {
      const cell = validityCell(Date.now() + 3_600_000);
      const fence: LeaseFence = { name: lease, token, node: name, validUntil: cell.buffer };
      await writeFence(store, fence);
      fences.set(lease, fence);
      return cell;
    },
    /** Appends n events, the k-th overall at `at(k)` (default T0 + k s). */
    async append(n: number, at = (k: number) => T0 + k * 1000): Promise<void> {
      const b = new IngestBatchBuilder(n);
      for (let i = 0; i < n; i++) {
        const id = `e${ids.length}`;
        ids.push(id);
        b.push(row(id, `user-${ids.length % 7}`, at(ids.length)));
      }
      await log.inner.append(b.toIPC());
      c.durable(0, log.inner.durableNextOffset, n);
    },
    /** Closes, then asserts every id once in silver and in bronze (DuckDB over the lake). */
    async closeAndCheck(): Promise<void> {
      try {
        await c.close();
      } finally {
        await store.close();
      }
      const r = await openLakeReader(lake);
      try {
        for (const table of ['events', 'bronze_events'] as const) {
          const got = await r.rows<{ event_id: string; n: bigint }>(`SELECT event_id, count(*) AS n FROM ${r.rel(table)} GROUP BY 1`);
          expect(got.filter((x) => x.n !== 1n), `${table}: ids more than once`).toEqual([]);
          expect(got.map((x) => x.event_id).sort(), `${table}: every id`).toEqual([...ids].sort());
        }
      } finally {
        r.close();
      }
    },
  };
}

describe('a shard whose lease is lost and retaken', () => {
  it('while its log read hangs: resumes from the lake checkpoint, the stale read is dropped; every record in silver and bronze exactly once', async () => {
    const n = await node('stalled-read');
    const first = await n.lease(1);
    await n.c.addShard(0);
    for (let i = 0; i < 5; i++) await n.append(10);
    await n.c.drain();
    await n.c.checkpointNow(true); // committed: offsets 0 … 4
    for (let i = 0; i < 5; i++) await n.append(10);
    await n.c.drain(); // processed, not committed: 5 … 9
    n.log.stall();
    await n.append(10); // offset 10: its read hangs
    expect(await eventually(() => n.log.stalledAt === 10, 10_000)).toBe(true);

    // The lease is lost (renewals failed): the shard is abandoned, its fence drops.
    first.set(0);
    n.c.abandonShard(0);
    // Retaken (a higher token): the runtime reopens from the checkpoint, offset 4, and reads from 5.
    await n.lease(2);
    await n.c.addShard(0);
    expect(n.c.progress()[0]).toMatchObject({ shard: 0, checkpointed: 4 });
    await n.append(10);
    await n.c.drain(15_000); // the retaken shard does not wait for the stale read
    n.log.release(); // the stale read returns offsets 10 … now
    await new Promise((r) => setTimeout(r, 500));
    await n.append(10);
    await n.c.drain();
    await n.closeAndCheck();
  }, 60_000);

  it('after its commit was fenced (the lease went overdue before the node saw it lost): given up, not stopped; retaken, it commits everything once', async () => {
    const n = await node('fenced-commit');
    const first = await n.lease(1);
    await n.c.addShard(0);
    for (let i = 0; i < 3; i++) await n.append(10);
    await n.c.drain();
    await n.c.checkpointNow(true);
    for (let i = 0; i < 3; i++) await n.append(10);
    await n.c.drain();
    first.set(Date.now() - 1); // overdue: the next commit is refused by the fence
    await n.c.checkpointNow(true);
    expect(n.c.stoppedShards).toEqual([]);
    expect(n.c.ownedShards).toEqual([]);
    await n.lease(2);
    await n.c.addShard(0);
    expect(n.c.progress()[0]).toMatchObject({ shard: 0, checkpointed: 2 });
    await n.append(10);
    await n.c.drain();
    await n.closeAndCheck();
  }, 60_000);

  /** A node holding shard 0 and `gold`, with hour 10 ready to merge, whose gold lease just went overdue. */
  async function overdueGold(name: string) {
    const n = await node(name);
    await n.lease(1);
    const gold = await n.lease(1, 'gold');
    await n.c.addShard(0);
    // Hour 10 and, 4 h later, events that move the watermark (2 h lateness) past hour 10's emission point.
    await n.append(20);
    await n.append(5, (k) => T0 + 4 * 3_600_000 + k * 1000);
    await n.c.drain();
    gold.set(Date.now() - 1);
    return { n, gold };
  }

  it('when a gold merge is fenced (the gold lease went overdue before the node saw it lost): gold is given up, not failed — the stop succeeds, and once retaken the window is merged', async () => {
    const { n, gold } = await overdueGold('fenced-gold');
    await n.c.checkpointNow(true);
    // Before: the coordinator's checkpoint target failed with `fenced` and was retried with backoff until
    // the stop, whose final checkpoint then failed (`final_checkpoint_failed`: the engine node exited 1).
    expect(n.givenUp).toEqual(['gold']);
    expect(n.c.failure).toBeUndefined();
    expect(n.c.ownedShards).toEqual([0]);
    const goldFiles = async () => (await n.store.list('gold/hourly_metrics/')).map((o) => o.key).filter((k) => k.endsWith('.parquet'));
    expect(await goldFiles()).toEqual([]);
    // Taken again (a higher token): the next round merges the window the fenced one could not.
    await n.lease(2, 'gold');
    await n.c.checkpointNow(true);
    expect((await goldFiles()).length).toBeGreaterThan(0);
    gold.set(0); // the old fence stays refused; the new one is valid
    await n.closeAndCheck();
  }, 60_000);

  it('stopped while the gold lease is overdue: the stop gives gold up and succeeds (every event once in silver)', async () => {
    const { n } = await overdueGold('fenced-gold-at-stop');
    await n.closeAndCheck(); // threw final_checkpoint_failed before
    expect(n.givenUp).toEqual(['gold']);
  }, 60_000);

  it('a task answered after a fenced commit is refused as fenced too, so whichever answer the coordinator hears first gives the shard up (not stopped)', async () => {
    const n = await node('fenced-then-task');
    const cell = await n.lease(1);
    await n.c.addShard(0);
    await n.append(10);
    await n.c.drain();
    cell.set(Date.now() - 1);
    // The worker's answers, as they leave it: the commit is refused, and so is every task after it.
    const pool = (n.c as unknown as { pool: ShardPool }).pool;
    await expect(pool.checkpoint(0)).rejects.toMatchObject({ code: 'fenced', stopped: true });
    await expect(pool.checkpoint(0)).rejects.toMatchObject({ code: 'fenced', stopped: true }); // was `shard_failed`
    // Heard by the coordinator: given up, not stopped for good (a `shard_failed` answer stopped it until a restart).
    await n.c.checkpointNow(true);
    expect(n.c.stoppedShards).toEqual([]);
    expect(n.c.ownedShards).toEqual([]);
    await n.lease(2);
    await n.c.addShard(0);
    await n.append(10);
    await n.c.drain();
    await n.closeAndCheck();
  }, 60_000);
});
