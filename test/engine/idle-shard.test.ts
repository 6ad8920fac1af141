/**
 * An idle shard must not hold back gold (R9): with two shards and traffic for shard 0's users
 * only, shard 1 never has a watermark of its own; after the idle timeout the coordinator moves it
 * to the active shards' watermark, so the hour shard 0 closed is merged into gold.
 *
 * And a shard that is only quiet because it cannot keep up (its log unreadable for a while, its
 * checkpoints failing) is not idle: records wait in its log. Moving its watermark would close its
 * windows without them and make them too late — on-time events left out of sessions and gold
 * (found by the S3-outage test of test/cli/serve-s3.test.ts, one shard short in five gold hours).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { shardOfUser } from '../../common/hash.js';
import { Coordinator } from '../../engine/coordinator.js';
import { validateEngineOptions } from '../../engine/options.js';
import { IngestBatchBuilder, type IngestRow } from '../../ingest/batch-builder.js';
import { ingestRow as row } from '../helpers/batches.js';
import { openObjectStore } from '../../storage/open-store.js';
import { eventually } from '../helpers/eventually.js';
import { externalError } from '../../common/errors.js';
import type { LogRecord } from '../../log/log.js';
import { SegmentLog } from '../../log/segment-log.js';
import { hourlyTotals, openLakeReader } from '../helpers/lake.js';
import { WrappedSegmentLog } from '../helpers/wrapped-log.js';

const T0 = Date.UTC(2026, 2, 1, 10, 0, 0);
const HOUR = 3_600_000;

/** Ends `c` as a crash would: its close then skips the final checkpoint (what it committed before stays). */
const crash = (c: Coordinator): void => (c as unknown as { fail(err: unknown): void }).fail(new Error('simulated crash'));

/** The first `count` of user-0 … user-199 whose events go to `shard` (of 2). */
const usersOf = (shard: number, count = 2): string[] => Array.from({ length: 200 }, (_, i) => `user-${i}`).filter((u) => shardOfUser(u, 2) === shard).slice(0, count);

/**
 * Appends events at `times` of `shard`'s first `users` users (in turn) to `c`'s log and hands
 * them to it; ids `${prefix}-0`, `${prefix}-1`, …
 */
function eventsFor(c: Coordinator, prefix: string, users = 2): (shard: number, times: readonly number[], extra?: Partial<IngestRow>) => Promise<void> {
  let n = 0;
  return async (shard, times, extra = {}) => {
    const b = new IngestBatchBuilder(times.length);
    for (const t of times) b.push(row(`${prefix}-${n++}`, usersOf(shard, users)[n % users]!, t, extra));
    const payload = b.toIPC();
    c.submit(shard, await c.shardLogs[shard]!.append(payload), payload, times.length);
  };
}

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

  it('follows the shard ahead once every shard is idle: the windows the others closed reach gold, and a later event behind it is late', async () => {
    const minute = 60_000;
    const options = validateEngineOptions({ dataDir: join(root, 'data-all-idle'), lake: join(root, 'lake-all-idle'), shards: 2, workers: 1, flushIntervalMs: 100, idleTimeoutMs: 200, allowedLatenessMs: minute, reconcileIntervalMs: 0, compactAfterMs: 0 });
    const c = await Coordinator.start(options, pino({ level: 'silent' }));
    const store = await openObjectStore(options.lake);
    const append = eventsFor(c, 'e');
    let closed = false;
    try {
      // Shard 0's users stop at 10:50, shard 1's at 14:50; then nothing comes for either.
      await append(0, [T0 + 5 * minute, T0 + 20 * minute, T0 + 50 * minute]);
      await append(1, [T0 + 10 * minute, T0 + 2.5 * HOUR, T0 + 4 * HOUR + 50 * minute]);
      await c.drain();
      // Without the advance, gold waits for shard 0's watermark (10:49) for ever: not even hour 10 is merged.
      const gold = await eventually(async () => (await store.list('gold/hourly_metrics/')).filter((o) => o.key.endsWith('.parquet')).length >= 2, 30_000);
      expect(gold, 'hours 10 and 12 are merged while nothing arrives').toBe(true);
      expect(c.globalWatermark(), "shard 0 counts where it was moved to (what /v1/live shows)").toBe(T0 + 4 * HOUR + 49 * minute);
      await append(0, [T0 + HOUR + 5 * minute]);
      await c.drain();
      expect(c.live().tooLateTotal, 'an event at 11:05 for shard 0, now behind 14:49').toBe(1);
      expect(c.globalWatermark()).toBe(T0 + 4 * HOUR + 49 * minute);
      await c.close();
      closed = true;
    } finally {
      if (!closed) await c.close().catch(() => undefined);
      await store.close();
    }
    const r = await openLakeReader(options.lake);
    try {
      expect(await hourlyTotals(r)).toEqual([
        [10, 4, 3],
        [12, 1, 1],
      ]);
      // Shard 0's sessions closed with the advance (the 11:05 event is late: in the late table, in no session).
      const sessions = await r.rows<{ n: bigint }>(`SELECT count(*) AS n FROM ${r.rel('sessions')} WHERE user_id IN ('${usersOf(0).join("','")}')`);
      expect(Number(sessions[0]!.n)).toBeGreaterThan(0);
    } finally {
      r.close();
    }
  }, 60_000);

  it('follows the shard ahead after a restart too, before any new event: the restored state gives each shard its watermark', async () => {
    const minute = 60_000;
    const base = { dataDir: join(root, 'data-restart'), lake: join(root, 'lake-restart'), shards: 2, workers: 1, flushIntervalMs: 100, allowedLatenessMs: minute, reconcileIntervalMs: 0, compactAfterMs: 0 };
    // First life: ends with a crash (no final checkpoint, no advance at the stop) long before its
    // shards count as idle; what it processed is in its periodic checkpoints.
    const first = await Coordinator.start(validateEngineOptions({ ...base, idleTimeoutMs: 3_600_000 }), pino({ level: 'silent' }));
    const append = eventsFor(first, 'r');
    try {
      await append(0, [T0 + 5 * minute, T0 + 50 * minute]);
      await append(1, [T0 + 10 * minute, T0 + 2.5 * HOUR, T0 + 4 * HOUR + 50 * minute]);
      await first.drain();
      await first.checkpointNow(true);
    } finally {
      crash(first);
      await first.close().catch(() => undefined);
    }
    const store = await openObjectStore(base.lake);
    const second = await Coordinator.start(validateEngineOptions({ ...base, idleTimeoutMs: 200 }), pino({ level: 'silent' }));
    try {
      expect((await store.list('gold/hourly_metrics/')).length, 'nothing merged in the first life').toBe(0);
      const merged = await eventually(async () => (await store.list('gold/hourly_metrics/')).filter((o) => o.key.endsWith('.parquet')).length >= 2, 20_000);
      expect(merged, 'hours 10 and 12 merged with no event after the restart').toBe(true);
    } finally {
      await second.close();
      await store.close();
    }
  }, 60_000);

  it('follows the shard ahead at a graceful stop: the final checkpoint gives gold every window the others closed', async () => {
    const minute = 60_000;
    // Nothing counts as idle while it runs (an hour's timeout): only the stop can move shard 0.
    const options = validateEngineOptions({ dataDir: join(root, 'data-stop'), lake: join(root, 'lake-stop'), shards: 2, workers: 1, flushIntervalMs: 100, idleTimeoutMs: 3_600_000, allowedLatenessMs: minute, reconcileIntervalMs: 0, compactAfterMs: 0 });
    const c = await Coordinator.start(options, pino({ level: 'silent' }));
    const append = eventsFor(c, 's');
    try {
      // A backfill: shard 0's users end at 10:50, shard 1's at 14:50; then SIGTERM.
      await append(0, [T0 + 5 * minute, T0 + 20 * minute, T0 + 50 * minute]);
      await append(1, [T0 + 10 * minute, T0 + 2.5 * HOUR, T0 + 4 * HOUR + 50 * minute]);
      await c.drain();
      await c.checkpointNow(true);
      const store = await openObjectStore(options.lake);
      expect((await store.list('gold/hourly_metrics/')).length, 'shard 0 (10:49) holds every hour back while running').toBe(0);
      await store.close();
    } finally {
      await c.close();
    }
    const r = await openLakeReader(options.lake);
    try {
      expect(await hourlyTotals(r), 'hours 10 and 12 in gold right after the stop').toEqual([
        [10, 4, 3],
        [12, 1, 1],
      ]);
    } finally {
      r.close();
    }
  }, 60_000);

  it('is not moved past now by a phone whose clock runs ahead: on-time events of every user stay on time', async () => {
    const minute = 60_000;
    const options = validateEngineOptions({ dataDir: join(root, 'data-ahead'), lake: join(root, 'lake-ahead'), shards: 2, workers: 1, flushIntervalMs: 100, idleTimeoutMs: 200, allowedLatenessMs: 5 * minute, reconcileIntervalMs: 0, compactAfterMs: 0 });
    const c = await Coordinator.start(options, pino({ level: 'silent' }));
    const now = T0 + 6 * HOUR;
    const events = eventsFor(c, 'a', 3);
    /** Events of `shard`'s users at `times`, all received at `receivedAt`. */
    const append = (shard: number, times: number[], receivedAt: number): Promise<void> => events(shard, times, { received_at: receivedAt });
    try {
      // Both shards' users send at 16:00; one phone of shard 0 says 16:09 (no sentAt to correct it).
      await append(0, [now - 1000, now - 500], now);
      await append(1, [now - 1000, now - 500], now);
      await append(0, [now + 9 * minute], now);
      await c.drain();
      // Then everyone idles (the all-idle rule moves both shards to the highest watermark) and sends again at 16:01.
      await new Promise((r) => setTimeout(r, 500));
      await c.checkpointNow(true);
      await append(0, [now + minute - 1000], now + minute);
      await append(1, [now + minute - 1000], now + minute);
      await c.drain();
      expect(c.live().tooLateTotal, 'no on-time event is too late').toBe(0);
      expect(c.globalWatermark()).toBeLessThanOrEqual(now + minute - 5 * minute);
    } finally {
      await c.close();
    }
  }, 60_000);

  it('is not a shard that falls behind: records waiting in its log keep it out of the idle advance, so none of them becomes too late', async () => {
    /** A segment log whose reads fail while `failing` is set (the shard can read nothing, as in an outage of its log). */
    class Unreadable extends WrappedSegmentLog {
      failing = false;
      failed = 0;
      override async *read(fromOffset: number): AsyncGenerator<LogRecord> {
        if (this.failing) {
          this.failed++;
          throw externalError('log_unavailable', 'injected: the log cannot be read');
        }
        yield* this.inner.read(fromOffset);
      }
    }
    const dataDir = join(root, 'data-behind');
    const lake = join(root, 'lake-behind');
    const options = validateEngineOptions({ dataDir, lake, shards: 2, workers: 1, flushIntervalMs: 100, idleTimeoutMs: 300, allowedLatenessMs: 60_000, retryBaseMs: 100, retryMaxMs: 300, reconcileIntervalMs: 0, compactAfterMs: 0 });
    const logs = await Promise.all([0, 1].map(async (shard) => new Unreadable(await SegmentLog.open({ dir: join(dataDir, 'test-log', `shard-${shard}`), shard }))));
    const dlq = await SegmentLog.open({ dir: join(dataDir, 'test-log', 'dlq'), shard: -1 });
    const c = await Coordinator.start(options, pino({ level: process.env.T_LOG ?? 'silent' }), { shards: logs, dlq });
    let n = 0;
    /** Events for `shard`'s users at `times` (ms), appended and reported durable. */
    const append = async (shard: number, times: number[]): Promise<void> => {
      const users = usersOf(shard, 5);
      const b = new IngestBatchBuilder(times.length);
      for (const t of times) b.push(row(`e-${n++}`, users[n % users.length]!, t));
      await logs[shard]!.inner.append(b.toIPC());
      c.durable(shard, logs[shard]!.inner.durableNextOffset, times.length);
    };
    const minutes = (from: number, count: number): number[] => Array.from({ length: count }, (_, i) => T0 + (from + i) * 60_000);
    let closed = false;
    try {
      await append(0, minutes(0, 10));
      await append(1, minutes(0, 10));
      await c.drain();
      // Shard 0's log cannot be read while both shards receive hours 10–13; shard 1 stays busy far past the idle timeout.
      logs[0]!.failing = true;
      await append(0, minutes(10, 200));
      for (let m = 10; m < 210; m += 10) {
        await append(1, minutes(m, 10));
        await new Promise((r) => setTimeout(r, 60));
      }
      expect(await eventually(() => logs[0]!.failed >= 3, 10_000)).toBe(true);
      expect(c.globalWatermark(), 'shard 0 holds the global watermark back while it cannot read its records').toBe(T0 + 8 * 60_000); // its last event, 10:09, less the allowed lateness
      logs[0]!.failing = false;
      await c.drain();
      expect(c.live().tooLateTotal, 'no event became too late: every one was on time when it was acknowledged').toBe(0);
      await c.close();
      closed = true;
    } finally {
      if (!closed) await c.close().catch(() => undefined);
    }
    // Gold's hourly totals are silver's (DuckDB over the lake's files).
    const r = await openLakeReader(lake);
    try {
      const hours = await r.rows<{ w: unknown; g: bigint | null; s: bigint }>(`
        WITH s AS (SELECT date_trunc('hour', event_time) AS w, count(*) AS s FROM ${r.rel('events')} GROUP BY 1),
             g AS (SELECT window_start AS w, sum(events) AS g FROM ${r.rel('hourly_metrics')} WHERE device_type = 'ALL' AND app_version = 'ALL' AND country = 'ALL' GROUP BY 1)
        SELECT s.w, g, s FROM s LEFT JOIN g USING (w) ORDER BY 1`);
      expect(hours.length).toBeGreaterThanOrEqual(3);
      const complete = hours.filter((h) => new Date(String(h.w)).getTime() < T0 + 3 * HOUR);
      expect(complete.filter((h) => h.g !== h.s).map((h) => `${String(h.w)}: gold ${h.g}, silver ${h.s}`)).toEqual([]);
    } finally {
      r.close();
    }
  }, 60_000);
});
