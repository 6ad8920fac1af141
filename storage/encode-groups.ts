/**
 * Turns due partition groups into the files a two-phase commit stages: one Parquet file per
 * group under its Hive partition, named by the caller (deterministically, e.g.
 * `part-s{shard}-{first}-{last}.parquet`), split into `-0`, `-1`, … files only when a group has
 * more rows or bytes than one parquet-wasm call may take (`splitForEncode`).
 */
import { partKey } from '../common/lake-layout.js';
import type { PartitionGroup } from './partition-buffer.js';
import { encodeParquet, splitForEncode, validateParquetOptions, type ParquetOptions } from './parquet.js';
import type { StageFile } from './two-phase.js';

/**
 * @param fileName file name for a suffix ('' for the single file of a group, '-0', '-1', … when split),
 *   e.g. `(s) => partName(shard, first, last, s)`.
 */
export function encodeGroups(groups: readonly PartitionGroup[], fileName: (suffix: string) => string, options: ParquetOptions = {}): StageFile[] {
  const o = validateParquetOptions(options);
  const files: StageFile[] = [];
  for (const g of groups) {
    const chunks = splitForEncode(g.batches, o);
    chunks.forEach((chunk, i) => {
      const suffix = chunks.length === 1 ? '' : `-${i}`;
      files.push({ key: partKey(g.table, g.partitionStartMs, fileName(suffix)), body: encodeParquet(chunk, o), rows: chunk.reduce((n, b) => n + b.numRows, 0) });
    });
  }
  return files;
}
