/**
 * An engine node that loses a shard's lease while the shard's log read hangs (a NATS server down:
 * renewals and reads fail together), and retakes the lease before that read returns. The new
 * ownership resumes from the lake's checkpoint; the read begun under the old one must not hand
 * its range to the new runtime nor move the new ownership's offsets. Before ownership epochs, the
 * stale read set the shard's next offset past everything between the checkpoint and its own
 * start: those records were never processed.
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
import { Coordinator, type ConsumedLog } from '../../engine/coordinator.js';
import { validityCell, writeFence, type LeaseFence } from '../../engine/lease-fence.js';
import { validateEngineOptions } from '../../engine/options.js';
import { IngestBatchBuilder } from '../../ingest/batch-builder.js';
import type { LogRecord } from '../../log/log.js';
import { SegmentLog } from '../../log/segment-log.js';
import { openObjectStore } from '../../storage/open-store.js';
import { ingestRow as row } from '../helpers/batches.js';
import { openLakeReader } from '../helpers/lake.js';

const T0 = Date.UTC(2026, 2, 1, 10, 0, 0);
const root = mkdtempSync(join(tmpdir(), 'sluice-retake-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A segment log whose next read, once `stall()` was called, waits until `release()`. */
class StallingLog implements ConsumedLog {
  readonly denseOffsets = false;
  private gate: Promise<void> | undefined;
  private open: (() => void) | undefined;
  stalledAt: number | undefined;
  constructor(readonly inner: SegmentLog) {}
  get durableNextOffset(): number {
    return this.inner.durableNextOffset;
  }
  stall(): void {
    this.gate = new Promise((r) => (this.open = r));
  }
  release(): void {
    this.open?.();
  }
  async *read(fromOffset: number): AsyncGenerator<LogRecord> {
    const gate = this.gate;
    if (gate !== undefined) {
      this.gate = undefined; // one read hangs; later ones go through
      this.stalledAt = fromOffset;
      await gate;
    }
    yield* this.inner.read(fromOffset);
  }
  truncateBefore(offset: number): Promise<void> {
    return this.inner.truncateBefore(offset);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

async function eventually(check: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return check();
}

describe('a shard whose lease is lost and retaken while its log read hangs', () => {
  it('resumes from the lake checkpoint; the stale read is dropped: every record in silver and bronze exactly once', async () => {
    const dataDir = join(root, 'data');
    const lake = join(root, 'lake');
    const options = validateEngineOptions({ dataDir, lake, shards: 1, workers: 1, flushIntervalMs: 3_600_000, reconcileIntervalMs: 0, compactAfterMs: 0, stateInObjectStore: true });
    const log = new StallingLog(await SegmentLog.open({ dir: join(dataDir, 'test-log', 'shard-0'), shard: 0 }));
    const dlq = await SegmentLog.open({ dir: join(dataDir, 'test-log', 'dlq'), shard: -1 });
    const store = await openObjectStore(lake);
    const fences = new Map<string, LeaseFence>();
    const lease = async (token: number): Promise<ReturnType<typeof validityCell>> => {
      const cell = validityCell(Date.now() + 3_600_000);
      const fence: LeaseFence = { name: 's0', token, node: 'n1', validUntil: cell.buffer };
      await writeFence(store, fence);
      fences.set('s0', fence);
      return cell;
    };
    const c = await Coordinator.start(options, pino({ level: process.env.T_LOG ?? 'silent' }), {
      shards: [log],
      dlq,
      cluster: { owned: [], fence: (s) => fences.get(`s${s}`), role: () => undefined },
    });
    const ids: string[] = [];
    const append = async (n: number): Promise<void> => {
      const b = new IngestBatchBuilder(n);
      for (let i = 0; i < n; i++) {
        const id = `e${ids.length}`;
        ids.push(id);
        b.push(row(id, `user-${ids.length % 7}`, T0 + ids.length * 1000));
      }
      await log.inner.append(b.toIPC());
      c.durable(0, log.inner.durableNextOffset, n);
    };
    let closed = false;
    try {
      const first = await lease(1);
      await c.addShard(0);
      for (let i = 0; i < 5; i++) await append(10);
      await c.drain();
      await c.checkpointNow(true); // committed: offsets 0 … 4
      for (let i = 0; i < 5; i++) await append(10);
      await c.drain(); // processed, not committed: 5 … 9
      log.stall();
      await append(10); // offset 10: its read hangs
      expect(await eventually(() => log.stalledAt === 10, 10_000)).toBe(true);

      // The lease is lost (renewals failed): the shard is abandoned, its fence drops.
      first.set(0);
      c.abandonShard(0);
      // Retaken (a higher token): the runtime reopens from the checkpoint, offset 4, and reads from 5.
      await lease(2);
      await c.addShard(0);
      expect(c.progress()[0]).toMatchObject({ shard: 0, checkpointed: 4 });
      await append(10);
      await c.drain(15_000); // the retaken shard does not wait for the stale read
      log.release(); // the stale read returns offsets 10 … now
      await new Promise((r) => setTimeout(r, 500));
      await append(10);
      await c.drain();
      await c.close();
      closed = true;
    } finally {
      if (!closed) await c.close().catch(() => undefined);
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
  }, 60_000);
});
