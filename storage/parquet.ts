/**
 * Parquet encoding and decoding with parquet-wasm 0.8 (Arrow IPC in, Parquet bytes out).
 *
 * - ZSTD by default; Snappy or none on request (parquet-wasm has no ZSTD level setting).
 * - Dictionary encoding on for low-cardinality strings (Arrow Dictionary columns and plain
 *   low-cardinality Utf8), off for id-like and free-text columns (`PLAIN_COLUMNS`: event_id,
 *   user_id, anonymous_id, session_id, properties, raw, …) where dictionaries only cost CPU and
 *   bytes. Arrow `Dictionary<Utf8, Int32>` columns are written as plain Parquet strings
 *   (BYTE_ARRAY/UTF8, dictionary-encoded pages), so every reader sees VARCHAR; parquet-wasm also
 *   stores the Arrow schema, so `decodeParquet` gives the Dictionary type back.
 * - Timestamps and integers: DELTA_BINARY_PACKED, no dictionary, no codec (3× faster and 25 %
 *   smaller than dictionary/PLAIN + ZSTD; a standard encoding read by DuckDB, Spark, Trino,
 *   Athena, Polars).
 * - Page statistics (min/max per page and per column chunk) on times, numbers and dimensions, so
 *   DuckDB, Trino, Spark prune row groups and pages by time (and by dimension where data is
 *   clustered); none on `PLAIN_COLUMNS`, where min/max of random ids or JSON prune nothing and
 *   computing them cost ~20 % of encode time.
 *
 * Measured (bench/storage-parquet.bench.ts, 500k silver rows, one core, noisy 2-core machine):
 * ZSTD 0.52–0.59 M rows/s, 32.4 B/event; DuckDB 1-thread COPY zstd 0.50–0.68 M rows/s, 35.7 B/event.
 * - Row groups of `rowGroupRows` (default 131 072) rows.
 * - Arrow Timestamp(ms, 'UTC') is written as INT64 TIMESTAMP(MILLIS, isAdjustedToUTC=true), which
 *   DuckDB reads as TIMESTAMP WITH TIME ZONE.
 *
 * Memory: parquet-wasm's heap grows to the peak of any call and never shrinks (4 GiB cap), and a
 * call holds its input twice (IPC copy + wasm arrays) plus the output. So one wasm call gets at
 * most `maxRowsPerCall` rows (default 1 M, ~0.9 GiB heap at worst):
 * - `encodeParquet` (sync, one file) refuses bigger inputs;
 * - `encodeParquetAsync` writes one file of any size through parquet-wasm's streaming writer,
 *   feeding it at most `maxRowsPerCall` rows at a time (one file, several row groups);
 * - `encodeParquetFiles` (sync) splits a big input into several files of ≤ `maxRowsPerCall` rows
 *   and ≈ ≤ `maxBytesPerCall` Arrow bytes (`splitForEncode` cuts the chunks).
 */
import * as pq from 'parquet-wasm/node';
import { DataType, RecordBatch, Table, tableFromIPC, tableToIPC, type Schema } from 'apache-arrow';
import { coalesceBatches, concatToIpcStream } from '../common/arrow-concat.js';
import { userError } from '../common/errors.js';
import { arrowBytes } from './partition-buffer.js';

export type ParquetCompression = 'zstd' | 'snappy' | 'none';
export type ParquetStatistics = 'page' | 'chunk' | 'none';

/** Encoder options. Every field is optional; `PARQUET_DEFAULTS` says what an omitted one means. */
export interface ParquetOptions {
  /** Column compression. Default 'zstd'. */
  compression?: ParquetCompression;
  /** Maximum rows per row group. Default 131 072. */
  rowGroupRows?: number;
  /** Min/max statistics granularity. Default 'page' (page index + column chunk). */
  statistics?: ParquetStatistics;
  /** Columns written without dictionary encoding (all others get it). Default `PLAIN_COLUMNS`. */
  plainColumns?: readonly string[];
  /** Most rows handed to parquet-wasm in one call (see module doc). Default 1 000 000. */
  maxRowsPerCall?: number;
  /**
   * Most in-memory Arrow bytes (values, offsets, validity) handed to parquet-wasm in one call by
   * the splitters (`splitForEncode`, `encodeParquetFiles`, engine checkpoints): wide rows (big
   * `properties` or `raw`) reach the heap bound long before the row bound. Default 256 MiB.
   */
  maxBytesPerCall?: number;
}

/** Columns whose values are (nearly) unique per row or free text: dictionary encoding is wasted on them. */
export const PLAIN_COLUMNS: readonly string[] = ['event_id', 'user_id', 'anonymous_id', 'session_id', 'properties', 'raw', 'message', 'first_event_id'];

export const PARQUET_DEFAULTS: Readonly<Required<ParquetOptions>> = {
  compression: 'zstd',
  rowGroupRows: 131_072,
  statistics: 'page',
  plainColumns: PLAIN_COLUMNS,
  maxRowsPerCall: 1_000_000,
  maxBytesPerCall: 256 * 1024 * 1024,
};

const CODECS: Record<ParquetCompression, pq.Compression> = {
  zstd: pq.Compression.ZSTD,
  snappy: pq.Compression.SNAPPY,
  none: pq.Compression.UNCOMPRESSED,
};

const STATS: Record<ParquetStatistics, pq.EnabledStatistics> = {
  page: pq.EnabledStatistics.Page,
  chunk: pq.EnabledStatistics.Chunk,
  none: pq.EnabledStatistics.None,
};

/** Fills defaults and checks every option; throws a user error naming the bad one. */
export function validateParquetOptions(options: ParquetOptions = {}): Required<ParquetOptions> {
  const o = { ...PARQUET_DEFAULTS, ...stripUndefined(options) };
  if (!Object.hasOwn(CODECS, o.compression)) throw userError('invalid_option', `parquet compression must be zstd, snappy or none, got ${String(o.compression)}`);
  if (!Object.hasOwn(STATS, o.statistics)) throw userError('invalid_option', `parquet statistics must be page, chunk or none, got ${String(o.statistics)}`);
  if (!Number.isInteger(o.rowGroupRows) || o.rowGroupRows < 1) throw userError('invalid_option', `parquet rowGroupRows must be a positive integer, got ${o.rowGroupRows}`);
  if (!Number.isInteger(o.maxRowsPerCall) || o.maxRowsPerCall < 1) throw userError('invalid_option', `parquet maxRowsPerCall must be a positive integer, got ${o.maxRowsPerCall}`);
  if (!(Number.isFinite(o.maxBytesPerCall) && o.maxBytesPerCall >= 1)) throw userError('invalid_option', `parquet maxBytesPerCall must be a positive number of bytes, got ${o.maxBytesPerCall}`);
  return o;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/**
 * parquet-wasm writer properties for a file of `schema`, chosen per column by Arrow type:
 * - strings (Utf8, Dictionary<Utf8>): dictionary pages (RLE_DICTIONARY), except `plainColumns`;
 * - timestamps and integers: no dictionary, DELTA_BINARY_PACKED (times arrive nearly sorted:
 *   measured 3× faster to encode and 25 % smaller than dictionary or PLAIN, ZSTD on top);
 * - floats, booleans: PLAIN.
 * Properties are consumed (moved into wasm) by the writer: build one per write. `o` must come
 * from `validateParquetOptions`.
 */
export function writerProperties(schema: Schema, o: Required<ParquetOptions>): pq.WriterProperties {
  let builder = new pq.WriterPropertiesBuilder()
    .setCompression(CODECS[o.compression])
    .setMaxRowGroupSize(o.rowGroupRows)
    .setStatisticsEnabled(STATS[o.statistics])
    .setDictionaryEnabled(true)
    .setCreatedBy('sluice');
  for (const f of schema.fields) {
    const t = f.type as DataType;
    if (DataType.isUtf8(t) || DataType.isLargeUtf8(t) || (DataType.isDictionary(t) && DataType.isUtf8(t.dictionary))) {
      if (o.plainColumns.includes(f.name)) {
        // Random ids and free text: a dictionary only costs, and min/max cannot prune anything.
        builder = builder.setColumnDictionaryEnabled(f.name, false).setColumnStatisticsEnabled(f.name, pq.EnabledStatistics.None);
      }
    } else if (DataType.isTimestamp(t) || (DataType.isInt(t) && t.bitWidth >= 32)) {
      // Delta-packed times/counters leave nothing for a general codec (measured: same size, +60 % time).
      builder = builder
        .setColumnDictionaryEnabled(f.name, false)
        .setColumnEncoding(f.name, pq.Encoding.DELTA_BINARY_PACKED)
        .setColumnCompression(f.name, pq.Compression.UNCOMPRESSED);
    } else {
      builder = builder.setColumnDictionaryEnabled(f.name, false);
    }
  }
  return builder.build();
}

const toTable = (input: RecordBatch[] | Table): Table => (input instanceof Table ? input : new Table(input));

/**
 * Encodes batches (all of one schema) into one Parquet file, synchronously, in one parquet-wasm
 * call. The input is not modified. Throws a user error when it has more than `maxRowsPerCall`
 * rows: use `encodeParquetAsync` (one file) or `encodeParquetFiles` (several) for those.
 */
export function encodeParquet(input: RecordBatch[] | Table, options: ParquetOptions = {}): Uint8Array {
  const o = validateParquetOptions(options);
  const table = toTable(input);
  if (table.numRows > o.maxRowsPerCall) {
    throw userError(
      'parquet_input_too_large',
      `encodeParquet got ${table.numRows} rows, more than maxRowsPerCall (${o.maxRowsPerCall}); use encodeParquetAsync or encodeParquetFiles, which bound parquet-wasm's heap`,
    );
  }
  const wasmTable = pq.Table.fromIPCStream(tableToIPC(table, 'stream'));
  return pq.writeParquet(wasmTable, writerProperties(table.schema, o));
}

/**
 * `encodeParquet` of `batches` (one schema) merged into one batch — a shard's buffer holds one
 * small batch per log record, and parquet-wasm pays a fixed cost per batch. The merged batch is
 * written straight into the IPC stream parquet-wasm reads (common/arrow-concat's
 * concatToIpcStream), so it is never built and then copied again by an IPC writer. Column types
 * that concatToIpcStream does not write go through `coalesceBatches` and `encodeParquet`.
 */
export function encodeParquetMerged(batches: RecordBatch[], options: ParquetOptions = {}): Uint8Array {
  const o = validateParquetOptions(options);
  const rows = batches.reduce((n, b) => n + b.numRows, 0);
  const ipc = rows > 0 && rows <= o.maxRowsPerCall ? concatToIpcStream(batches) : undefined;
  if (ipc === undefined) return encodeParquet(coalesceBatches(batches), o);
  return pq.writeParquet(pq.Table.fromIPCStream(ipc), writerProperties(batches[0]!.schema, o));
}

/**
 * Encodes batches of any total size into ONE Parquet file through parquet-wasm's streaming
 * writer, handing it at most `maxRowsPerCall` rows at a time (the file gets row groups of
 * `rowGroupRows`). Same bytes as `encodeParquet` for inputs both accept.
 */
export async function encodeParquetAsync(input: RecordBatch[] | Table, options: ParquetOptions = {}): Promise<Uint8Array> {
  const o = validateParquetOptions(options);
  const table = toTable(input);
  if (table.numRows <= o.maxRowsPerCall) return encodeParquet(table, o);
  const slices = sliceRows(table, o.maxRowsPerCall);
  let next = 0;
  const source = new ReadableStream<pq.RecordBatch>({
    pull(controller) {
      const slice = slices[next++];
      if (slice === undefined) {
        controller.close();
        return;
      }
      const wasmTable = pq.Table.fromIPCStream(tableToIPC(slice, 'stream'));
      try {
        for (const b of wasmTable.recordBatches()) controller.enqueue(b);
      } finally {
        wasmTable.free();
      }
    },
  });
  return writeParquetStream(source, writerProperties(table.schema, o));
}

/**
 * Runs parquet-wasm's streaming writer over a stream of wasm record batches (pulled one at a
 * time, so the caller bounds how much sits in the wasm heap) and concatenates the file's bytes.
 */
export async function writeParquetStream(source: ReadableStream<pq.RecordBatch>, properties: pq.WriterProperties): Promise<Uint8Array> {
  const out: ReadableStream<Uint8Array> = await pq.transformParquetStream(source, properties);
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of out as unknown as AsyncIterable<Uint8Array>) {
    chunks.push(chunk);
    total += chunk.byteLength;
  }
  const bytes = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.byteLength;
  }
  return bytes;
}

/** A Parquet file's Arrow schema, from its footer (no data decoded). */
export function parquetSchema(bytes: Uint8Array): Schema {
  return tableFromIPC(pq.readSchema(bytes).intoIPCStream()).schema;
}

/**
 * Encodes a big input as several Parquet files of at most `maxRowsPerCall` rows and about
 * `maxBytesPerCall` Arrow bytes each (see `splitForEncode`), in row order.
 */
export function encodeParquetFiles(input: RecordBatch[] | Table, options: ParquetOptions = {}): Array<{ body: Uint8Array; rows: number }> {
  const o = validateParquetOptions(options);
  const batches = input instanceof Table ? input.batches : input;
  return splitForEncode(batches, o).map((chunk) => ({ body: encodeParquet(chunk, o), rows: chunk.reduce((n, b) => n + b.numRows, 0) }));
}

/**
 * Cuts batches (in order) into consecutive chunks that one `encodeParquet` call may take: at most
 * `maxRowsPerCall` rows and at most `maxBytesPerCall` in-memory Arrow bytes each (a batch's bytes
 * are spread evenly over its rows; a batch too big for one chunk is sliced, zero-copy). A single
 * row bigger than the byte bound gets a chunk of its own. Pure and deterministic: the same
 * batches and options give the same chunks, so names derived from chunk indexes are stable
 * across replays. Empty batches are skipped; no batches → no chunks.
 */
export function splitForEncode(batches: readonly RecordBatch[], options: ParquetOptions = {}): RecordBatch[][] {
  const o = validateParquetOptions(options);
  const chunks: RecordBatch[][] = [];
  let chunk: RecordBatch[] = [];
  let rows = 0;
  let bytes = 0;
  const cut = (): void => {
    chunks.push(chunk);
    chunk = [];
    rows = 0;
    bytes = 0;
  };
  for (const batch of batches) {
    const n = batch.numRows;
    if (n === 0) continue;
    const perRow = arrowBytes(batch.data) / n;
    for (let at = 0; at < n; ) {
      const byBytes = perRow > 0 ? Math.floor((o.maxBytesPerCall - bytes) / perRow) : n;
      let take = Math.min(n - at, o.maxRowsPerCall - rows, byBytes);
      if (take <= 0) {
        if (chunk.length > 0) {
          cut();
          continue;
        }
        take = 1;
      }
      chunk.push(at === 0 && take === n ? batch : batch.slice(at, at + take));
      rows += take;
      bytes += take * perRow;
      at += take;
    }
  }
  if (chunk.length > 0) cut();
  return chunks;
}

/** Consecutive row ranges of at most `maxRows` rows (zero-copy slices). */
function sliceRows(table: Table, maxRows: number): Table[] {
  const out: Table[] = [];
  for (let at = 0; at < table.numRows; at += maxRows) out.push(table.slice(at, Math.min(table.numRows, at + maxRows)));
  return out.length > 0 ? out : [table];
}

/** Decodes a Parquet file into an Arrow JS table (tests, compaction). Dictionary columns written by Sluice come back as Dictionary. */
export function decodeParquet(bytes: Uint8Array): Table {
  const wasmTable = pq.readParquet(bytes);
  return tableFromIPC(wasmTable.intoIPCStream());
}

