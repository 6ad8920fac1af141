/**
 * Issue 10's scale-out benchmark: events/s with 1 vs 2 engine processes and 1 vs 2 ingest
 * processes on JetStream R3, publish → PubAck latency, and the overhead against the local log at
 * the same client.
 *
 *   npm run build && node --import tsx bench/cluster-scale.ts [--seconds 30] [--runs 3]
 *     [--protocol arrow-ws|http] [--configs a,b,c,d] [--shards 4] [--out FILE.json]
 *
 * Configurations (each on fresh directories; b–d on a fresh 3-node nats-server cluster on
 * loopback, stream R3):
 *   a  local log: `sluice serve` (default: ingest process + engine process)
 *   b  1 ingest node (`serve --role ingest --log nats://…`) + 1 engine node (`sluice engine`)
 *   c  1 ingest node + 2 engine nodes (2 shards each)
 *   d  2 ingest nodes + 1 engine node (the client's connections split over both ingest nodes)
 * Run order interleaves them (a,b,c,d,a,b,c,d,…); figures are medians over runs and ratios
 * against `a` of the same run.
 *
 * The client is always the same: two loadgen runs in this process (one worker thread each,
 * 4 connections each, closed loop: as fast as acks return) for --seconds; in `d` each targets one
 * ingest node, otherwise both target the one ingest URL. Then it waits (bounded) until the engines
 * have committed every acknowledged event (DuckDB over silver, once a second), stops every
 * process and checks silver with DuckDB: rows == distinct event ids == acknowledged events (it
 * exits non-zero otherwise). CPU per process is utime+stime from /proc over the load window.
 * Ack p50/p99 are the loadgen's (after a 2 s warm-up), of the slower of its two runs;
 * PubAck p50/p99 are interpolated in the ingest nodes' `sluice_jetstream_publish_seconds`
 * buckets (one sample per shard record published, not per event).
 *
 * Everything runs on the machine's cores together (client, Sluice processes, nats-servers).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs } from './args.js';
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import { TABLES } from '../common/lake-layout.js';
import { runLoadgen, type LoadgenSummary } from '../loadgen/run.js';
import type { LoadgenProtocol } from '../loadgen/options.js';
import { startNatsCluster, type NatsCluster } from '../test/helpers/nats-cluster.js';
import { childrenOf } from './e2e-server.js';
import { startServe, startSluiceChild, type ServeChild } from './serve-child.js';

const { values: flags } = benchArgs(import.meta.url, {
  options: {
    seconds: { type: 'string', default: '30' },
    runs: { type: 'string', default: '3' },
    protocol: { type: 'string', default: 'arrow-ws' },
    configs: { type: 'string', default: 'a,b,c,d' },
    shards: { type: 'string', default: '4' },
    'flush-interval': { type: 'string', default: '2s' },
    out: { type: 'string' },
  },
});
const SECONDS = Number(flags.seconds);
const RUNS = Number(flags.runs);
const PROTOCOL = flags.protocol as LoadgenProtocol;
const SHARDS = flags.shards!;
const FLUSH = flags['flush-interval']!;
const CONFIGS = flags.configs!.split(',') as ConfigName[];
const KEY = 'wk_cluster_scale';
/** Bound of the wait for the engines to commit everything acknowledged. */
const DRAIN_BOUND_MS = 150_000;
const START_BOUND_MS = 120_000;
const TICK_HZ = 100; // USER_HZ on Linux

type ConfigName = 'a' | 'b' | 'c' | 'd';
const DESCRIPTION: Record<ConfigName, string> = {
  a: 'local log: sluice serve (ingest + engine process)',
  b: 'JetStream R3: 1 ingest + 1 engine node',
  c: 'JetStream R3: 1 ingest + 2 engine nodes',
  d: 'JetStream R3: 2 ingest + 1 engine node',
};

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A Sluice process this bench started: where it answers and how to stop it. */
interface Proc {
  readonly role: string;
  readonly url: string;
  readonly pid: number;
  stop(timeoutMs: number): Promise<number>;
}

function cpuTicks(pid: number): number {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]); // utime, stime
  } catch {
    return NaN;
  }
}

const commOf = (pid: number): string => {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
};

const asProc = (role: string, s: ServeChild): Proc => ({ role, url: s.url, pid: s.pid, stop: (ms) => s.stop(ms) });

async function scrape(url: string): Promise<string> {
  try {
    return await (await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(20_000) })).text();
  } catch {
    return '';
  }
}

/** Cumulative histogram buckets `le → count` of `name` (summed over label sets). */
function buckets(text: string, name: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const m of text.matchAll(new RegExp(`^${name}_bucket\\{(?:[^}]*,)?le="([^"]+)"[^}]*\\} (\\S+)$`, 'gm'))) {
    const le = m[1] === '+Inf' ? Infinity : Number(m[1]);
    out.set(le, (out.get(le) ?? 0) + Number(m[2]));
  }
  return out;
}

/** Quantile (ms) of merged cumulative buckets, linear within the bucket (Prometheus' histogram_quantile). */
function histogramQuantileMs(b: Map<number, number>, q: number): number {
  const sorted = [...b].sort((x, y) => x[0] - y[0]);
  const total = sorted.at(-1)?.[1] ?? 0;
  if (total === 0) return NaN;
  const rank = q * total;
  let prevLe = 0;
  let prevN = 0;
  for (const [le, n] of sorted) {
    if (n >= rank) {
      if (le === Infinity) return prevLe * 1000;
      return (prevLe + ((le - prevLe) * (rank - prevN)) / Math.max(1, n - prevN)) * 1000;
    }
    prevLe = le;
    prevN = n;
  }
  return NaN;
}

function mergeBuckets(texts: string[], name: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const t of texts) for (const [le, n] of buckets(t, name)) out.set(le, (out.get(le) ?? 0) + n);
  return out;
}

/** Silver's rows and distinct event ids, read by DuckDB straight from the lake's Parquet files. */
async function silverCounts(conn: DuckDBConnection, lake: string): Promise<{ rows: number; distinct: number }> {
  const row = (await conn.runAndReadAll(`SELECT count(*) AS rows, count(DISTINCT event_id) AS ids FROM read_parquet('${join(lake, TABLES.events.prefix)}/**/*.parquet', hive_partitioning = false, union_by_name = true)`)).getRowObjectsJS()[0]!;
  return { rows: Number(row.rows as bigint), distinct: Number(row.ids as bigint) };
}

interface RunResult {
  config: ConfigName;
  run: number;
  startedAt: string;
  loadavgBefore: number[];
  loadavgAfter: number[];
  ackedEvents: number;
  loadS: number;
  drainS: number;
  ackedPerS: number;
  committedPerS: number;
  ackP50Ms: number;
  ackP99Ms: number;
  /** Per loadgen run (two per configuration). */
  loadgen: Array<Pick<LoadgenSummary, 'acked' | 'retried' | 'throttled' | 'failed' | 'elapsedS' | 'eventsPerSecond'> & { url: string; p50: number; p99: number }>;
  pubAckP50Ms: number;
  pubAckP99Ms: number;
  pubAcks: number;
  /** Cores used over the load window (CPU s / wall s), by process. */
  cpu: Record<string, number>;
  /** Cores used over the drain window. */
  cpuDrain: Record<string, number>;
  silver: { rows: number; distinct: number };
  exitCodes: Record<string, number>;
}

async function runOne(config: ConfigName, run: number): Promise<RunResult> {
  const root = mkdtempSync(join(tmpdir(), `sluice-cluster-scale-${config}-`));
  const lake = join(root, 'lake');
  const procs: Proc[] = [];
  let nats: NatsCluster | undefined;
  const common = ['--shards', SHARDS, '--flush-interval', FLUSH];
  const startedAt = new Date().toISOString();
  try {
    let ingestUrls: string[];
    let engines: Proc[];
    if (config === 'a') {
      const s = asProc('serve', await startServe(['--data', join(root, 'data'), '--lake', lake, '--write-key', KEY, ...common], join(root, 'serve.log'), START_BOUND_MS));
      procs.push(s);
      ingestUrls = [s.url];
      engines = [s];
    } else {
      nats = await startNatsCluster({ nodes: 3 });
      const urls = nats.urls;
      const ingestCount = config === 'd' ? 2 : 1;
      const engineCount = config === 'c' ? 2 : 1;
      const started = await Promise.all([
        ...Array.from({ length: ingestCount }, async (_, i) =>
          asProc(`ingest${i + 1}`, await startServe(['--role', 'ingest', '--log', (i === 0 ? urls : [...urls].reverse()).join(','), '--data', join(root, `i${i + 1}`), '--write-key', KEY, ...common], join(root, `i${i + 1}.log`), START_BOUND_MS)),
        ),
        ...Array.from({ length: engineCount }, async (_, i) => {
          const e = asProc('engine', await startSluiceChild('engine', ['--log', urls.join(','), '--data', join(root, `e${i + 1}`), '--lake', lake, '--node-id', `e${i + 1}`, ...common], join(root, `e${i + 1}.log`), START_BOUND_MS));
          return { ...e, role: `engine${i + 1}` };
        }),
      ]);
      procs.push(...started);
      ingestUrls = started.filter((p) => p.role.startsWith('ingest')).map((p) => p.url);
      engines = started.filter((p) => p.role.startsWith('engine'));
      // Every shard owned, spread over the engine nodes, before the load starts.
      const want = Math.ceil(Number(SHARDS) / engines.length);
      const deadline = Date.now() + START_BOUND_MS;
      for (;;) {
        const owned = await Promise.all(engines.map(async (e) => ((await (await fetch(`${e.url}/v1/cluster`)).json()) as { shards: number[] }).shards.length).map((p) => p.catch(() => 0)));
        if (owned.every((n) => n === want) && owned.reduce((a, b) => a + b, 0) === Number(SHARDS)) break;
        if (Date.now() > deadline) throw new Error(`engine nodes did not balance the shards within ${START_BOUND_MS} ms (owned: ${owned.join(', ')})`);
        await sleep(500);
      }
    }

    // Every process whose CPU counts: Sluice processes, their children (serve's engine process), nats-servers.
    const watched = new Map<string, number>();
    for (const p of procs) {
      watched.set(p.role, p.pid);
      for (const c of childrenOf(p.pid)) if (commOf(c) !== '') watched.set(`${p.role}:child`, c);
    }
    if (config === 'a') {
      const engineChild = watched.get('serve:child');
      if (engineChild !== undefined) (watched.delete('serve:child'), watched.set('serve:engine', engineChild), watched.set('serve:ingest', watched.get('serve')!), watched.delete('serve'));
    }
    childrenOf(process.pid)
      .filter((p) => commOf(p) === 'nats-server')
      .forEach((p, i) => watched.set(`nats${i + 1}`, p));
    const snap = (): Map<string, number> => new Map([...watched].map(([k, pid]) => [k, cpuTicks(pid)]));
    const cores = (a: Map<string, number>, b: Map<string, number>, wallS: number): Record<string, number> =>
      Object.fromEntries([...a].map(([k, t0]) => [k, Math.round(((b.get(k)! - t0) / TICK_HZ / wallS) * 100) / 100]));

    const loadavgBefore = loadavg().map((x) => Math.round(x * 10) / 10);
    const cpu0 = snap();
    const client0 = process.cpuUsage();
    const t0 = performance.now();
    const targets = ingestUrls.length === 2 ? ingestUrls : [ingestUrls[0]!, ingestUrls[0]!];
    const summaries = await Promise.all(
      targets.map((url, i) =>
        runLoadgen({ url, writeKey: KEY, protocol: PROTOCOL, durationMs: SECONDS * 1000, users: 20_000, seed: 100 * run + i + 1, workers: 1, connections: 4, batchSize: 100, maxRetries: 1000, warmupMs: 2000 }),
      ),
    );
    const t1 = performance.now();
    const cpu1 = snap();
    const client1 = process.cpuUsage();
    const loadS = (t1 - t0) / 1000;
    const acked = summaries.reduce((a, s) => a + s.acked, 0);
    const failed = summaries.reduce((a, s) => a + s.failed, 0);

    // Drain: every acknowledged event committed — polled with DuckDB over silver (the same way for
    // every configuration; engine nodes export no committed-events counter). Distinct ids, so a
    // compaction's old and new file seen together cannot count an event twice.
    let drainS = NaN;
    const pollDb = await DuckDBInstance.create(':memory:');
    const poll = await pollDb.connect();
    try {
      for (const deadline = Date.now() + DRAIN_BOUND_MS; Date.now() < deadline; ) {
        const committed = await silverCounts(poll, lake)
          .then((c) => c.distinct)
          .catch(() => 0); // no file yet, or one compacted away under the glob
        if (committed >= acked) {
          drainS = (performance.now() - t1) / 1000;
          break;
        }
        await sleep(1000);
      }
    } finally {
      poll.closeSync();
      pollDb.closeSync();
    }
    const t2 = performance.now();
    const cpu2 = snap();
    const ingestTexts = await Promise.all(ingestUrls.map((u) => scrape(u)));
    const pub = mergeBuckets(ingestTexts, 'sluice_jetstream_publish_seconds');
    const clientCores = (client1.user - client0.user + client1.system - client0.system) / 1e6 / loadS;
    const loadavgAfter = loadavg().map((x) => Math.round(x * 10) / 10);

    // Stop everything (engines last: their final checkpoint), then read silver with nothing rewriting it.
    const exitCodes: Record<string, number> = {};
    for (const p of procs.filter((x) => !x.role.startsWith('engine'))) exitCodes[p.role] = await p.stop(120_000);
    // Everything acknowledged is in silver already; an engine that has not exited 30 s after SIGTERM is killed (exit -1, reported).
    for (const p of procs.filter((x) => x.role.startsWith('engine'))) exitCodes[p.role] = await p.stop(30_000);
    await nats?.stop();
    nats = undefined;
    const db = await DuckDBInstance.create(':memory:');
    const conn = await db.connect();
    let silver: RunResult['silver'];
    try {
      silver = await silverCounts(conn, lake);
    } finally {
      conn.closeSync();
      db.closeSync();
    }
    const r: RunResult = {
      config,
      run,
      startedAt,
      loadavgBefore,
      loadavgAfter,
      ackedEvents: acked,
      loadS: Math.round(loadS * 100) / 100,
      drainS: Math.round(drainS * 100) / 100,
      ackedPerS: Math.round(acked / loadS),
      committedPerS: Math.round(acked / (loadS + drainS)),
      ackP50Ms: Math.max(...summaries.map((s) => s.latencyMs.p50)),
      ackP99Ms: Math.max(...summaries.map((s) => s.latencyMs.p99)),
      loadgen: summaries.map((s, i) => ({ url: targets[i]!, acked: s.acked, retried: s.retried, throttled: s.throttled, failed: s.failed, elapsedS: s.elapsedS, eventsPerSecond: Math.round(s.eventsPerSecond), p50: s.latencyMs.p50, p99: s.latencyMs.p99 })),
      pubAckP50Ms: Math.round(histogramQuantileMs(pub, 0.5) * 100) / 100,
      pubAckP99Ms: Math.round(histogramQuantileMs(pub, 0.99) * 100) / 100,
      pubAcks: pub.get(Infinity) ?? 0,
      cpu: { ...cores(cpu0, cpu1, loadS), client: Math.round(clientCores * 100) / 100 },
      cpuDrain: cores(cpu1, cpu2, (t2 - t1) / 1000),
      silver,
      exitCodes,
    };
    process.stdout.write(`${JSON.stringify(r)}\n`);
    const problems: string[] = [];
    if (Number.isNaN(drainS)) problems.push(`acknowledged events not all committed within ${DRAIN_BOUND_MS / 1000} s`);
    if (failed > 0) problems.push(`${failed} events in batches the client gave up on`);
    if (silver.rows !== silver.distinct) problems.push(`silver has ${silver.rows - silver.distinct} duplicate rows`);
    if (silver.distinct !== acked) problems.push(`silver holds ${silver.distinct} distinct ids, ${acked} were acknowledged`);
    if (problems.length > 0) throw new Error(`EXACTLY-ONCE CHECK FAILED (config ${config}, run ${run}): ${problems.join('; ')} — data kept in ${root}`);
    rmSync(root, { recursive: true, force: true });
    return r;
  } finally {
    for (const p of procs) await p.stop(30_000).catch(() => -1);
    await nats?.stop();
  }
}

const median = (xs: number[]): number => {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const fmt = (x: number, d = 0): string => (Number.isNaN(x) ? '—' : x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }));

async function main(): Promise<void> {
  process.stderr.write(`cluster-scale: ${RUNS} runs × [${CONFIGS.join(',')}], ${SECONDS} s closed-loop ${PROTOCOL} load each, ${SHARDS} shards, flush ${FLUSH}, ${cpus().length} cores; load average ${loadavg().map((x) => x.toFixed(1)).join(' ')}\n`);
  const results: RunResult[] = [];
  for (let run = 1; run <= RUNS; run++) for (const c of CONFIGS) results.push(await runOne(c, run));
  if (flags.out) writeFileSync(flags.out, `${JSON.stringify({ seconds: SECONDS, runs: RUNS, protocol: PROTOCOL, shards: SHARDS, flush: FLUSH, results }, null, 2)}\n`);

  const lines = ['| config | acked ev/s | committed ev/s | ack p50 / p99 ms | PubAck p50 / p99 ms | drain s | cores during load (median) | acked ev/s of the runs |', '|---|---|---|---|---|---|---|---|'];
  for (const c of CONFIGS) {
    const rs = results.filter((r) => r.config === c);
    const keys = [...new Set(rs.flatMap((r) => Object.keys(r.cpu)))];
    const cpu = keys.map((k) => `${k} ${fmt(median(rs.map((r) => r.cpu[k] ?? NaN)), 2)}`).join(', ');
    lines.push(
      `| ${c}: ${DESCRIPTION[c]} | ${fmt(median(rs.map((r) => r.ackedPerS)))} | ${fmt(median(rs.map((r) => r.committedPerS)))} | ${fmt(median(rs.map((r) => r.ackP50Ms)), 1)} / ${fmt(median(rs.map((r) => r.ackP99Ms)), 1)} | ${fmt(median(rs.map((r) => r.pubAckP50Ms)), 2)} / ${fmt(median(rs.map((r) => r.pubAckP99Ms)), 2)} | ${fmt(median(rs.map((r) => r.drainS)), 1)} | ${cpu} | ${rs.map((r) => r.ackedPerS).join(', ')} |`,
    );
  }
  lines.push('', '| ratio (median of per-run ratios) | acked ev/s | committed ev/s | ack p50 | ack p99 |', '|---|---|---|---|---|');
  const ratio = (num: ConfigName, den: ConfigName): void => {
    if (!CONFIGS.includes(num) || !CONFIGS.includes(den)) return;
    const per = (f: (r: RunResult) => number): string =>
      fmt(median(Array.from({ length: RUNS }, (_, i) => {
        const n = results.find((r) => r.config === num && r.run === i + 1);
        const d = results.find((r) => r.config === den && r.run === i + 1);
        return n && d ? f(n) / f(d) : NaN;
      })), 2);
    lines.push(`| ${num} / ${den} | ${per((r) => r.ackedPerS)} | ${per((r) => r.committedPerS)} | ${per((r) => r.ackP50Ms)} | ${per((r) => r.ackP99Ms)} |`);
  };
  ratio('b', 'a');
  ratio('c', 'b');
  ratio('d', 'b');
  ratio('c', 'a');
  ratio('d', 'a');
  process.stdout.write(`\n${lines.join('\n')}\n`);
}

await main();
