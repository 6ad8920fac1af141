/**
 * The load generator's driver: W worker threads (each its own share of the users and its own
 * connections) send generated traffic over one protocol, open-loop at `rate` events/s or
 * closed-loop as fast as acknowledgements come back, bounded by duration and/or event count.
 *
 * Latency is recorded in an HDR histogram from each batch's *intended* send time (open loop), so
 * a stalled server shows up as latency instead of silently slowing the sender (no coordinated
 * omission). In closed-loop mode the intended time is the actual send time.
 */
import { Worker } from 'node:worker_threads';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as hdr from 'hdr-histogram-js';
import { DuckDBInstance } from '@duckdb/node-api';
import { userError } from '../common/errors.js';
import { runPartition, type PartitionResult } from './sender.js';

export type LoadgenProtocol = 'http' | 'ndjson' | 'arrow-ws';

export interface LoadgenOptions {
  url: string;
  writeKey: string;
  protocol: LoadgenProtocol;
  /** Events/s across all workers; undefined = closed loop (max). */
  rate?: number;
  durationMs?: number;
  /** Stop after this many events (across workers). */
  events?: number;
  users: number;
  seed: number;
  workers: number;
  /** Concurrent requests (or WebSocket connections) per worker. */
  connections: number;
  batchSize: number;
  duplicateRate: number;
  jitterMs: number;
  lateRate: number;
  tooLateRate: number;
  invalidRate: number;
  clockSkewMs: number;
  /** Event time of the first event; default now. */
  startTime?: number;
  /** Simulated ms between events; default real time at the target rate (1000 / rate), or 1 ms. */
  stepMs?: number;
  /** Write the ground truth as Parquet here (and sessions next to it). */
  truth?: string;
  /** Progress callback about once a second. */
  onProgress?: (p: { elapsedS: number; rate: number; acked: number; rejected: number; p50: number; p99: number }) => void;
}

export interface LoadgenSummary {
  protocol: LoadgenProtocol;
  sent: number;
  acked: number;
  rejected: number;
  retried: number;
  failed: number;
  duplicatesSent: number;
  invalidSent: number;
  bytesSent: number;
  elapsedS: number;
  eventsPerSecond: number;
  mbPerSecond: number;
  latencyMs: { p50: number; p90: number; p99: number; p999: number; max: number };
  truthRows?: number;
}

export function validateLoadgenOptions(o: Partial<LoadgenOptions>): LoadgenOptions {
  const full: LoadgenOptions = {
    url: 'http://127.0.0.1:8080',
    writeKey: '',
    protocol: 'http',
    users: 10_000,
    seed: 1,
    workers: 1,
    connections: 8,
    batchSize: 50,
    duplicateRate: 0,
    jitterMs: 0,
    lateRate: 0,
    tooLateRate: 0,
    invalidRate: 0,
    clockSkewMs: 0,
    ...Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)),
  };
  if (!['http', 'ndjson', 'arrow-ws'].includes(full.protocol)) throw userError('invalid_option', `--protocol must be http, ndjson or arrow-ws, got ${full.protocol}`);
  if (full.writeKey === '') throw userError('invalid_option', '--write-key is required (sluice serve prints it)');
  if (full.durationMs === undefined && full.events === undefined) throw userError('invalid_option', 'give --duration or --events so the run is bounded');
  for (const k of ['users', 'workers', 'connections', 'batchSize'] as const) {
    if (!Number.isInteger(full[k]) || full[k] <= 0) throw userError('invalid_option', `${k} must be a positive integer, got ${full[k]}`);
  }
  for (const k of ['duplicateRate', 'lateRate', 'tooLateRate', 'invalidRate'] as const) {
    if (!(full[k] >= 0 && full[k] < 1)) throw userError('invalid_option', `${k} must be in [0, 1), got ${full[k]}`);
  }
  if (full.rate !== undefined && !(full.rate > 0)) throw userError('invalid_option', `--rate must be > 0, got ${full.rate}`);
  return full;
}

export async function runLoadgen(input: Partial<LoadgenOptions>): Promise<LoadgenSummary> {
  const o = validateLoadgenOptions(input);
  const startTime = o.startTime ?? Date.now();
  const stepMs = o.stepMs ?? (o.rate ? 1000 / o.rate : 1);
  const shared = { ...o, startTime, stepMs, onProgress: undefined };
  const started = performance.now();
  const progress = new Map<number, { acked: number; rejected: number; hist: string }>();
  let timer: NodeJS.Timeout | undefined;
  if (o.onProgress) {
    timer = setInterval(() => {
      let acked = 0;
      let rejected = 0;
      const h = hdr.build();
      for (const p of progress.values()) {
        acked += p.acked;
        rejected += p.rejected;
        if (p.hist) h.add(hdr.decodeFromCompressedBase64(p.hist));
      }
      const elapsedS = (performance.now() - started) / 1000;
      o.onProgress!({ elapsedS, rate: acked / elapsedS, acked, rejected, p50: h.getValueAtPercentile(50) / 1000, p99: h.getValueAtPercentile(99) / 1000 });
    }, 1000);
  }
  const results: PartitionResult[] =
    o.workers === 1
      ? [await runPartition(shared, 0, 1, (p) => progress.set(0, p))]
      : await Promise.all(
          Array.from({ length: o.workers }, (_, k) => {
            const here = import.meta.url;
            const ts = here.endsWith('.ts');
            const entry = new URL(ts ? './worker.ts' : './worker.js', here);
            // From TypeScript sources the loader hooks (tsx) must be in place before the entry loads,
            // so the worker starts from a one-line script that imports it.
            const w = ts
              ? new Worker(`import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((tsx) => { tsx.register(); return import(${JSON.stringify(entry.href)}); })`, {
                  eval: true,
                  workerData: { options: shared, partition: k, partitions: o.workers },
                })
              : new Worker(entry, { workerData: { options: shared, partition: k, partitions: o.workers } });
            return new Promise<PartitionResult>((resolve, reject) => {
              w.on('message', (m: { kind: 'progress' | 'done'; value: unknown }) => {
                if (m.kind === 'progress') progress.set(k, m.value as { acked: number; rejected: number; hist: string });
                else resolve(m.value as PartitionResult);
              });
              w.once('error', reject);
              w.once('exit', (code) => code !== 0 && reject(new Error(`loadgen worker ${k} exited with ${code}`)));
            });
          }),
        );
  if (timer) clearInterval(timer);
  const elapsedS = (performance.now() - started) / 1000;
  const hist = hdr.build();
  for (const r of results) hist.add(hdr.decodeFromCompressedBase64(r.histogram));
  const sum = (k: keyof Omit<PartitionResult, 'histogram' | 'truth'>): number => results.reduce((n, r) => n + (r[k] as number), 0);
  const summary: LoadgenSummary = {
    protocol: o.protocol,
    sent: sum('sent'),
    acked: sum('acked'),
    rejected: sum('rejected'),
    retried: sum('retried'),
    failed: sum('failed'),
    duplicatesSent: sum('duplicatesSent'),
    invalidSent: sum('invalidSent'),
    bytesSent: sum('bytesSent'),
    elapsedS,
    eventsPerSecond: sum('acked') / elapsedS,
    mbPerSecond: sum('bytesSent') / elapsedS / 1e6,
    latencyMs: {
      p50: hist.getValueAtPercentile(50) / 1000,
      p90: hist.getValueAtPercentile(90) / 1000,
      p99: hist.getValueAtPercentile(99) / 1000,
      p999: hist.getValueAtPercentile(99.9) / 1000,
      max: hist.maxValue / 1000,
    },
  };
  if (o.truth) summary.truthRows = await writeTruth(o.truth, results.flatMap((r) => r.truth));
  return summary;
}

/** Writes the ground truth (every valid event once) as Parquet via DuckDB, plus `<file>.sessions.parquet`. */
async function writeTruth(file: string, rows: PartitionResult['truth']): Promise<number> {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-truth-'));
  try {
    const ndjson = join(dir, 'truth.ndjson');
    await writeFile(ndjson, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
    const db = await DuckDBInstance.create(':memory:');
    const conn = await db.connect();
    const q = (p: string): string => `'${p.replaceAll("'", "''")}'`;
    const src = `read_json(${q(ndjson)}, columns = {event_id: 'VARCHAR', user_id: 'VARCHAR', event_type: 'VARCHAR', event_time: 'BIGINT', device_type: 'VARCHAR', app_version: 'VARCHAR', country: 'VARCHAR', session_no: 'INTEGER'})`;
    await conn.run(`COPY (SELECT * REPLACE (make_timestamp(event_time * 1000) AS event_time) FROM ${src} ORDER BY event_time, event_id) TO ${q(file)} (FORMAT parquet)`);
    await conn.run(
      `COPY (SELECT user_id, session_no, min(make_timestamp(event_time * 1000)) AS session_start, max(make_timestamp(event_time * 1000)) AS session_end, count(*) AS events
             FROM ${src} GROUP BY ALL ORDER BY user_id, session_no) TO ${q(file.replace(/\.parquet$/, '') + '.sessions.parquet')} (FORMAT parquet)`,
    );
    conn.closeSync();
    db.closeSync();
    return rows.length;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
