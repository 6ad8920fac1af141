/**
 * The end-to-end benchmark behind `sluice bench` / `npm run bench`: a real `sluice serve` child
 * process on loopback, driven by the project's load generator (worker threads in this process).
 *
 *   per protocol:  closed loop (max) ──▶ light closed loop (one thread, few requests in flight)
 *                  ──▶ open loop at 50 % and 90 % of that max (the sustained max: acked events
 *                  committed to silver per second, to the end of the drain, when that is below the
 *                  acked rate — acks may run ahead of the engine)
 *   scaling:       closed loop on `scalingProtocol` with 1 vs 2 engine workers, and as distinct
 *                  users grow (10 K → 10 M by default)
 *
 * Every run gets a fresh data directory and lake, is bounded by `durationMs` (load) and
 * `settleTimeoutMs` (wait for silver), and reports acked and processed rates, ack latency, ack →
 * live and ack → silver lag, the server's CPU and peak RSS, and bytes on disk per event once the
 * server has stopped (everything flushed and committed). A closing DuckDB count over silver checks
 * that the lake holds what the commit records say.
 */
import { mkdir, mkdtemp, readdir, rm, lstat } from 'node:fs/promises';
import { cpus, freemem, platform, release, totalmem, tmpdir } from 'node:os';
import { join } from 'node:path';
import { openLakeQuery } from '../analytics/query.js';
import { REALISTIC_MIX } from '../loadgen/options.js';
import { runLoadgen, type LoadgenProgress, type LoadgenProtocol, type LoadgenSummary } from '../loadgen/run.js';
import { ackLags, fetchServerMetrics, Monitor, quantile, type MonitorSample, type ServerMetrics } from './e2e-monitor.js';
import { inFlightOf, loadShape, validateE2eBenchOptions, type E2eBenchOptions } from './e2e-options.js';
import { BenchServer, machineLoad, machineUsage, type ProcStats } from './e2e-server.js';

const WRITE_KEY = 'bench-key';

/** Closed loop at full concurrency, open loop at a rate, or the light closed loop (see loadShape). */
export type RunKind = 'max' | 'rate' | 'light';

export type BoundBy = 'offered rate' | 'server CPU' | 'server ack thread' | 'client CPU' | 'other processes' | 'disk' | 'round trips';

/** What a run's load used, for boundOf: cores and fractions over the load. */
export interface RunUsage {
  /** Open loop: the offered rate (events/s); undefined for a closed loop. */
  offeredPerSec: number | undefined;
  ackedPerSec: number;
  serverCores: number;
  /** Of serverCores: ingest's main thread, which alone can saturate (one core at most). */
  serverMainCores: number;
  loadgenCores: number;
  /** Busy cores of the whole machine (server, loadgen and anything else running). */
  machineBusyCores: number;
  /** Busiest disk's utilisation, 0–1. */
  diskBusy: number;
  cores: number;
}

/**
 * What bounded a run's figure: 'offered rate' when an open loop got ≥ 95 % of what it offered;
 * otherwise the resource that ran out, first the disk (≥ 90 % busy), then the machine's CPU
 * (≥ 90 % of its cores busy: whichever of server, client and other processes used most), then
 * the ack thread (≥ 90 % of one core); none of these: 'round trips' (in-flight requests × batch
 * per ack latency bound a closed loop).
 */
export function boundOf(u: RunUsage): BoundBy {
  if (u.offeredPerSec !== undefined && u.ackedPerSec >= 0.95 * u.offeredPerSec) return 'offered rate';
  if (u.diskBusy >= 0.9) return 'disk';
  const machine = Number.isFinite(u.machineBusyCores) ? u.machineBusyCores : u.serverCores + u.loadgenCores;
  if (machine >= 0.9 * u.cores) {
    const others = Math.max(0, machine - u.serverCores - u.loadgenCores);
    if (others > u.serverCores && others > u.loadgenCores) return 'other processes';
    return u.serverCores >= u.loadgenCores ? 'server CPU' : 'client CPU';
  }
  if (u.serverMainCores >= 0.9) return 'server ack thread';
  return 'round trips';
}

/** What one run asked for. */
export interface RunSpec {
  kind: RunKind;
  protocol: LoadgenProtocol;
  /** Engine worker threads. */
  workers: number;
  users: number;
  /** Open loop: target events/s and the fraction of the max it is. */
  rate?: number;
  fraction?: number;
}

/** Seconds; NaN when not measurable. */
export interface LagStats {
  p50: number;
  p99: number;
  max: number;
  /** Acked counts never reached before the recording ended. */
  unreached: number;
}

/** What one run measured. Rates in events/s, times in s unless the name says ms, sizes in bytes. */
export interface RunResult extends RunSpec {
  shards: number;
  batchSize: number;
  /** Requests (WebSockets) per load-generator thread, the threads, Arrow batches in flight per WebSocket. */
  connections: number;
  loadgenWorkers: number;
  pipeline: number;
  /** Load-generator wall time. */
  loadS: number;
  acked: number;
  rejected: number;
  /** Retries, of which throttled (429/503 backpressure), and events given up on. */
  retried: number;
  throttled: number;
  failed: number;
  ackedPerSec: number;
  /** Ack latency after the warm-up (`warmupMs`). */
  latencyMs: { p50: number; p90: number; p99: number; p999: number; max: number; requests: number };
  /** Ack latency of the warm-up's requests, apart. */
  warmupLatencyMs: { p50: number; p99: number; max: number; requests: number };
  /** Events the shards processed during the load, per second of load. */
  processedPerSec: number;
  /** Acked events ÷ time from the load's start until the last of them was committed in silver. */
  silverPerSec: number;
  /** After the load stopped: until every acked event was processed / committed in silver. */
  drainS: number;
  commitS: number;
  /** How long after being acknowledged events became visible in /v1/live, and committed in silver. */
  ackToLiveS: LagStats;
  ackToSilverS: LagStats;
  /** Server CPU during the load (all threads of the serve process and its engine process), in cores. */
  serverCores: number;
  /** Of it: the ack thread (ingest's main thread), and the engine process (0 with --engine-mode inline). */
  serverMainCores: number;
  engineCores: number;
  /** What bounded the figure (see boundOf). */
  boundBy: BoundBy;
  /** The whole machine during the load: busy cores (every tenant) and the busiest disk's utilisation (0–1). */
  machineBusyCores: number;
  diskBusy: number;
  /** Acked events per second of server CPU during the load: the ack path's per-core throughput. */
  eventsPerServerCoreS: number;
  /**
   * Acked events per second of server CPU from the load's start until all of them were committed
   * (NaN when they were not): the sustained per-core throughput, which counts the engine's work
   * even when it lagged the acks and caught up after the load (a niced engine yields to the client).
   */
  committedPerServerCoreS: number;
  /** This process's CPU during the load (load generator threads), in cores. */
  loadgenCores: number;
  /** The server's own view at the end of the load: log fsyncs, ack time, checkpoints, refusals (since it started). */
  server?: ServerMetrics;
  /** Peak resident memory of the server (serve process + engine process). */
  peakRssBytes: number;
  disk: { lakeBytes: number; dataBytes: number; byLayer: Record<string, number> };
  lakeBytesPerEvent: number;
  dataBytesPerEvent: number;
  /** From the commit records, and from DuckDB over the lake after the stop. */
  committedSilverRows: number;
  silverRows: number;
  distinctUsers: number;
  /** Why the figures may be off (stopped early, silver mismatch, loadgen errors). */
  notes: string[];
  /**
   * With `runs` > 1: the key figures of every repeat. The result itself is the median repeat —
   * by acked ev/s for closed-loop runs, by p99 ack latency for open-loop ones — so its figures
   * belong together.
   */
  repeats?: { ackedPerSec: number[]; p99Ms: number[]; serverCores: number[]; peakRssBytes: number[]; ackToSilverP99S: number[] };
}

export interface E2eBenchReport {
  date: string;
  machine: { cores: number; cpu: string; memoryGiB: number; freeGiB: number; node: string; os: string };
  options: Omit<E2eBenchOptions, 'dir'>;
  runs: RunResult[];
  /** Indexes into `runs`. */
  protocols: Array<{ protocol: LoadgenProtocol; max: number; light?: number; rates: number[] }>;
  workerScale: number[];
  userScale: number[];
  goals: GoalCheck[];
  elapsedS: number;
}

export interface GoalCheck {
  goal: string;
  measured: string;
  met: boolean | undefined;
}

export interface E2eBenchHooks {
  /** One line per run start/end (no newline). */
  log?: (line: string) => void;
  /** Load generator progress, about once a second. */
  progress?: (p: LoadgenProgress) => void;
  signal?: AbortSignal;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Bytes allocated on disk (blocks) under `dir`, recursively; 0 when it does not exist. */
async function diskBytes(dir: string): Promise<number> {
  let total = 0;
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) total += await diskBytes(p);
    else total += (await lstat(p)).blocks * 512;
  }
  return total;
}

function lagStats(samples: readonly MonitorSample[], pick: (s: MonitorSample) => number, from: number, to: number): LagStats {
  const { lags, unreached } = ackLags(samples, pick, from, to);
  return { p50: quantile(lags, 0.5) / 1000, p99: quantile(lags, 0.99) / 1000, max: lags.length ? Math.max(...lags) / 1000 : NaN, unreached };
}

/** Runs one scenario on a fresh server and lake. */
async function runOne(o: E2eBenchOptions, spec: RunSpec, root: string, index: number, hooks: E2eBenchHooks): Promise<RunResult> {
  const dir = join(root, `run-${String(index).padStart(2, '0')}-${spec.protocol}-${spec.kind}${spec.fraction ? `-${Math.round(spec.fraction * 100)}` : ''}-w${spec.workers}-u${spec.users}`);
  await mkdir(dir, { recursive: true });
  const lake = join(dir, 'lake');
  const dataDir = join(dir, 'data');
  const settleMs = o.settleTimeoutMs ?? 3 * o.flushIntervalMs + 60_000;
  const { batchSize, connections, loadgenWorkers, pipeline } = loadShape(o, spec.protocol, spec.kind === 'light');
  const notes: string[] = [];
  const server = await BenchServer.start({ dataDir, lake, writeKey: WRITE_KEY, shards: o.shards, workers: spec.workers, flushIntervalMs: o.flushIntervalMs, serveArgs: o.serveArgs, logFile: join(dir, 'serve.log'), startTimeoutMs: 120_000 });
  let monitor: Monitor | undefined;
  try {
    monitor = new Monitor(server.url, lake, server.pid, o.sampleMs);
    const abort = new AbortController();
    const onOuterAbort = (): void => abort.abort();
    hooks.signal?.addEventListener('abort', onOuterAbort, { once: true });
    const guard = setInterval(() => {
      if (monitor!.peakRssBytes > o.maxServerRssBytes && !abort.signal.aborted) {
        notes.push(`load stopped early: server RSS passed --max-rss (${(o.maxServerRssBytes / 2 ** 30).toFixed(1)} GiB)`);
        abort.abort();
      }
    }, 250);
    const cpu0 = server.stats();
    const machine0 = machineUsage();
    const self0 = process.cpuUsage();
    const t0 = performance.now();
    let summary: LoadgenSummary;
    try {
      summary = await runLoadgen({
        url: server.url,
        writeKey: WRITE_KEY,
        protocol: spec.protocol,
        rate: spec.rate,
        durationMs: o.durationMs,
        warmupMs: o.warmupMs,
        users: spec.users,
        seed: o.seed,
        workers: loadgenWorkers,
        connections,
        batchSize,
        pipeline,
        ...REALISTIC_MIX,
        signal: abort.signal,
        onProgress: hooks.progress,
      });
    } finally {
      clearInterval(guard);
      hooks.signal?.removeEventListener('abort', onOuterAbort);
    }
    const t1 = performance.now();
    const cpu1 = server.stats();
    const machine1 = machineUsage();
    const self = process.cpuUsage(self0);
    const serverMetrics = await fetchServerMetrics(server.url);
    const atEnd = await monitor.sampleOnce();
    const ackedFinal = atEnd.acked;
    const deadline = performance.now() + settleMs;
    const processedAt = await monitor.waitFor((s) => s.processed, ackedFinal, deadline);
    const committedAt = await monitor.waitFor((s) => s.committed, ackedFinal, deadline);
    const cpu2 = server.stats();
    if (committedAt === undefined) notes.push(`not all acked events were committed within ${settleMs} ms of the load's end (${monitor.latest.committed} of ${ackedFinal})`);
    await sleep(o.sampleMs * 2);
    await monitor.stop();
    const samples = monitor.samples;
    const inLoad = samples.filter((s) => s.t <= t1);
    const loadS = (t1 - t0) / 1000;
    const cpuS = (a: ProcStats | undefined, b: ProcStats | undefined, k: 'cpuS' | 'mainCpuS' | 'engineCpuS'): number => (a && b ? b[k] - a[k] : NaN);
    const serverCpuS = cpuS(cpu0, cpu1, 'cpuS');
    const peakRss = Math.max(monitor.peakRssBytes, server.stats()?.peakRssBytes ?? 0);
    await server.stop(settleMs + 60_000);

    const byLayer: Record<string, number> = {};
    for (const layer of ['bronze', 'silver', 'gold', 'dlq', 'late', '_sluice']) byLayer[layer] = await diskBytes(join(lake, layer));
    const disk = { lakeBytes: await diskBytes(lake), dataBytes: await diskBytes(dataDir), byLayer };
    const q = await openLakeQuery({ lake });
    let silverRows = NaN;
    let distinctUsers = NaN;
    try {
      const r = await q.run('SELECT count(*) AS n, count(DISTINCT user_id) AS users FROM events');
      silverRows = Number(r.rows[0]![0]);
      distinctUsers = Number(r.rows[0]![1]);
    } finally {
      await q.close();
    }
    const committedSilverRows = monitor.latest.committedSilver;
    // The stop's final checkpoint may commit what the wait above timed out on: compare with DuckDB only when all was in.
    if (committedAt !== undefined && silverRows !== committedSilverRows) notes.push(`silver holds ${silverRows} rows but the flush records say ${committedSilverRows}`);
    if (summary.failed > 0) notes.push(`${summary.failed} events given up by the load generator`);
    if (summary.rejectedValid > 0 || summary.acceptedInvalid > 0) notes.push(`server rejected ${summary.rejectedValid} valid and accepted ${summary.acceptedInvalid} invalid events`);
    for (const e of summary.errors) notes.push(`loadgen: ${e}`);
    const processedInLoad = inLoad.at(-1)?.processed ?? 0;
    const acked = summary.acked;
    const serverCores = serverCpuS / loadS;
    const loadgenCores = (self.user + self.system) / 1e6 / loadS;
    const serverMainCores = cpuS(cpu0, cpu1, 'mainCpuS') / loadS;
    const { busyCores: machineBusyCores, diskBusy } = machineLoad(machine0, machine1, loadS);
    const boundBy = boundOf({ offeredPerSec: spec.kind === 'max' ? undefined : spec.rate, ackedPerSec: summary.eventsPerSecond, serverCores, serverMainCores, loadgenCores, machineBusyCores, diskBusy, cores: cpus().length });
    const w = summary.warmupLatencyMs;
    return {
      ...spec,
      shards: o.shards,
      batchSize,
      connections,
      loadgenWorkers,
      pipeline,
      loadS,
      acked,
      rejected: summary.rejected,
      retried: summary.retried,
      throttled: summary.throttled,
      failed: summary.failed,
      ackedPerSec: summary.eventsPerSecond,
      latencyMs: { p50: summary.latencyMs.p50, p90: summary.latencyMs.p90, p99: summary.latencyMs.p99, p999: summary.latencyMs.p999, max: summary.latencyMs.max, requests: summary.latencyMs.count },
      warmupLatencyMs: { p50: w.p50, p99: w.p99, max: w.max, requests: w.count },
      processedPerSec: processedInLoad / loadS,
      silverPerSec: committedAt === undefined ? NaN : ackedFinal / ((committedAt - t0) / 1000),
      drainS: processedAt === undefined ? NaN : Math.max(0, processedAt - t1) / 1000,
      commitS: committedAt === undefined ? NaN : Math.max(0, committedAt - t1) / 1000,
      ackToLiveS: lagStats(samples, (s) => s.processed, t0 + o.warmupMs, t1),
      ackToSilverS: lagStats(samples, (s) => s.committed, t0 + o.warmupMs, t1),
      serverCores,
      serverMainCores,
      engineCores: cpuS(cpu0, cpu1, 'engineCpuS') / loadS,
      boundBy,
      machineBusyCores,
      diskBusy,
      eventsPerServerCoreS: acked / serverCpuS,
      committedPerServerCoreS: committedAt === undefined ? NaN : acked / cpuS(cpu0, cpu2, 'cpuS'),
      loadgenCores,
      server: serverMetrics,
      peakRssBytes: peakRss,
      disk,
      lakeBytesPerEvent: disk.lakeBytes / acked,
      dataBytesPerEvent: disk.dataBytes / acked,
      committedSilverRows,
      silverRows,
      distinctUsers,
      notes,
    };
  } catch (err) {
    await monitor?.stop();
    server.kill();
    throw err;
  } finally {
    if (!o.keep) await rm(dir, { recursive: true, force: true });
  }
}

const fmtInt = (n: number): string => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'n/a');
const fmt = (n: number, digits = 1): string => (Number.isFinite(n) ? n.toFixed(digits) : 'n/a');
const mib = (b: number): string => (Number.isFinite(b) ? `${Math.round(b / 2 ** 20).toLocaleString('en-US')} MiB` : 'n/a');
/** A run's load as the tables name it: max, light, 50 %. */
const loadLabel = (x: Pick<RunSpec, 'kind' | 'fraction'>): string => (x.kind === 'rate' ? `${Math.round((x.fraction ?? 0) * 100)} %` : x.kind);
const count = (n: number): string => (n >= 1e6 && n % 1e6 === 0 ? `${n / 1e6}M` : n >= 1e3 && n % 1e3 === 0 ? `${n / 1e3}K` : String(n));

/** Runs the whole benchmark (options validated here). */
export async function runE2eBench(input: Partial<E2eBenchOptions>, hooks: E2eBenchHooks = {}): Promise<E2eBenchReport> {
  const o = validateE2eBenchOptions(input);
  const started = performance.now();
  const root = o.dir ?? (await mkdtemp(join(tmpdir(), 'sluice-bench-')));
  await mkdir(root, { recursive: true });
  const runs: RunResult[] = [];
  const memo = new Map<string, number>();
  let runNo = 0;
  const log = hooks.log ?? (() => undefined);
  const plan = o.protocols.length * (1 + (o.lightLoop ? 1 : 0) + o.rateFractions.length) + o.workerScale.length + o.userScale.length;
  const run = async (spec: RunSpec): Promise<number> => {
    const key = `${spec.kind}/${spec.protocol}/${spec.workers}/${spec.users}/${spec.rate ?? ''}`;
    const seen = memo.get(key);
    if (seen !== undefined) return seen;
    if (hooks.signal?.aborted) throw hooks.signal.reason;
    const n = inFlightOf(loadShape(o, spec.protocol, spec.kind === 'light'), spec.protocol);
    const load = { max: 'closed loop (max)', light: `light closed loop (1 thread, ${n} ${spec.protocol === 'arrow-ws' ? 'batch' : 'request'}${n === 1 ? '' : 's'} in flight)`, rate: `open loop ${Math.round((spec.fraction ?? 0) * 100)} % = ${fmtInt(spec.rate ?? 0)} ev/s` }[spec.kind];
    const what = `${spec.protocol} ${load}, ${spec.workers} engine worker${spec.workers === 1 ? '' : 's'}, ${count(spec.users)} users`;
    const tries: RunResult[] = [];
    for (let k = 0; k < o.runs; k++) {
      if (hooks.signal?.aborted) throw hooks.signal.reason;
      log(`[${runs.length + 1}/${plan}${o.runs > 1 ? ` repeat ${k + 1}/${o.runs}` : ''}] ${what}: ${o.durationMs / 1000} s of load…`);
      tries.push(await runOne(o, spec, root, ++runNo, hooks));
      const t = tries.at(-1)!;
      if (o.runs > 1) log(`      acked ${fmtInt(t.ackedPerSec)} ev/s, p50/p99 ${fmt(t.latencyMs.p50)}/${fmt(t.latencyMs.p99)} ms, server ${fmt(t.serverCores, 2)} cores`);
    }
    const by = (x: RunResult): number => (spec.kind === 'max' ? x.ackedPerSec : x.latencyMs.p99);
    const r = [...tries].sort((a, b) => by(a) - by(b))[Math.floor((tries.length - 1) / 2)]!;
    if (o.runs > 1) {
      r.repeats = {
        ackedPerSec: tries.map((x) => x.ackedPerSec),
        p99Ms: tries.map((x) => x.latencyMs.p99),
        serverCores: tries.map((x) => x.serverCores),
        peakRssBytes: tries.map((x) => x.peakRssBytes),
        ackToSilverP99S: tries.map((x) => x.ackToSilverS.p99),
      };
    }
    runs.push(r);
    memo.set(key, runs.length - 1);
    log(
      `      acked ${fmtInt(r.ackedPerSec)} ev/s, processed ${fmtInt(r.processedPerSec)} ev/s, p50/p99 ${fmt(r.latencyMs.p50)}/${fmt(r.latencyMs.p99)} ms, ` +
        `server ${fmt(r.serverCores, 2)} cores (ack thread ${fmt(r.serverMainCores, 2)}, engine ${fmt(r.engineCores, 2)}; ${fmtInt(r.eventsPerServerCoreS)} ev/core-s), loadgen ${fmt(r.loadgenCores, 2)} cores, bound by ${bound(r)}, ` +
        `peak RSS ${mib(r.peakRssBytes)}, silver +${fmt(r.commitS)} s after the load` +
        (r.notes.length ? `\n      note: ${r.notes.join('; ')}` : ''),
    );
    return runs.length - 1;
  };
  const protocols: E2eBenchReport['protocols'] = [];
  for (const protocol of o.protocols) {
    const max = await run({ kind: 'max', protocol, workers: o.workers, users: o.users });
    const light = o.lightLoop ? await run({ kind: 'light', protocol, workers: o.workers, users: o.users }) : undefined;
    const rates: number[] = [];
    const m = runs[max]!;
    const sustained = Number.isFinite(m.silverPerSec) ? Math.min(m.ackedPerSec, m.silverPerSec) : m.ackedPerSec;
    for (const fraction of o.rateFractions) {
      const rate = Math.max(1, Math.round(fraction * sustained));
      rates.push(await run({ kind: 'rate', protocol, workers: o.workers, users: o.users, rate, fraction }));
    }
    protocols.push({ protocol, max, light, rates });
  }
  const workerScale: number[] = [];
  for (const w of o.workerScale) workerScale.push(await run({ kind: 'max', protocol: o.scalingProtocol, workers: w, users: o.users }));
  const userScale: number[] = [];
  for (const u of o.userScale) userScale.push(await run({ kind: 'max', protocol: o.scalingProtocol, workers: o.workers, users: u }));
  if (o.dir === undefined && !o.keep) await rm(root, { recursive: true, force: true });

  const report: E2eBenchReport = {
    date: new Date().toISOString(),
    machine: {
      cores: cpus().length,
      cpu: cpus()[0]?.model ?? 'unknown',
      memoryGiB: totalmem() / 2 ** 30,
      freeGiB: freemem() / 2 ** 30,
      node: process.version,
      os: `${platform()} ${release()}`,
    },
    options: { ...o, dir: undefined } as Omit<E2eBenchOptions, 'dir'>,
    runs,
    protocols,
    workerScale,
    userScale,
    goals: [],
    elapsedS: (performance.now() - started) / 1000,
  };
  report.goals = checkGoals(report);
  return report;
}

/** The acceptance goals of issue 5, against this report. */
export function checkGoals(r: E2eBenchReport): GoalCheck[] {
  const goals: GoalCheck[] = [];
  const maxOf = (p: LoadgenProtocol): RunResult | undefined => {
    const e = r.protocols.find((x) => x.protocol === p);
    return e ? r.runs[e.max] : undefined;
  };
  const perCore = (p: LoadgenProtocol, target: number, label: string): void => {
    const m = maxOf(p);
    if (!m) return;
    goals.push({
      goal: `${label} ≥ ${fmtInt(target)} events/s per core`,
      measured: `${fmtInt(m.committedPerServerCoreS)} per server core-second to the end of the drain (acks alone ${fmtInt(m.eventsPerServerCoreS)}: ${fmtInt(m.ackedPerSec)} ev/s on ${fmt(m.serverCores, 2)} server cores; ${fmtInt(m.ackedPerSec / r.machine.cores)} per machine core)`,
      met: Number.isFinite(m.committedPerServerCoreS) ? m.committedPerServerCoreS >= target : undefined,
    });
  };
  perCore('arrow-ws', 500_000, 'Arrow WebSocket');
  perCore('http', 150_000, 'Segment HTTP JSON');
  const flushS = r.options.flushIntervalMs / 1000;
  const silverBound = flushS + 2;
  /** The server's share of acks within 20 ms, as a clause for a latency goal's "measured". */
  const serverShare = (x: RunResult): string => (x.server && Number.isFinite(x.server.ackWithin20msShare) ? `; server: ${fmt(x.server.ackWithin20msShare * 100, 2)} % of acks within 20 ms` : '');
  for (const e of r.protocols) {
    const max = r.runs[e.max]!;
    const light = e.light === undefined ? undefined : r.runs[e.light];
    const half = e.rates.map((i) => r.runs[i]!).find((x) => x.fraction === 0.5);
    if (light) {
      const inFlight = inFlightOf(light, light.protocol);
      goals.push({
        goal: `${e.protocol}: p99 ack ≤ 20 ms under a light closed loop`,
        measured: `p99 ${fmt(light.latencyMs.p99)} ms at ${fmtInt(light.ackedPerSec)} ev/s, ${inFlight} × ${light.batchSize} events in flight${serverShare(light)}`,
        met: Number.isFinite(light.latencyMs.p99) ? light.latencyMs.p99 <= 20 : undefined,
      });
    }
    if (half) goals.push({ goal: `${e.protocol}: p99 ack ≤ 20 ms at 50 % of the sustained max`, measured: `p99 ${fmt(half.latencyMs.p99)} ms at ${fmtInt(half.rate!)} ev/s${serverShare(half)}`, met: half.latencyMs.p99 <= 20 });
    const tails = [light, half].filter((x): x is RunResult => x !== undefined);
    if (tails.length > 0) {
      goals.push({
        goal: `${e.protocol}: p99.9 ack < 100 ms (${tails.map(loadLabel).join(' and ')})`,
        measured: tails.map((x) => `${fmt(x.latencyMs.p999)} ms (${loadLabel(x)})`).join(', '),
        met: tails.every((x) => Number.isFinite(x.latencyMs.p999)) ? tails.every((x) => x.latencyMs.p999 < 100) : undefined,
      });
    }
    if (half) {
      // sent → visible = sent → acked (p50 latency) + acked → visible (p99 of the lag samples).
      const live = half.latencyMs.p50 / 1000 + half.ackToLiveS.p99;
      goals.push({ goal: `${e.protocol}: visible in /v1/live ≤ 2 s`, measured: `${fmt(live, 2)} s (ack p50 + ack→live p99) at 50 %`, met: Number.isFinite(live) ? live <= 2 : undefined });
      const silver = half.latencyMs.p50 / 1000 + half.ackToSilverS.p99;
      goals.push({ goal: `${e.protocol}: committed in silver ≤ flush interval + 2 s = ${fmt(silverBound, 0)} s`, measured: `${fmt(silver, 2)} s (ack p50 + ack→silver p99) at 50 %`, met: Number.isFinite(silver) ? silver <= silverBound : undefined });
    }
    const silverAtMax = max.latencyMs.p50 / 1000 + max.ackToSilverS.p99;
    goals.push({ goal: `${e.protocol}: committed in silver ≤ flush interval + 2 s at max`, measured: `${fmt(silverAtMax, 2)} s (ack p50 + ack→silver p99) at max`, met: Number.isFinite(silverAtMax) ? silverAtMax <= silverBound : undefined });
    const cp = max.server;
    const cpGoal = `${e.protocol}: checkpoint ≤ flush interval (${fmt(flushS, 0)} s) at max`;
    if (cp && cp.checkpoints > 0) {
      goals.push({
        goal: cpGoal,
        measured: `${cp.checkpoints} checkpoint${cp.checkpoints === 1 ? '' : 's'} by the load's end, mean ${fmt(cp.checkpointMeanS, 2)} s, longest in (${fmt(cp.checkpointMaxAboveS, 2)}, ${fmt(cp.checkpointMaxBucketS, 2)}] s`,
        // The histogram bounds the longest one: met when its bucket ends by the interval, missed when it starts there.
        met: cp.checkpointMaxBucketS <= flushS ? true : cp.checkpointMaxAboveS >= flushS ? false : undefined,
      });
    } else if (cp && max.loadS >= 2 * flushS) {
      // Not one finished in two intervals or more: the one running took longer than the interval.
      goals.push({ goal: cpGoal, measured: `none finished during the ${fmt(max.loadS, 0)} s load`, met: false });
    }
  }
  return goals;
}

/** Fixed-width table: first column left-aligned, the others right-aligned. */
function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** A protocol's runs in table order: max, light, then the open loops. */
const runsOf = (p: E2eBenchReport['protocols'][number]): number[] => [p.max, ...(p.light === undefined ? [] : [p.light]), ...p.rates];

const bound = (x: RunResult): string => `${x.boundBy} (${fmt(x.machineBusyCores, 2)}, ${Number.isFinite(x.diskBusy) ? `${Math.round(x.diskBusy * 100)} %` : 'n/a'})`;

/** The human-readable report. */
export function formatE2eReport(r: E2eBenchReport): string {
  const o = r.options;
  const out: string[] = [];
  out.push(`Sluice end-to-end benchmark, ${r.date}`);
  out.push(`machine: ${r.machine.cores} cores (${r.machine.cpu}), ${fmt(r.machine.memoryGiB)} GiB RAM, Node ${r.machine.node}, ${r.machine.os}`);
  out.push(
    `server:  sluice serve child process, ${o.shards} shards, flush every ${o.flushIntervalMs / 1000} s${o.serveArgs.length > 0 ? `, ${o.serveArgs.join(' ')}` : ''}, loopback; load: ${o.loadgenWorkers} loadgen threads in the bench process, ` +
      `${o.durationMs / 1000} s per run${o.runs > 1 ? ` (median of ${o.runs} repeats)` : ''}, ${count(o.users)} users, realistic mix (2 % duplicates, 5 s jitter, 1 % late, 0.1 % too late, 0.5 % invalid)`,
  );
  const row = (x: RunResult): string[] => [
    x.protocol,
    `${x.batchSize}×${x.connections * x.loadgenWorkers}`,
    fmtInt(x.ackedPerSec),
    fmtInt(x.processedPerSec),
    fmtInt(x.silverPerSec),
    fmt(x.serverCores, 2),
    fmtInt(x.eventsPerServerCoreS),
    fmt(x.loadgenCores, 2),
    `${fmt(x.latencyMs.p50)} / ${fmt(x.latencyMs.p99)}`,
    mib(x.peakRssBytes),
    bound(x),
  ];
  const head = ['protocol', 'batch×conns', 'acked ev/s', 'processed ev/s', 'in silver ev/s', 'server cores', 'ev/s per server core', 'loadgen cores', 'ack p50/p99 ms', 'peak RSS', 'bound by (machine busy cores, disk busy)'];
  const spread = (x: RunResult): string => (x.repeats ? x.repeats.ackedPerSec.map((v) => fmtInt(v / 1000)).join(' / ') + ' K' : '');
  if (o.runs > 1) head.push('acked ev/s of each repeat');
  out.push('\nThroughput, closed loop (max):');
  out.push(table(head, r.protocols.map((p) => (o.runs > 1 ? [...row(r.runs[p.max]!), spread(r.runs[p.max]!)] : row(r.runs[p.max]!)))));

  const latRows: string[][] = [];
  for (const p of r.protocols) {
    for (const i of runsOf(p)) {
      const x = r.runs[i]!;
      latRows.push([
        x.protocol,
        loadLabel(x),
        x.kind === 'rate' ? fmtInt(x.rate!) : '—',
        fmtInt(x.ackedPerSec),
        fmt(x.latencyMs.p50),
        fmt(x.latencyMs.p99),
        fmt(x.latencyMs.p999),
        fmt(x.latencyMs.max),
        x.warmupLatencyMs.requests > 0 ? `${fmt(x.warmupLatencyMs.p50)} / ${fmt(x.warmupLatencyMs.p99)} (${fmtInt(x.warmupLatencyMs.requests)} req)` : '—',
        `${fmt(x.ackToLiveS.p50, 2)} / ${fmt(x.ackToLiveS.p99, 2)}`,
        `${fmt(x.ackToSilverS.p50, 2)} / ${fmt(x.ackToSilverS.p99, 2)}`,
        fmt(x.commitS),
        x.boundBy,
      ]);
    }
  }
  out.push(
    `\nAck latency (ms, from intended send time: no coordinated omission; percentiles after the first ${o.warmupMs / 1000} s of each load, whose p50 / p99 are shown apart as warm-up) and freshness (s, p50 / p99 over 100 ms samples):`,
  );
  out.push(table(['protocol', 'load', 'target ev/s', 'acked ev/s', 'p50', 'p99', 'p99.9', 'max', 'warm-up p50 / p99', 'ack→live', 'ack→silver', 'silver done after stop', 'bound by'], latRows));

  const srvRows = r.protocols.flatMap((p) =>
    runsOf(p).map((i) => {
      const x = r.runs[i]!;
      const m = x.server;
      return [
        x.protocol,
        loadLabel(x),
        m ? fmtInt(m.fsyncs / x.loadS) : 'n/a',
        m ? `${fmt(m.fsyncMeanMs)} / ≤${fmt(m.fsyncP99Ms, 0)}` : 'n/a',
        m ? `${fmt(m.ackMeanMs)} / ≤${fmt(m.ackP99Ms, 0)} / ${fmt(m.ackWithin20msShare * 100, 2)} %` : 'n/a',
        m ? `${m.checkpoints} × ${fmt(m.checkpointMeanS, 2)}` : 'n/a',
        m ? `${fmtInt(m.refused503)} / ${fmtInt(m.refused429)}` : 'n/a',
        fmt(x.serverMainCores, 2),
        fmt(x.serverCores - x.serverMainCores, 2),
      ];
    }),
  );
  out.push('\nServer side (/metrics at the end of the load, since the server started; p99 = upper bound of its histogram bucket; ≤ 20 ms = share of acks the server sent within 20 ms of the request):');
  out.push(table(['protocol', 'load', 'fsyncs/s', 'fsync mean/p99 ms', 'ack mean/p99 ms / ≤ 20 ms', 'checkpoints × mean s', '503 / 429', 'main thread cores', 'other threads cores'], srvRows));

  const diskRows = r.protocols.map((p) => {
    const x = r.runs[p.max]!;
    const per = (k: string): string => fmt((x.disk.byLayer[k] ?? 0) / x.acked, 1);
    return [x.protocol, fmtInt(x.acked), fmt(x.lakeBytesPerEvent), per('bronze'), per('silver'), per('gold'), fmt(x.dataBytesPerEvent), mib(x.disk.dataBytes), fmtInt(x.silverRows), fmtInt(x.distinctUsers)];
  });
  out.push('\nOn disk after the server stopped (bytes per acked event; data = logs + LMDB, not per-event: logs keep their open segments):');
  out.push(table(['protocol', 'events', 'lake B/ev', 'bronze', 'silver', 'gold', 'data B/ev', 'data', 'silver rows (DuckDB)', 'distinct users'], diskRows));

  if (r.workerScale.length) {
    out.push(`\nScaling with engine workers (${o.scalingProtocol}, closed loop, ${count(o.users)} users, ${o.shards} shards):`);
    out.push(
      table(
        ['workers', 'acked ev/s', 'processed ev/s', 'in silver ev/s', 'server cores', 'main thread cores', 'ev/s per server core', 'peak RSS'],
        r.workerScale.map((i) => {
          const x = r.runs[i]!;
          return [String(x.workers), fmtInt(x.ackedPerSec), fmtInt(x.processedPerSec), fmtInt(x.silverPerSec), fmt(x.serverCores, 2), fmt(x.serverMainCores, 2), fmtInt(x.eventsPerServerCoreS), mib(x.peakRssBytes)];
        }),
      ),
    );
  }
  if (r.userScale.length) {
    out.push(`\nCost as distinct users grow (${o.scalingProtocol}, closed loop, ${o.workers} engine workers):`);
    out.push(
      table(
        ['users', 'users seen (silver)', 'events', 'acked ev/s', 'processed ev/s', 'server cores', 'peak RSS', 'RSS per user seen', 'lake B/ev'],
        r.userScale.map((i) => {
          const x = r.runs[i]!;
          return [count(x.users), fmtInt(x.distinctUsers), fmtInt(x.acked), fmtInt(x.ackedPerSec), fmtInt(x.processedPerSec), fmt(x.serverCores, 2), mib(x.peakRssBytes), `${fmtInt(x.peakRssBytes / x.distinctUsers)} B`, fmt(x.lakeBytesPerEvent)];
        }),
      ),
    );
  }
  if (r.goals.length) {
    out.push('\nGoals (issues 5 and 13):');
    out.push(table(['goal', 'measured', 'met'], r.goals.map((g) => [g.goal, g.measured, g.met === undefined ? '?' : g.met ? 'yes' : 'NO'])));
  }
  const notes = r.runs.flatMap((x, i) => x.notes.map((n) => `run ${i + 1} (${x.protocol} ${loadLabel(x)}, ${x.workers}w, ${count(x.users)} users): ${n}`));
  if (notes.length) out.push(`\nNotes:\n${notes.map((n) => `  ${n}`).join('\n')}`);
  out.push(`\n${r.runs.length} runs in ${fmt(r.elapsedS / 60)} min.`);
  return out.join('\n');
}
