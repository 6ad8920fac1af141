/**
 * Engine kernel benchmark (tinybench; not part of `npm test`):
 *
 *   node --import tsx bench/engine-kernels.bench.ts [--rows 200000] [--users 20000] [--time 2000] [--rounds 3] [--json]
 *
 * On one core, over the same pre-built ingest batches (bench/engine-data.ts: seeded loadgen
 * traffic, 2 % duplicates, 10 % out of order), measures rows/s of
 *
 *   dedup       fingerprint event ids + hot table (kernels/fingerprint, kernels/dedup-table)
 *   sessionize  user fingerprints + session assignment (kernels/session-table)
 *   aggregate   dimension combos + hourly/daily accumulators with distinct users (kernels/window-aggregates)
 *   chain       ShardPipeline: dedup → watermark → sessionize → aggregate + silver batch, then the
 *               final watermark advance (sessions closed, 8 grouping sets rolled up) and the
 *               checkpoint (state snapshot + dedup ids written to LMDB in one transaction)
 *
 * against DuckDB (1 thread, in-memory table of the same rows) doing the same operation in the
 * same run: dedup = `DISTINCT ON (event_id)`, sessionize = `LAG` + 30-min gap + running sum,
 * aggregate = hourly `GROUP BY GROUPING SETS` of the 8 dimension sets with COUNT DISTINCT users
 * and FILTERed metric counts. Every figure is the median over `--rounds` alternating rounds; the
 * machine is shared and noisy, so read ratios (same run) rather than absolute rates.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs } from './args.js';
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import { open as openLmdb, type RootDatabase } from 'lmdb';
import { Bench } from 'tinybench';
import { ShardPipeline } from '../engine/operators/shard-pipeline.js';
import { encodeParquet } from '../storage/parquet.js';
import { engineBenchInput } from './engine-data.js';
import { kernelCases } from './engine-kernel-cases.js';

const { values: args } = benchArgs(import.meta.url, {
  options: {
    rows: { type: 'string', default: '200000' },
    users: { type: 'string', default: '20000' },
    time: { type: 'string', default: '2000' },
    rounds: { type: 'string', default: '3' },
    json: { type: 'boolean', default: false },
  },
});
const ROWS = Number(args.rows);
const TIME = Number(args.time);
const ROUNDS = Number(args.rounds);
const log = (s: string): void => {
  if (!args.json) process.stdout.write(`${s}\n`);
};
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const dir = mkdtempSync(join(tmpdir(), 'sluice-bench-engine-'));
try {
  log(`generating ${ROWS} events of ${args.users} users …`);
  const input = engineBenchInput(ROWS, { users: Number(args.users) });
  const last = input.batches[input.batches.length - 1]!;
  const endTime = Number(last.getChild('event_time')!.get(last.numRows - 1)) + 86_400_000 * 2;

  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  await conn.run('SET threads = 1');
  await conn.run("SET TimeZone = 'UTC'");
  const src = join(dir, 'events.parquet');
  writeFileSync(src, encodeParquet(input.batches, { compression: 'none' }));
  await conn.run(`CREATE TABLE ev AS SELECT * EXCLUDE (raw) FROM read_parquet('${src}')`);

  const duck = (sql: string) => async (): Promise<void> => {
    await conn.run(`CREATE OR REPLACE TEMP TABLE out AS ${sql}`);
  };
  const DUCK = {
    dedup: duck('SELECT DISTINCT ON (event_id) * FROM ev'),
    sessionize: duck(`SELECT user_id, event_time, SUM(new) OVER (PARTITION BY user_id ORDER BY event_time) AS session_no FROM (
        SELECT user_id, event_time,
               CASE WHEN event_time - LAG(event_time) OVER (PARTITION BY user_id ORDER BY event_time) < INTERVAL 30 MINUTE THEN 0 ELSE 1 END AS new
        FROM ev)`),
    aggregate: duck(`SELECT date_trunc('hour', event_time) AS h, device_type, app_version, country,
        count(*) AS events, count(DISTINCT user_id) AS active_users,
        count(*) FILTER (WHERE event_type IN ('install', 'Application Installed')) AS installs,
        count(*) FILTER (WHERE event_type IN ('screen', 'screen_view')) AS screen_views,
        count(*) FILTER (WHERE event_type IN ('notification_view', 'Push Notification Received')) AS notification_views,
        count(*) FILTER (WHERE event_type IN ('notification_open', 'Push Notification Tapped')) AS notification_opens
      FROM ev GROUP BY GROUPING SETS ((h, device_type, app_version, country), (h, device_type, app_version), (h, device_type, country),
        (h, app_version, country), (h, device_type), (h, app_version), (h, country), (h))`),
  } as const;

  let env: RootDatabase | undefined;
  let pipeline: ShardPipeline | undefined;
  let envNo = 0;
  const freshPipeline = (): void => {
    env = openLmdb({ path: join(dir, `chain-${envNo++}.mdb`), maxDbs: 4096, compression: false });
    pipeline = new ShardPipeline({ shard: 0, db: env, allowedLatenessMs: 7_200_000, sessionGapMs: 1_800_000, dedupTtlMs: 86_400_000 });
  };
  const closePipeline = (): void => {
    env?.close();
    env = undefined;
  };
  const chain = (): void => {
    const p = pipeline!;
    for (const b of input.batches) p.processBatch(b);
    p.advanceWatermark(endTime);
    const state = p.checkpoint();
    env!.transactionSync(() => {
      p.onCheckpointTxn();
      void env!.putSync('state', state);
    });
    p.afterCheckpoint();
  };

  const cases = kernelCases(input.batches);
  const samples = new Map<string, number[]>();
  const record = (name: string, rowsPerSec: number): void => {
    if (!samples.has(name)) samples.set(name, []);
    samples.get(name)!.push(rowsPerSec);
  };
  for (let round = 0; round < ROUNDS; round++) {
    log(`round ${round + 1}/${ROUNDS} …`);
    const bench = new Bench({ time: TIME, iterations: 3, warmupIterations: 1 });
    for (const c of cases) bench.add(`sluice ${c.name}`, c.run, { beforeEach: c.reset });
    bench.add('sluice chain', chain, { beforeEach: freshPipeline, afterEach: closePipeline });
    for (const [name, fn] of Object.entries(DUCK)) bench.add(`duckdb ${name}`, fn);
    await bench.run();
    for (const t of bench.tasks) {
      const r = t.result;
      if (r.state !== 'completed') throw new Error(`${t.name}: ${r.state}`);
      record(t.name, ROWS / (r.latency.p50 / 1000));
    }
  }

  const rate = (name: string): number => median(samples.get(name)!);
  const rows = cases.map((c) => c.name).map((k) => ({
    kernel: k,
    sluice: rate(`sluice ${k}`),
    duckdb: rate(`duckdb ${k}`),
    ratio: rate(`sluice ${k}`) / rate(`duckdb ${k}`),
  }));
  const chainRate = rate('sluice chain');
  const result = { rows: ROWS, users: Number(args.users), rounds: ROUNDS, node: process.version, kernels: rows, chainEventsPerSec: chainRate };
  if (args.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else {
    const m = (x: number): string => `${(x / 1e6).toFixed(2)} M/s`;
    log('\nkernel       sluice       duckdb(1t)   sluice/duckdb');
    for (const r of rows) log(`${r.kernel.padEnd(12)} ${m(r.sluice).padEnd(12)} ${m(r.duckdb).padEnd(12)} ${r.ratio.toFixed(2)}×`);
    log(`chain        ${m(chainRate)}   (dedup → watermark → sessionize → aggregate → silver batch, + final emit and checkpoint)`);
  }
  conn.closeSync();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
