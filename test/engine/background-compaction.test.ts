/**
 * The engine's background compaction runs in a worker thread of its own (engine/compaction.ts),
 * not on the coordinator's thread, whose synchronous Parquet work stopped range dispatch for the
 * whole run. Here a real coordinator commits one small silver file per checkpoint into one hour,
 * then its background compaction (every reconcileIntervalMs) must merge them — every event still
 * exactly once, by DuckDB. A run aborted before it starts merges nothing; on an S3 lake (s3rver) the
 * thread opens the bucket itself; a lake it cannot open is an error of the run.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { compactInWorker } from '../../engine/compaction.js';
import { Coordinator } from '../../engine/coordinator.js';
import { validateEngineOptions } from '../../engine/options.js';
import { IngestBatchBuilder } from '../../ingest/batch-builder.js';
import { openObjectStore } from '../../storage/open-store.js';
import { decodeParquet } from '../../storage/parquet.js';
import { ingestRow } from '../helpers/batches.js';
import { silverCounts } from '../helpers/lake.js';
import { startS3rver } from '../helpers/s3rver.js';

const root = mkdtempSync(join(tmpdir(), 'sluice-background-compaction-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const HOUR = Date.UTC(2026, 2, 1, 10);

/** Parquet files under the lake's silver events table. */
function silverFiles(lake: string): string[] {
  const dir = join(lake, 'silver', 'events');
  try {
    return (readdirSync(dir, { recursive: true }) as string[]).filter((f) => f.endsWith('.parquet'));
  } catch {
    return [];
  }
}

/** One record of `n` events per checkpoint, all in one hour: a small silver file each. */
async function commitSmallFiles(c: Coordinator, files: number, n: number, prefix: string): Promise<string[]> {
  const ids: string[] = [];
  for (let f = 0; f < files; f++) {
    const b = new IngestBatchBuilder(n);
    for (let i = 0; i < n; i++) {
      const id = `${prefix}-${f}-${i}`;
      ids.push(id);
      b.push(ingestRow(id, `u${i % 7}`, HOUR + f * 60_000 + i * 1000));
    }
    const payload = b.toIPC();
    c.submit(0, await c.shardLogs[0]!.append(payload), payload, n);
    await c.drain(10_000);
    await c.checkpointNow();
  }
  return ids;
}

describe('background compaction in its own thread', () => {
  it('merges the small files of an open partition; every event stays exactly once', async () => {
    const lake = join(root, 'lake-merge');
    // reconcileIntervalMs paces compaction too; a long flush interval leaves the rounds to the test.
    const options = validateEngineOptions({ dataDir: join(root, 'data-merge'), lake, shards: 1, workers: 1, flushIntervalMs: 3_600_000, reconcileIntervalMs: 50, compactAfterMs: 1 });
    const c = await Coordinator.start(options, pino({ level: 'silent' }));
    try {
      const ids = await commitSmallFiles(c, 6, 4, 'bg');
      expect(silverFiles(lake).length).toBeGreaterThanOrEqual(2);
      const before = silverFiles(lake).length;
      // Rounds start compactions once the interval has passed; wait for one that merged.
      const inside = c as unknown as { compacting: Promise<void> | undefined };
      const deadline = Date.now() + 30_000;
      while (silverFiles(lake).length >= before && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 60));
        await c.checkpointNow();
        await inside.compacting;
      }
      expect(silverFiles(lake).length).toBeLessThan(before);
      expect([...(await silverCounts(lake)).entries()].sort()).toEqual(ids.map((id) => [id, 1] as const).sort());
    } finally {
      await c.close();
    }
  }, 60_000);

  it('a run aborted before it starts merges nothing and reports it; the lake is unchanged', async () => {
    const lake = join(root, 'lake-abort');
    const c = await Coordinator.start(validateEngineOptions({ dataDir: join(root, 'data-abort'), lake, shards: 1, workers: 1, flushIntervalMs: 3_600_000, reconcileIntervalMs: 0, compactAfterMs: 0 }), pino({ level: 'silent' }));
    let ids: string[];
    try {
      ids = await commitSmallFiles(c, 3, 2, 'ab');
    } finally {
      await c.close();
    }
    const before = silverFiles(lake).sort();
    const abort = new AbortController();
    abort.abort();
    const r = await compactInWorker({ lake, options: { olderThanMs: 0, openPartitions: true } }, abort.signal);
    expect(r.outputs).toBe(0);
    expect(silverFiles(lake).sort()).toEqual(before);
    // The same run, not aborted, merges them — at the niceness it is given (the coordinator's: the shard workers' + 5).
    const merged = await compactInWorker({ lake, nice: 13, options: { olderThanMs: 0, openPartitions: true } });
    expect(merged.outputs).toBeGreaterThan(0);
    expect(merged.nice).toBe(13);
    expect(silverFiles(lake).length).toBeLessThan(before.length);
    expect([...(await silverCounts(lake)).entries()].sort()).toEqual(ids.map((id) => [id, 1] as const).sort());
  }, 60_000);

  it('on an S3 lake (s3rver) the thread opens the lake itself, endpoint and credentials included, and merges there', async () => {
    const s3 = await startS3rver();
    try {
      // The lake is written locally, then copied object by object into the bucket: run from sources,
      // this coordinator's shard worker failed to import storage/s3-store.js (tsx in a piscina
      // worker); the compiled serve on S3 is test/cli/serve-s3.test.ts's.
      const local = join(root, 'lake-s3-source');
      const c = await Coordinator.start(validateEngineOptions({ dataDir: join(root, 'data-s3'), lake: local, shards: 1, workers: 1, flushIntervalMs: 3_600_000, reconcileIntervalMs: 0, compactAfterMs: 0 }), pino({ level: 'silent' }));
      let ids: string[];
      try {
        ids = await commitSmallFiles(c, 3, 2, 's3');
      } finally {
        await c.close();
      }
      const lake = 's3://lake/bg';
      const store = await openObjectStore(lake, { s3Endpoint: s3.endpoint });
      const source = await openObjectStore(local);
      for (const o of await source.list('')) if (!o.key.startsWith('_sluice/tmp/')) await store.put(o.key, (await source.get(o.key))!);
      const silver = async (): Promise<string[]> => (await store.list('silver/events/')).map((o) => o.key).filter((k) => k.endsWith('.parquet'));
      const before = await silver();
      const r = await compactInWorker({ lake, s3Endpoint: s3.endpoint, options: { olderThanMs: 0, openPartitions: true } });
      expect(r.outputs).toBeGreaterThan(0);
      const after = await silver();
      expect(after.length).toBeLessThan(before.length);
      const seen: string[] = [];
      for (const key of after) {
        const t = decodeParquet((await store.get(key))!);
        for (const id of t.getChild('event_id')!.toArray() as string[]) seen.push(id);
      }
      expect(seen.sort()).toEqual(ids.sort());
      await store.close();
    } finally {
      await s3.stop();
    }
  }, 60_000);

  it('a lake it cannot open is an error of the run, not a crash of the engine', async () => {
    await expect(compactInWorker({ lake: 'ftp://nowhere/lake', options: { olderThanMs: 0 } })).rejects.toThrow(/lake must be a directory, file:\/\/ or s3:\/\/ URL/);
  });
});
