/**
 * A shard's log that cannot be read for a while (JetStream during a failover longer than a read
 * retries on its own) must not stop the engine, and must not make it skip records: the pump
 * retries with backoff, /readyz names the failing read meanwhile, and afterwards every record is
 * processed once. The log here is a real segment log behind a read that fails on demand; it
 * declares sparse offsets, the JetStream log's case, where a read that ends with nothing used to
 * mean "nothing whole up to the durable mark".
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { externalError } from '../../common/errors.js';
import { shardOfUser } from '../../common/hash.js';
import { Coordinator } from '../../engine/coordinator.js';
import { validateEngineOptions } from '../../engine/options.js';
import { IngestBatchBuilder } from '../../ingest/batch-builder.js';
import { ingestRow as row } from '../helpers/batches.js';
import type { LogRecord } from '../../log/log.js';
import { SegmentLog } from '../../log/segment-log.js';
import { openLakeReader } from '../helpers/lake.js';
import { eventually, WrappedSegmentLog } from '../helpers/wrapped-log.js';

const T0 = Date.UTC(2026, 2, 1, 10, 0, 0);
const root = mkdtempSync(join(tmpdir(), 'sluice-read-failure-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A segment log whose next `failures` reads throw `log_unavailable` before yielding anything. */
class UnavailableForAWhile extends WrappedSegmentLog {
  failures = 0;
  failed = 0;
  override async *read(fromOffset: number): AsyncGenerator<LogRecord> {
    if (this.failures > 0) {
      this.failures--;
      this.failed++;
      throw externalError('log_unavailable', 'injected: the stream has no leader');
    }
    yield* this.inner.read(fromOffset);
  }
}

describe('a shard log that cannot be read for a while', () => {
  it('is retried with backoff and named in /readyz; the engine goes on, and every record is processed once', async () => {
    const dataDir = join(root, 'data');
    const lake = join(root, 'lake');
    const options = validateEngineOptions({ dataDir, lake, shards: 2, workers: 1, flushIntervalMs: 100, retryBaseMs: 200, retryMaxMs: 1000, reconcileIntervalMs: 0, compactAfterMs: 0 });
    const logs = await Promise.all([0, 1].map(async (shard) => new UnavailableForAWhile(await SegmentLog.open({ dir: join(dataDir, 'test-log', `shard-${shard}`), shard }))));
    const dlq = await SegmentLog.open({ dir: join(dataDir, 'test-log', 'dlq'), shard: -1 });
    const c = await Coordinator.start(options, pino({ level: process.env.T_LOG ?? 'silent' }), { shards: logs, dlq });
    const ids: string[] = [];
    const append = async (shard: number, n: number): Promise<void> => {
      const users = Array.from({ length: 200 }, (_, i) => `user-${i}`).filter((u) => shardOfUser(u, 2) === shard);
      const b = new IngestBatchBuilder(n);
      for (let i = 0; i < n; i++) {
        const id = `s${shard}-e${ids.length}`;
        ids.push(id);
        b.push(row(id, users[i % users.length]!, T0 + ids.length * 1000));
      }
      await logs[shard]!.inner.append(b.toIPC());
      c.durable(shard, logs[shard]!.inner.durableNextOffset, n);
    };
    let closed = false;
    try {
      await append(0, 20);
      await append(1, 20);
      await c.drain();
      // Shard 0's log becomes unreadable for four reads while records keep arriving on both shards.
      logs[0]!.failures = 4;
      await append(0, 30);
      await append(1, 30);
      expect(await eventually(() => logs[0]!.failed >= 1, 10_000)).toBe(true);
      expect(c.failure?.message).toMatch(/log read of shard-0: failing \(log_unavailable/);
      await append(0, 30);
      expect(await eventually(() => logs[0]!.failures === 0 && c.failure === undefined, 20_000)).toBe(true);
      await c.drain();
      expect(logs[0]!.failed).toBe(4);
      await c.close();
      closed = true;
    } finally {
      if (!closed) await c.close().catch(() => undefined);
    }
    // Every record in silver once: DuckDB over the lake's files.
    const r = await openLakeReader(lake);
    try {
      const got = await r.rows<{ event_id: string; n: bigint }>(`SELECT event_id, count(*) AS n FROM ${r.rel('events')} GROUP BY 1`);
      expect(got.filter((x) => x.n !== 1n)).toEqual([]);
      expect(got.map((x) => x.event_id).sort()).toEqual([...ids].sort());
    } finally {
      r.close();
    }
  }, 60_000);
});
