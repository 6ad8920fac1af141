/**
 * Turns due partition groups into the files a two-phase commit stages: one Parquet file per
 * group under its Hive partition, named by the caller (deterministically, e.g.
 * `part-s{shard}-{first}-{last}.parquet`), split into `-0`, `-1`, … files only when a group has
 * more rows than one parquet-wasm call may take.
 */
import { partKey } from '../common/lake-layout.js';
import type { PartitionGroup } from './partition-buffer.js';
import { encodeParquet, encodeParquetFiles, validateParquetOptions, type ParquetOptions } from './parquet.js';
import type { StageFile } from './two-phase.js';

/**
 * @param fileName file name for a suffix ('' for the single file of a group, '-0', '-1', … when split),
 *   e.g. `(s) => partName(shard, first, last, s)`.
 */
export function encodeGroups(groups: readonly PartitionGroup[], fileName: (suffix: string) => string, options: ParquetOptions = {}): StageFile[] {
  const o = validateParquetOptions(options);
  const files: StageFile[] = [];
  for (const g of groups) {
    if (g.rows <= o.maxRowsPerCall) {
      files.push({ key: partKey(g.table, g.partitionStartMs, fileName('')), body: encodeParquet(g.batches, o), rows: g.rows });
      continue;
    }
    encodeParquetFiles(g.batches, o).forEach((f, i) => files.push({ key: partKey(g.table, g.partitionStartMs, fileName(`-${i}`)), body: f.body, rows: f.rows }));
  }
  return files;
}
