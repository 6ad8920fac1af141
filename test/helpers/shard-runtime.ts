/**
 * Options of a ShardRuntime opened directly by a test (one shard, small dedup table, everything
 * buffered until the checkpoint): 20 min lateness, 30 min session gap, 2 h dedup TTL unless `extra`
 * says otherwise.
 */
import type { ShardRuntimeOptions } from '../../engine/types.js';

const MIN = 60_000;

export function testRuntimeOptions(dataDir: string, lake: string, extra: Partial<ShardRuntimeOptions> = {}): ShardRuntimeOptions {
  return {
    shards: 1,
    dataDir,
    lake,
    allowedLatenessMs: 20 * MIN,
    sessionGapMs: 30 * MIN,
    dedupTtlMs: 2 * 60 * MIN,
    dedupHotCapacity: 600,
    compression: 'zstd',
    targetFileBytes: 64 << 20,
    workerNice: 0,
    maxRowsPerParquetCall: 1_000_000,
    maxBytesPerParquetCall: 256 << 20,
    encodeChunkRows: 1 << 20,
    encodeChunkBytes: 256 << 20,
    ...extra,
  };
}
