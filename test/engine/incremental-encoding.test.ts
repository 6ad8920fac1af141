/**
 * Incremental encoding (issue 13: a checkpoint costs what came since the last chunk, not what
 * exists): a shard encodes a partition's buffer as a chunk file as soon as it passes
 * encodeChunkRows, between checkpoints; the next checkpoint commits the chunks with the rest.
 * Through the real server and engine: chunk files named by their record range appear, each within
 * the bound, every acknowledged event is in silver exactly once. (test/engine/crash.test.ts runs
 * its kill -9 rounds with small chunks too.)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startSluice } from '../../cli/serve.js';
import { validateEngineOptions } from '../../engine/options.js';
import { openLakeReader } from '../helpers/lake.js';
import { captureLogger, exactlyOnce, postEvents, silverCounts } from './fixtures/engine-http.js';

const KEY = 'wk-chunks';
const root = mkdtempSync(join(tmpdir(), 'sluice-chunks-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('incremental encoding', () => {
  it('encodes full buffers as chunks between checkpoints; the checkpoint commits them with the rest, every row once', async () => {
    const lake = join(root, 'lake');
    const CHUNK = 120;
    const engine = validateEngineOptions({ dataDir: join(root, 'data'), lake, shards: 1, workers: 1, flushIntervalMs: 60_000, reconcileIntervalMs: 0, compactAfterMs: 0, encodeChunkRows: CHUNK });
    const sluice = await startSluice({ host: '127.0.0.1', port: 0, writeKeys: [KEY], engine, ingest: {} }, captureLogger().logger);
    const acked = new Set<string>();
    try {
      // 10 requests of 50 events, one log record each: a chunk is cut at the end of the record that passes 120 rows.
      for (let r = 0; r < 10; r++) {
        const p = await postEvents(sluice.url, KEY, `c${r}`, 50);
        expect(p.status).toBe(200);
        p.ids.forEach((id) => acked.add(id));
        await sluice.coordinator!.drain();
      }
      // One checkpoint for everything (the flush interval is a minute).
      await sluice.coordinator!.checkpointNow();
    } finally {
      await sluice.close();
    }
    const r = await openLakeReader(lake);
    try {
      const files = r.files('events');
      const chunks = files.filter((f) => /\/part-s0-\d+-\d+-c\.parquet$/.test(f));
      expect(chunks.length).toBeGreaterThanOrEqual(3);
      const perFile = await r.rows<{ filename: string; n: bigint }>(`SELECT filename, count(*) AS n FROM read_parquet([${chunks.map((f) => `'${f}'`).join(',')}], filename = true) GROUP BY filename`);
      // A chunk is cut at a record boundary once past the bound: at most one record (50 events) over it.
      expect(perFile.every((x) => Number(x.n) >= CHUNK && Number(x.n) < CHUNK + 50)).toBe(true);
    } finally {
      r.close();
    }
    const { missing, doubled } = exactlyOnce(acked, await silverCounts(lake));
    expect(missing).toEqual([]);
    expect(doubled).toEqual([]);
  }, 60_000);
});
