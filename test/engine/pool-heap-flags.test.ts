import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { defaultEngineOptions } from '../../engine/options.js';
import { ShardPool } from '../../engine/pool.js';

const root = mkdtempSync(join(tmpdir(), 'sluice-pool-flags-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('ShardPool under V8 heap flags', () => {
  it.each(['--max-semi-space-size=8', '--initial-old-space-size=64'])('starts its workers when the process runs with %s (a Worker refuses heap flags in its execArgv)', async (flag) => {
    process.execArgv.push(flag);
    let pool: ShardPool | undefined;
    try {
      pool = new ShardPool(1);
      const o = defaultEngineOptions();
      const opened = await pool.open(0, {
        shards: 1,
        dataDir: join(root, 'data'),
        lake: join(root, 'lake'),
        allowedLatenessMs: o.allowedLatenessMs,
        sessionGapMs: o.sessionGapMs,
        dedupTtlMs: o.dedupTtlMs,
        compression: o.compression,
        targetFileBytes: o.targetFileBytes,
        metricEventTypes: o.metricEventTypes,
        workerNice: 0,
        maxRowsPerParquetCall: o.maxRowsPerParquetCall,
        maxBytesPerParquetCall: o.maxBytesPerParquetCall,
        encodeChunkRows: o.encodeChunkRows,
        encodeChunkBytes: o.encodeChunkBytes,
      });
      expect(opened.checkpointOffset).toBe(-1);
      await pool.close(0);
    } finally {
      process.execArgv.pop();
      await pool?.destroy();
    }
  }, 120_000);
});
