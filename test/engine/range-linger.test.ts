/**
 * The range linger (engine option rangeLingerMs): under light load a shard waits a little for more
 * records before it takes a range, so records that arrive one by one share one worker task
 * instead of paying a task each; enough waiting events end the wait at once; closing never waits.
 * And the range's event bound (maxRangeEvents): under a lag, a range stops at the record that
 * reaches it, from memory and from the log alike. Ranges are counted by the engine's own
 * histogram (sluice_engine_range_records), events by DuckDB over the lake.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { register, type Histogram } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import { Coordinator } from '../../engine/coordinator.js';
import { validateEngineOptions, type EngineOptions } from '../../engine/options.js';
import { IngestBatchBuilder } from '../../ingest/batch-builder.js';
import { ingestRow } from '../helpers/batches.js';
import { silverCounts } from '../helpers/lake.js';

const root = mkdtempSync(join(tmpdir(), 'sluice-range-linger-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Ranges taken so far and the records in them (the histogram's count and sum). */
async function ranges(): Promise<{ count: number; records: number }> {
  const h = register.getSingleMetric('sluice_engine_range_records') as Histogram | undefined;
  const values = (await h?.get())?.values ?? [];
  const of = (suffix: string): number => values.find((v) => v.metricName === `sluice_engine_range_records_${suffix}`)?.value ?? 0;
  return { count: of('count'), records: of('sum') };
}

let run = 0;

/** Starts a one-shard engine, feeds it `records` records of `events` events `gapMs` apart, drains and closes it. */
async function feed(options: Partial<EngineOptions>, records: number, events: number, gapMs: number): Promise<{ ranges: number; records: number; silver: Map<string, number>; ids: string[] }> {
  const dir = join(root, `run-${++run}`);
  const lake = join(dir, 'lake');
  const c = await Coordinator.start(
    validateEngineOptions({ dataDir: join(dir, 'data'), lake, shards: 1, workers: 1, flushIntervalMs: 3_600_000, reconcileIntervalMs: 0, compactAfterMs: 0, ...options }),
    pino({ level: 'silent' }),
  );
  const before = await ranges();
  const ids: string[] = [];
  try {
    for (let r = 0; r < records; r++) {
      const b = new IngestBatchBuilder(events);
      for (let i = 0; i < events; i++) {
        const id = `l${run}-${r}-${i}`;
        ids.push(id);
        b.push(ingestRow(id, `u${i % 7}`, Date.UTC(2026, 2, 1, 10) + ids.length * 1000));
      }
      const payload = b.toIPC();
      c.submit(0, await c.shardLogs[0]!.append(payload), payload, events);
      if (gapMs > 0) await delay(gapMs);
    }
    await c.drain(5_000);
  } finally {
    await c.close();
  }
  const after = await ranges();
  return { ranges: after.count - before.count, records: after.records - before.records, silver: await silverCounts(lake), ids };
}

const exactlyOnce = (silver: Map<string, number>, ids: string[]): void => {
  expect([...silver.keys()].sort()).toEqual([...ids].sort());
  expect([...silver.values()].filter((n) => n !== 1)).toEqual([]);
};

describe('range linger', () => {
  it('records arriving one by one within the linger share one range', async () => {
    const r = await feed({ rangeLingerMs: 2_000 }, 6, 10, 20);
    expect(r).toMatchObject({ ranges: 1, records: 6 });
    exactlyOnce(r.silver, r.ids);
  });

  it('without a linger the first record is a range of its own', async () => {
    const r = await feed({ rangeLingerMs: 0 }, 6, 10, 20);
    expect(r.records).toBe(6);
    expect(r.ranges).toBeGreaterThan(1);
    exactlyOnce(r.silver, r.ids);
  });

  it('enough waiting events end the linger at once: the drain does not wait for it', async () => {
    // A 9 s linger would outlast the 5 s drain bound; 30 events waiting end it.
    const r = await feed({ rangeLingerMs: 9_000, rangeMinEvents: 30 }, 3, 10, 0);
    expect(r.records).toBe(3);
    exactlyOnce(r.silver, r.ids);
  });

  it('closing does not wait for a linger: what is waiting is processed and committed', async () => {
    const dir = join(root, 'close');
    const lake = join(dir, 'lake');
    const c = await Coordinator.start(
      // Had close() waited for the 9 s linger, its 2 s drain bound would have left the record in the log.
      validateEngineOptions({ dataDir: join(dir, 'data'), lake, shards: 1, workers: 1, flushIntervalMs: 3_600_000, reconcileIntervalMs: 0, compactAfterMs: 0, rangeLingerMs: 9_000, shutdownDrainMs: 2_000 }),
      pino({ level: 'silent' }),
    );
    const b = new IngestBatchBuilder(5);
    const ids = Array.from({ length: 5 }, (_, i) => `close-${i}`);
    ids.forEach((id, i) => b.push(ingestRow(id, 'u1', Date.UTC(2026, 2, 1, 10) + i * 1000)));
    const payload = b.toIPC();
    c.submit(0, await c.shardLogs[0]!.append(payload), payload, 5);
    await c.close();
    exactlyOnce(await silverCounts(lake), ids);
  });
});

describe('range event bound', () => {
  // The linger holds the records back until all 1 000 events wait: then the bound alone cuts the ranges.
  const held = { rangeLingerMs: 5_000, rangeMinEvents: 1_000 };

  it('cuts the waiting records into ranges that stop at the record reaching maxRangeEvents (records in memory)', async () => {
    const r = await feed({ ...held, maxRangeEvents: 300 }, 10, 100, 0);
    expect(r).toMatchObject({ ranges: 4, records: 10 }); // 3 + 3 + 3 + 1 records
    exactlyOnce(r.silver, r.ids);
  });

  it('counts the events of records read back from the log by their Arrow headers', async () => {
    // No queue in memory: every record is read from the log, where only its bytes say how many events it holds.
    const r = await feed({ ...held, maxRangeEvents: 300, maxQueuedBytesPerShard: 0 }, 10, 100, 0);
    expect(r).toMatchObject({ ranges: 4, records: 10 });
    exactlyOnce(r.silver, r.ids);
  });

  it('takes a record larger than the bound as a range of its own', async () => {
    const r = await feed({ rangeLingerMs: 5_000, rangeMinEvents: 300, maxRangeEvents: 50 }, 3, 100, 0);
    expect(r).toMatchObject({ ranges: 3, records: 3 });
    exactlyOnce(r.silver, r.ids);
  });

  it('without the bound (the default, 16 384 events) the same records are one range', async () => {
    const r = await feed(held, 10, 100, 0);
    expect(r).toMatchObject({ ranges: 1, records: 10 });
    exactlyOnce(r.silver, r.ids);
  });
});
