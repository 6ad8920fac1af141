/**
 * Bronze encoding benchmark (tinybench; not part of `npm test`), for issue 13's "decide bronze's
 * encoding by measurement":
 *
 *   node --import tsx bench/bronze-encoding.bench.ts [--rows 50000] [--time 4000] [--iterations 5] [--json]
 *
 * Builds a bronze batch the way a shard does (engine/shard-runtime.ts `addBronze`: the ingest
 * row + `shard` + `log_offset`, one offset per log record) from the loadgen's seeded Segment
 * traffic, with `raw` = the Segment message's JSON exactly as the HTTP path keeps it
 * (loadgen `messageJson`, ≈ 500–1000 B), then encodes it on one core with `encodeParquet`
 * under these variants:
 *
 *   current            the defaults: ZSTD on every string column, delta-packed ints uncompressed
 *   raw=<codec>        `raw` with LZ4_RAW / SNAPPY / UNCOMPRESSED, every other column as today
 *   raw+props=<codec>  `raw` and `properties` with LZ4_RAW / SNAPPY
 *   file=snappy        `compression: 'snappy'` (every codec-compressed column)
 *   file=none          `compression: 'none'` (reference: no codec at all)
 *
 * Per variant: µs/row (tinybench median latency / rows), file bytes, and both as a ratio to
 * `current` measured in the same run (the machine is shared and noisy: read the ratios). Each
 * variant's file is then read back by DuckDB (`read_parquet`): row count and an md5 over every
 * `raw` (and `properties`) value in file order must equal the input's.
 *
 * Codecs (parquet-wasm 0.8 `pq.Compression`, probed 2026-12-02): UNCOMPRESSED, SNAPPY, GZIP,
 * BROTLI, ZSTD, LZ4_RAW write and DuckDB reads them; LZ4 (deprecated Hadoop framing) writes but
 * DuckDB refuses it ("Unsupported compression codec"); LZO panics in the wasm writer.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs } from './args.js';
import { DuckDBInstance } from '@duckdb/node-api';
import { Field, Int32, Int64, makeData, RecordBatch, Schema, Struct, Table } from 'apache-arrow';
import * as pq from 'parquet-wasm/node';
import { Bench } from 'tinybench';
import { IngestBatchBuilder } from '../ingest/batch-builder.js';
import { messageJson } from '../loadgen/encode.js';
import { TrafficGenerator } from '../loadgen/generator.js';
import { arrowBytes } from '../storage/partition-buffer.js';
import { encodeParquet, type ParquetOptions } from '../storage/parquet.js';

const { values: args } = benchArgs(import.meta.url, {
  options: {
    rows: { type: 'string', default: '50000' },
    time: { type: 'string', default: '4000' },
    iterations: { type: 'string', default: '5' },
    json: { type: 'boolean', default: false },
  },
});
const ROWS = Number(args.rows);
const log = (s: string): void => {
  if (!args.json) process.stdout.write(`${s}\n`);
};
const load = (): string => loadavg().map((x) => x.toFixed(2)).join(' ');

/** Bronze rows of Segment HTTP traffic: ingest batches of `batchRows` (one log record each) + shard + log_offset. */
function bronzeBatches(rows: number, batchRows = 2048): RecordBatch[] {
  const gen = new TrafficGenerator({
    seed: 13,
    users: 20_000,
    startTime: Date.UTC(2026, 11, 2),
    stepMs: 20,
    duplicateRate: 0.02,
    jitterMs: 120_000,
    outOfOrderRate: 0.1,
  });
  const builder = new IngestBatchBuilder(batchRows);
  const batches: RecordBatch[] = [];
  let schema: Schema | undefined;
  let offset = 1_000;
  for (let made = 0; made < rows; ) {
    const e = gen.next();
    if (e.kind === 'invalid') continue;
    const m = e.message;
    const c = m.context;
    builder.push({
      event_id: m.messageId,
      user_id: e.userId,
      anonymous_id: m.anonymousId ?? null,
      event_type: e.eventType,
      event_time: e.eventTime,
      received_at: e.eventTime + 500,
      device_type: c.device.type,
      os: c.os.name,
      app_version: c.app.version,
      country: c.location.country,
      source: 'segment',
      properties: JSON.stringify(m.type === 'screen' ? { name: m.name, ...m.properties } : m.properties),
      raw: messageJson(e),
    });
    made++;
    if (builder.full || made === rows) {
      const batch = builder.build();
      builder.reset();
      // As ShardRuntime.addBronze: the record's columns + shard + log_offset (one offset per record).
      const n = batch.numRows;
      schema ??= new Schema([...batch.schema.fields, new Field('shard', new Int32(), false), new Field('log_offset', new Int64(), false)]);
      const shardCol = makeData({ type: new Int32(), length: n, nullCount: 0, data: new Int32Array(n).fill(3) });
      const offsetCol = makeData({ type: new Int64(), length: n, nullCount: 0, data: new BigInt64Array(n).fill(BigInt(offset++)) });
      batches.push(new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: n, nullCount: 0, children: [...batch.data.children, shardCol, offsetCol] })));
    }
  }
  return batches;
}

/**
 * Per-column codecs without touching storage/parquet.ts: `encodeParquet` builds its writer
 * properties with `pq.WriterPropertiesBuilder`; this wraps the builder's `build()` so the columns
 * in `columnCodecs` get their codec set last (over the per-type choices), and everything else is
 * exactly what `encodeParquet` writes. The DuckDB check reads each column's codec back from
 * `parquet_metadata` to prove the override took.
 */
let columnCodecs: Record<string, pq.Compression> = {};
const build = pq.WriterPropertiesBuilder.prototype.build;
pq.WriterPropertiesBuilder.prototype.build = function (this: pq.WriterPropertiesBuilder): pq.WriterProperties {
  let b = this;
  for (const [col, codec] of Object.entries(columnCodecs)) b = b.setColumnCompression(col, codec);
  return build.call(b);
};

type Variant = { name: string; options: ParquetOptions; columns?: Record<string, pq.Compression> };
const { ZSTD, LZ4_RAW, SNAPPY, UNCOMPRESSED } = pq.Compression;
const VARIANTS: Variant[] = [
  { name: 'current', options: {} },
  { name: 'raw=lz4_raw', options: {}, columns: { raw: LZ4_RAW } },
  { name: 'raw=snappy', options: {}, columns: { raw: SNAPPY } },
  { name: 'raw=none', options: {}, columns: { raw: UNCOMPRESSED } },
  { name: 'raw+props=lz4_raw', options: {}, columns: { raw: LZ4_RAW, properties: LZ4_RAW } },
  { name: 'raw+props=snappy', options: {}, columns: { raw: SNAPPY, properties: SNAPPY } },
  { name: 'file=snappy', options: { compression: 'snappy' } },
  { name: 'file=none', options: { compression: 'none' } },
];
const fileCodec: Record<string, pq.Compression> = { zstd: ZSTD, snappy: SNAPPY, none: UNCOMPRESSED };
/** The codec a variant should give a (string) column. */
const expectedCodec = (v: Variant, col: string): string => pq.Compression[v.columns?.[col] ?? fileCodec[v.options.compression ?? 'zstd']!]!;
const encode = (table: Table, v: Variant): Uint8Array => {
  columnCodecs = v.columns ?? {};
  try {
    return encodeParquet(table, v.options);
  } finally {
    columnCodecs = {};
  }
};

const md5 = (values: Iterable<string | null>): string => {
  const h = createHash('md5');
  let first = true;
  for (const v of values) {
    if (v === null) continue; // string_agg skips nulls too
    if (!first) h.update('\x1e');
    h.update(v);
    first = false;
  }
  return h.digest('hex');
};

const dir = mkdtempSync(join(tmpdir(), 'sluice-bench-bronze-'));
try {
  const loadBefore = load();
  log(`generating ${ROWS} bronze rows … (load average ${loadBefore})`);
  const batches = bronzeBatches(ROWS);
  const table = new Table(batches);
  const rawCol = table.getChild('raw')!;
  const propsCol = table.getChild('properties')!;
  let rawBytes = 0;
  for (const v of rawCol) rawBytes += Buffer.byteLength(v as string);
  const expect = { rows: table.numRows, raw: md5(rawCol as Iterable<string | null>), props: md5(propsCol as Iterable<string | null>) };
  const arrowPerRow = batches.reduce((n, b) => n + arrowBytes(b.data), 0) / ROWS;
  log(`raw ${(rawBytes / ROWS).toFixed(0)} B/row, Arrow ${arrowPerRow.toFixed(0)} B/row, ${batches.length} batches`);

  // Encode each variant once (warms the wasm heap to full size) and keep the bytes for DuckDB.
  const sizes = new Map<string, number>();
  for (const v of VARIANTS) {
    const bytes = encode(table, v);
    sizes.set(v.name, bytes.byteLength);
    writeFileSync(join(dir, `${v.name}.parquet`), bytes);
  }

  const bench = new Bench({ time: Number(args.time), iterations: Number(args.iterations), warmupIterations: 1 });
  for (const v of VARIANTS) bench.add(v.name, () => void encode(table, v));
  await bench.run();
  const usPerRow = new Map<string, { p50: number; min: number; max: number; n: number }>();
  for (const t of bench.tasks) {
    const r = t.result;
    if (r.state !== 'completed') throw new Error(`${t.name}: ${r.state}`);
    usPerRow.set(t.name, { p50: (r.latency.p50! * 1000) / ROWS, min: (r.latency.min * 1000) / ROWS, max: (r.latency.max * 1000) / ROWS, n: r.latency.samplesCount });
  }
  const loadAfter = load();

  // DuckDB reads every file back: same row count, same raw/properties values in file order.
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  const duck = new Map<string, string>();
  for (const v of VARIANTS) {
    const f = join(dir, `${v.name}.parquet`);
    try {
      const r = await conn.runAndReadAll(
        `SELECT count(*)::BIGINT, md5(string_agg(raw, chr(30) ORDER BY file_row_number)), md5(string_agg(properties, chr(30) ORDER BY file_row_number))
         FROM read_parquet('${f}', file_row_number = true)`,
      );
      const [n, raw, props] = r.getRows()[0]!;
      const codecs = await conn.runAndReadAll(`SELECT DISTINCT path_in_schema, compression FROM parquet_metadata('${f}') WHERE path_in_schema IN ('raw', 'properties')`);
      const got = Object.fromEntries(codecs.getRows().map(([col, c]) => [String(col), String(c)]));
      const codecOk = got.raw === expectedCodec(v, 'raw') && got.properties === expectedCodec(v, 'properties');
      const ok = Number(n) === expect.rows && raw === expect.raw && props === expect.props && codecOk;
      duck.set(v.name, ok ? `ok (raw ${got.raw})` : `MISMATCH rows=${String(n)} raw=${raw === expect.raw} props=${props === expect.props} codecs=${JSON.stringify(got)}`);
    } catch (e) {
      duck.set(v.name, `ERROR ${(e as Error).message.slice(0, 100)}`);
    }
  }
  conn.closeSync();

  const base = usPerRow.get('current')!.p50;
  const baseBytes = sizes.get('current')!;
  const rows = VARIANTS.map((v) => {
    const t = usPerRow.get(v.name)!;
    const bytes = sizes.get(v.name)!;
    return {
      variant: v.name,
      usPerRow: +t.p50.toFixed(2),
      usPerRowMin: +t.min.toFixed(2),
      usPerRowMax: +t.max.toFixed(2),
      samples: t.n,
      timeRatio: +(t.p50 / base).toFixed(3),
      bytes,
      bytesPerRow: +(bytes / ROWS).toFixed(1),
      bytesRatio: +(bytes / baseBytes).toFixed(3),
      duckdb: duck.get(v.name)!,
    };
  });
  const result = { rows: ROWS, rawBytesPerRow: +(rawBytes / ROWS).toFixed(1), arrowBytesPerRow: +arrowPerRow.toFixed(1), node: process.version, loadBefore, loadAfter, variants: rows };
  if (args.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else {
    log(`load average before ${loadBefore}, after ${loadAfter}`);
    log('| variant | µs/row p50 (min–max, n) | × current | bytes | B/row | × current | DuckDB |');
    log('|---|--:|--:|--:|--:|--:|---|');
    for (const r of rows) {
      log(`| ${r.variant} | ${r.usPerRow} (${r.usPerRowMin}–${r.usPerRowMax}, ${r.samples}) | ${r.timeRatio} | ${r.bytes} | ${r.bytesPerRow} | ${r.bytesRatio} | ${r.duckdb} |`);
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
