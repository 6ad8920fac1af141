/**
 * Storage benchmark (not part of `npm test`):
 *
 *   node --import tsx bench/storage-parquet.bench.ts [--rows 500000] [--runs 3] [--no-s3] [--s3-mb 64] [--json]
 *
 * 1. Parquet encode on one core: Sluice's encodeParquet (ZSTD; Snappy for reference) on realistic
 *    silver rows (test/storage/silver-rows.ts, seeded) — rows/s, input Arrow MB/s, output MB/s,
 *    bytes/event — against DuckDB 1 thread `COPY … TO (FORMAT parquet, COMPRESSION zstd)` of the
 *    same rows in the same run (rows loaded into a DuckDB table first; only the COPY is timed).
 * 2. S3 upload throughput to a local s3rver (child process on 127.0.0.1) for one object of
 *    `--s3-mb` MB: single PutObject and multipart (16 MiB parts, 4 in flight).
 *
 * Every figure is the median of `--runs` runs. The machine is shared and noisy: read ±30 %.
 */
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs } from './args.js';
import { DuckDBInstance } from '@duckdb/node-api';
import { Table } from 'apache-arrow';
import { arrowBytes } from '../storage/partition-buffer.js';
import { encodeParquet, type ParquetOptions } from '../storage/parquet.js';
import { S3ObjectStore } from '../storage/s3-store.js';
import { startS3rver } from '../test/helpers/s3rver.js';
import { silverRows } from '../test/storage/silver-rows.js';

const { values: args } = benchArgs(import.meta.url, {
  options: {
    rows: { type: 'string', default: '500000' },
    runs: { type: 'string', default: '3' },
    'no-s3': { type: 'boolean', default: false },
    's3-mb': { type: 'string', default: '64' },
    json: { type: 'boolean', default: false },
  },
});
const ROWS = Number(args.rows);
const RUNS = Number(args.runs);
const MB = 1e6;

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const log = (s: string): void => {
  if (!args.json) process.stdout.write(`${s}\n`);
};

const dir = mkdtempSync(join(tmpdir(), 'sluice-bench-storage-'));
const result: Record<string, unknown> = { rows: ROWS, runs: RUNS, node: process.version };
try {
  log(`generating ${ROWS} silver rows …`);
  const batches = silverRows({ rows: ROWS, seed: 42, batchRows: 10_000 });
  const table = new Table(batches);
  const inputBytes = batches.reduce((n, b) => n + arrowBytes(b.data), 0);
  result.arrowBytesPerRow = +(inputBytes / ROWS).toFixed(1);

  // --- Sluice encode vs DuckDB COPY, interleaved so both see the same machine load ----------------
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  await conn.run('SET threads = 1');
  await conn.run("SET TimeZone = 'UTC'");
  // Load the same rows into DuckDB (from an uncompressed Sluice file; not timed).
  const src = join(dir, 'src.parquet');
  writeFileSync(src, encodeParquet(table, { compression: 'none' }));
  await conn.run(`CREATE TABLE t AS SELECT * FROM read_parquet('${src}')`);
  const variants: Array<[string, ParquetOptions]> = [
    ['sluice_zstd', { compression: 'zstd' }],
    ['sluice_snappy', { compression: 'snappy' }],
  ];
  const times: Record<string, number[]> = { duckdb_zstd: [] };
  const sizes: Record<string, number> = {};
  for (const [name, o] of variants) {
    times[name] = [];
    encodeParquet(table, o); // warm-up at full size: the wasm heap grows once, as in a running engine
  }
  await conn.run(`COPY t TO '${join(dir, 'warm.parquet')}' (FORMAT parquet, COMPRESSION zstd)`);
  for (let r = 0; r < RUNS; r++) {
    for (const [name, o] of variants) {
      const t0 = performance.now();
      const bytes = encodeParquet(table, o);
      times[name]!.push(performance.now() - t0);
      sizes[name] = bytes.byteLength;
      if (r === 0 && name === 'sluice_zstd') writeFileSync(join(dir, 'sluice.parquet'), bytes);
    }
    const out = join(dir, `duck-${r}.parquet`);
    const t0 = performance.now();
    await conn.run(`COPY t TO '${out}' (FORMAT parquet, COMPRESSION zstd)`);
    times.duckdb_zstd!.push(performance.now() - t0);
    sizes.duckdb_zstd = statSync(out).size;
  }
  const [check] = (await conn.runAndReadAll(`SELECT count(*)::INT AS n FROM read_parquet('${join(dir, 'sluice.parquet')}')`)).getRowObjectsJS() as Array<{ n: number }>;
  if (check!.n !== ROWS) throw new Error(`DuckDB read ${check!.n} rows from Sluice's file, expected ${ROWS}`);
  conn.closeSync();
  db.closeSync();
  for (const name of Object.keys(times)) {
    const m = median(times[name]!) / 1000;
    const size = sizes[name]!;
    const out = { ms: Math.round(m * 1000), rowsPerS: Math.round(ROWS / m), inMBps: +(inputBytes / MB / m).toFixed(1), outMBps: +(size / MB / m).toFixed(1), bytesPerEvent: +(size / ROWS).toFixed(1) };
    result[name] = out;
    const inCol = name.startsWith('sluice') ? `${String(out.inMBps).padStart(6)} MB/s in (Arrow)` : '1 thread'.padEnd(21);
    log(`${name.padEnd(14)} ${String(out.rowsPerS).padStart(8)} rows/s  ${inCol}  ${String(out.outMBps).padStart(5)} MB/s out  ${out.bytesPerEvent} B/event  (median ${out.ms} ms of ${RUNS})`);
  }
  const s = result.sluice_zstd as { rowsPerS: number; bytesPerEvent: number };
  const d = result.duckdb_zstd as { rowsPerS: number; bytesPerEvent: number };
  result.vsDuckdb = { rate: +(s.rowsPerS / d.rowsPerS).toFixed(2), size: +(s.bytesPerEvent / d.bytesPerEvent).toFixed(2) };
  log(`sluice/duckdb (zstd): rate ${(result.vsDuckdb as { rate: number }).rate}× (goal ≥ 1.0), size ${(result.vsDuckdb as { size: number }).size}× (goal ≤ 1.1)`);

  // --- S3 upload to s3rver ---------------------------------------------------------------------
  if (!args['no-s3']) {
    const server = await startS3rver('bench');
    try {
      const size = Number(args['s3-mb']) * MB;
      const body = new Uint8Array(size);
      for (let i = 0; i < size; i += 4096) body[i] = (i / 4096) & 0xff;
      const upload = async (name: string, store: S3ObjectStore): Promise<number> => {
        const ms: number[] = [];
        for (let r = 0; r < RUNS; r++) {
          const t0 = performance.now();
          await store.put(`${name}-${r}.bin`, body);
          ms.push(performance.now() - t0);
          await store.delete(`${name}-${r}.bin`);
        }
        const mbps = +(size / MB / (median(ms) / 1000)).toFixed(1);
        log(`s3rver ${name.padEnd(10)} ${mbps} MB/s (${Number(args['s3-mb'])} MB, median ${Math.round(median(ms))} ms)`);
        await store.close();
        return mbps;
      };
      result.s3_put_MBps = await upload('put', new S3ObjectStore({ bucket: 'bench', prefix: 'p', endpoint: server.endpoint, multipartThreshold: size + 1 }));
      result.s3_multipart_MBps = await upload('multipart', new S3ObjectStore({ bucket: 'bench', prefix: 'p', endpoint: server.endpoint }));
    } finally {
      await server.stop();
    }
  }
  if (args.json) process.stdout.write(`${JSON.stringify(result)}\n`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
