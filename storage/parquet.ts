/**
 * Parquet encoding and decoding with parquet-wasm (Arrow IPC in, Parquet bytes out).
 *
 * - ZSTD by default; Snappy or none on request.
 * - Dictionary encoding on for low-cardinality strings, off for id-like and free-text columns
 *   (dictionaries there only cost CPU and bytes).
 * - Chunk statistics on every column, so DuckDB and others prune row groups by time and dimension.
 * - Timestamps arrive as Arrow Timestamp(ms, 'UTC') and are written as
 *   TIMESTAMP(MILLIS, isAdjustedToUTC=true).
 * - parquet-wasm's heap grows and never shrinks (4 GiB cap): keep one call under ~1 M rows; the
 *   engine checkpoints (and so encodes) long before a shard buffers that many.
 */
import * as pq from 'parquet-wasm/node';
import { RecordBatch, Table, tableFromIPC, tableToIPC } from 'apache-arrow';
import { userError } from '../common/errors.js';

export type ParquetCompression = 'zstd' | 'snappy' | 'none';

export interface ParquetOptions {
  /** Default 'zstd'. */
  compression?: ParquetCompression;
  /** Rows per row group. Default 131 072. */
  rowGroupRows?: number;
}

/** Columns whose values are (nearly) unique per row: dictionary encoding is wasted on them. */
const HIGH_CARDINALITY = ['event_id', 'user_id', 'anonymous_id', 'session_id', 'properties', 'raw', 'message', 'first_event_id'];

const CODECS: Record<ParquetCompression, pq.Compression> = {
  zstd: pq.Compression.ZSTD,
  snappy: pq.Compression.SNAPPY,
  none: pq.Compression.UNCOMPRESSED,
};

function writerProperties(columns: string[], options: ParquetOptions): pq.WriterProperties {
  const compression = options.compression ?? 'zstd';
  if (!(compression in CODECS)) throw userError('invalid_option', `compression must be zstd, snappy or none, got ${compression}`);
  const rowGroupRows = options.rowGroupRows ?? 131_072;
  // WriterProperties are consumed by writeParquet (moved into wasm), so they are built per call.
  let builder = new pq.WriterPropertiesBuilder()
    .setCompression(CODECS[compression])
    .setMaxRowGroupSize(rowGroupRows)
    .setStatisticsEnabled(pq.EnabledStatistics.Chunk)
    .setDictionaryEnabled(true)
    .setCreatedBy('sluice');
  for (const c of columns) if (HIGH_CARDINALITY.includes(c)) builder = builder.setColumnDictionaryEnabled(c, false);
  return builder.build();
}

/**
 * Encodes batches (all of one schema) into one Parquet file. The batches are not modified.
 */
export function encodeParquet(input: RecordBatch[] | Table, options: ParquetOptions = {}): Uint8Array {
  const table = input instanceof Table ? input : new Table(input);
  const ipc = tableToIPC(table, 'stream');
  const wasmTable = pq.Table.fromIPCStream(ipc);
  const columns = table.schema.fields.map((f) => f.name);
  return pq.writeParquet(wasmTable, writerProperties(columns, options));
}

/** Decodes a Parquet file into an Arrow JS table (tests, compaction). */
export function decodeParquet(bytes: Uint8Array): Table {
  const wasmTable = pq.readParquet(bytes);
  return tableFromIPC(wasmTable.intoIPCStream());
}
