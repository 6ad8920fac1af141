/**
 * Where the server's CPU goes, per event and per stage (issue 13's table):
 *
 *   npm run bench:profile -- [--case http:8000 --case arrow-ws:35000] [--runs 3]
 *     [--duration 40s] [--warmup 10s] [--users 20000] [--shards 2] [--workers 2]
 *     [--flush-interval 5s] [--interval 1000] [--top 10] [--json out.json] [--keep] [--serve-arg=--range-linger=0ms …] [--node-arg=--max-semi-space-size=32 …]
 *   npm run bench:profile -- --report out.json     (the tables of a saved run again)
 *
 * Each run starts the real `sluice serve` (compiled, dist/) with `--cpu-prof` — the engine process
 * inherits the flag (it is started with the parent's execArgv), and so does every worker thread —
 * drives it with the project's load generator at a fixed offered rate (open loop, realistic
 * traffic mix), stops it with SIGTERM (which writes one .cpuprofile per thread), and sums the
 * samples of every thread inside the measured window by stage; the stage of a sample is decided by
 * bench/profile-stages.ts. The window starts after the warm-up and ends when, after the load, the
 * engine has caught up (its backlog is 0): the events are those ingest accepted or rejected in
 * it, and the CPU they cost is in it even when the server lags behind the offered rate.
 *
 * The table gives µs of server CPU per event (events = accepted + rejected by ingest inside the
 * window, from /metrics). CPU comes from the kernel, stages from the samples: each JS thread's
 * utime + stime over the window (/proc/<pid>/task/<tid>/stat) is spread over its stages in
 * proportion to its non-idle samples (a sample's wall-clock gap is not CPU on a busy machine, so
 * samples are counted, not timed). The libuv pool (fsync, file I/O, LMDB's async work) and V8's
 * helper threads (concurrent GC marking, background JIT) run no JS and are not sampled: the row
 * "not sampled" is the rest of both processes' /proc CPU, and "total" is /proc's figure. The
 * profiler's own threads (v8:ProfEvntProc) are excluded from the total and shown apart; the
 * sampling itself still costs the JS threads a little (a signal per interval).
 *
 * The load generator runs in this process, on the same machine: it is the client, not counted.
 *
 * Two limits (bench/results/profile-threads-2026-12-06.md): a call that wakes another thread (the
 * ack's socket write wakes the client, a log write a pool thread) gets the samples of the time its
 * thread then waits for the core, so such rows read 2–3× high on two cores (check them with
 * `perf`); and background compaction (every 60 s) and the JIT's warm-up are inside the window only
 * if it is long enough (≥ 90 s of load, or a 70-s warm-up).
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { benchArgs } from './args.js';
import { parseDuration } from '../common/duration.js';
import { userError } from '../common/errors.js';
import { runLoadgen, type LoadgenProtocol } from '../loadgen/run.js';
import { REALISTIC_MIX } from '../loadgen/options.js';
import { emptyStages, profileIds, readThreadProfile, type ThreadProfile } from './cpu-profile.js';
import { BenchServer, childrenOf, threadCpu, type ThreadCpu } from './e2e-server.js';
import { STAGES, STAGE_LABELS, type Stage } from './profile-stages.js';

interface ProfileOptions {
  cases: Array<{ protocol: LoadgenProtocol; rate: number }>;
  runs: number;
  durationMs: number;
  warmupMs: number;
  users: number;
  shards: number;
  workers: number;
  flushIntervalMs: number;
  loadgenWorkers: number;
  connections: number;
  batchSize: number;
  intervalUs: number;
  top: number;
  keep: boolean;
  /** More `sluice serve` flags (--serve-arg, repeatable), e.g. `--range-linger=0ms`. */
  serveArgs: string[];
  /** More node flags for the serve process (--node-arg, repeatable; the engine process and its workers follow its heap flags), e.g. `--max-semi-space-size=32`. */
  nodeArgs: string[];
  json?: string;
  /** Print the tables of a saved --json file instead of running. */
  report?: string;
}

/**
 * CPU of one server process over the window, s (from /proc), split by thread kind. The JS
 * threads are its main thread (tid = pid) and its worker threads; Node gives every thread the
 * name `node`, so a worker's tid is found from its profiler thread (`v8:ProfEvntProc`), which the
 * worker starts right after it starts itself: the JS thread of each profiler thread but the first
 * (the main thread's) is the newest `node` thread below it.
 */
interface ProcessCpu {
  pid: number;
  role: 'ingest' | 'engine';
  totalS: number;
  mainS: number;
  /** Per worker thread, in thread-id order (= tid order); undefined when they could not be told apart. */
  workersS: number[] | undefined;
  profilerS: number;
}

/** One run's result; times in µs unless noted. */
export interface ProfileRun {
  protocol: LoadgenProtocol;
  rate: number;
  run: number;
  /** From the warm-up's end until the engine caught up (backlog 0) after the load. */
  windowS: number;
  /** Of the window, the load (until the last ack); the rest is the engine catching up. */
  loadS: number;
  /** False when the engine had not caught up 120 s after the load (the window ends there). */
  caughtUp: boolean;
  events: number;
  eventsPerS: number;
  /** µs of CPU per event by stage (all JS threads of both processes). */
  stageUsPerEvent: Record<Stage, number>;
  sampledUsPerEvent: number;
  /** /proc total (profiler threads excluded) minus the JS threads, per event. */
  notSampledUsPerEvent: number;
  totalUsPerEvent: number;
  profilerUsPerEvent: number;
  processes: Array<ProcessCpu & { otherS: number; samples: number; estimatedWorkers: boolean }>;
  /** Engine: log records per range (mean over the window). */
  rangeRecordsMean: number | undefined;
  /** The whole machine over the window: busy cores (/proc/stat) and the 1-minute load average at its end. */
  machineBusyCores: number;
  loadAverage: number;
  loadgen: { acked: number; failed: number; p50: number; p99: number; clientCpuS: number };
  top: Array<{ fn: string; stage: Stage; role: string; usPerEvent: number; share: number }>;
  profiles: number;
  incompleteProfiles: number;
}

const monoUs = (): number => Number(process.hrtime.bigint() / 1000n);

/** Sum of a Prometheus family's samples (every label set), or of one suffix (`_sum`, `_count`). */
function metricSum(text: string, name: string): number | undefined {
  let sum: number | undefined;
  for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.eE+-]+)$`, 'gm'))) sum = (sum ?? 0) + Number(m[1]);
  return sum;
}

async function scrape(url: string): Promise<string> {
  const res = await fetch(`${url}/metrics`);
  return res.text();
}

interface Snapshot {
  us: number;
  threads: Map<number, ThreadCpu[]>;
  metrics: string;
  /** /proc/stat: busy and total jiffies of the machine. */
  busy: number;
  all: number;
}

function machineJiffies(): { busy: number; all: number } {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const all = f.slice(0, 8).reduce((s, x) => s + x, 0);
    return { busy: all - f[3]! - f[4]!, all };
  } catch {
    return { busy: NaN, all: NaN };
  }
}

async function snapshot(url: string, pids: number[]): Promise<Snapshot> {
  const metrics = await scrape(url);
  return { us: monoUs(), threads: new Map(pids.map((p) => [p, threadCpu(p)])), metrics, ...machineJiffies() };
}

const PROFILER_THREAD = 'v8:ProfEvntProc';

/** Tids of the worker (JS) threads of `pid`, oldest first (see ProcessCpu). */
export function workerTids(threads: ThreadCpu[], pid: number): number[] {
  const sorted = [...threads].sort((x, y) => x.tid - y.tid);
  const profilers = sorted.filter((t) => t.comm.startsWith(PROFILER_THREAD)).slice(1);
  const used = new Set<number>([pid]);
  const out: number[] = [];
  for (const p of profilers) {
    const js = sorted.filter((t) => t.tid < p.tid && t.comm === 'node' && !used.has(t.tid)).at(-1);
    if (js === undefined) continue;
    used.add(js.tid);
    out.push(js.tid);
  }
  return out;
}

function processCpu(pid: number, role: 'ingest' | 'engine', workerProfiles: number, a: Snapshot, b: Snapshot): ProcessCpu {
  const before = new Map((a.threads.get(pid) ?? []).map((t) => [t.tid, t.cpuS]));
  const now = b.threads.get(pid) ?? [];
  const delta = (tid: number): number => (now.find((t) => t.tid === tid)?.cpuS ?? 0) - (before.get(tid) ?? 0);
  const out: ProcessCpu = { pid, role, totalS: 0, mainS: delta(pid), workersS: undefined, profilerS: 0 };
  for (const t of now) {
    const d = t.cpuS - (before.get(t.tid) ?? 0);
    out.totalS += d;
    if (t.comm.startsWith(PROFILER_THREAD)) out.profilerS += d;
  }
  const workers = workerTids(now, pid);
  if (workers.length === workerProfiles) out.workersS = workers.map(delta);
  return out;
}

function selfCpuS(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** Waits until the engine's backlog (acknowledged, not yet processed) is 0; false when `timeoutMs` passed first. */
async function caughtUp(url: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if ((metricSum(await scrape(url), 'sluice_engine_queue_depth_events') ?? 0) === 0) return true;
    await new Promise((r) => setTimeout(r, 250));
  }
  return false;
}

async function waitForEngine(serverPid: number, timeoutMs: number): Promise<number | undefined> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const kids = childrenOf(serverPid);
    if (kids.length > 0) return kids[0];
    await new Promise((r) => setTimeout(r, 100));
  }
  return undefined;
}

async function profileRun(o: ProfileOptions, protocol: LoadgenProtocol, rate: number, run: number): Promise<ProfileRun> {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-profile-'));
  const profDir = join(dir, 'prof');
  await mkdir(profDir);
  const writeKey = 'profile-key';
  const server = await BenchServer.start({
    dataDir: join(dir, 'data'),
    lake: join(dir, 'lake'),
    writeKey,
    shards: o.shards,
    workers: o.workers,
    flushIntervalMs: o.flushIntervalMs,
    logFile: join(dir, 'serve.log'),
    startTimeoutMs: 120_000,
    nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${profDir}`, `--cpu-prof-interval=${o.intervalUs}`, ...o.nodeArgs],
    serveArgs: o.serveArgs,
  });
  let a: Snapshot | undefined;
  let b: Snapshot | undefined;
  let enginePid: number | undefined;
  let clientA = 0;
  let clientB = 0;
  let loadAvgAtEnd = NaN;
  let loadEndedS = NaN;
  let drainedAt: boolean;
  let summary: Awaited<ReturnType<typeof runLoadgen>>;
  try {
    enginePid = await waitForEngine(server.pid, 10_000);
    const pids = enginePid === undefined ? [server.pid] : [server.pid, enginePid];
    const at = (ms: number, f: () => Promise<void>): Promise<void> => new Promise((resolve, reject) => setTimeout(() => f().then(resolve, reject), ms));
    const load = runLoadgen({
      ...REALISTIC_MIX,
      url: server.url,
      writeKey,
      protocol,
      rate,
      durationMs: o.warmupMs + o.durationMs,
      users: o.users,
      seed: run + 1,
      workers: o.loadgenWorkers,
      connections: o.connections,
      batchSize: o.batchSize,
    });
    const start = at(o.warmupMs, async () => {
      a = await snapshot(server.url, pids);
      clientA = selfCpuS();
    });
    [summary] = await Promise.all([load, start]);
    loadEndedS = (monoUs() - a!.us) / 1e6;
    // The window ends when the engine has caught up with everything acknowledged, so the CPU that
    // the window's events cost is inside it even when the server lags behind the offered rate.
    drainedAt = await caughtUp(server.url, 120_000);
    b = await snapshot(server.url, pids);
    clientB = selfCpuS();
    loadAvgAtEnd = loadavg()[0]!;
    await server.stop(300_000);
  } catch (err) {
    server.kill();
    throw err;
  }
  if (a === undefined || b === undefined) throw userError('profile_failed', 'the window snapshots were not taken');

  const files = (await readdir(profDir)).filter((f) => f.endsWith('.cpuprofile'));
  const threads: ThreadProfile[] = files.map((f) => {
    const ids = profileIds(f);
    return readThreadProfile(join(profDir, f), ids?.pid === server.pid ? 'ingest' : 'engine', a!.us, b!.us);
  });
  const delta = (name: string): number => (metricSum(b!.metrics, name) ?? 0) - (metricSum(a!.metrics, name) ?? 0);
  const events = delta('sluice_ingest_events_total') + delta('sluice_ingest_rejected_total');
  const perEvent = (us: number): number => us / Math.max(1, events);
  const windowS = (b.us - a.us) / 1e6;

  // Each JS thread's /proc CPU is spread over its samples' stages and functions.
  const stages = emptyStages();
  const functions = new Map<string, { us: number; stage: Stage; role: string }>();
  const processes: ProfileRun['processes'] = [];
  for (const [pid, role] of [[server.pid, 'ingest'], ...(enginePid === undefined ? [] : [[enginePid, 'engine']])] as Array<[number, 'ingest' | 'engine']>) {
    const mine = threads.filter((t) => t.pid === pid);
    const workers = mine.filter((t) => t.threadId !== 0).sort((x, y) => x.threadId - y.threadId);
    const cpu = processCpu(pid, role, workers.length, a, b);
    // A worker paired with a thread that barely ran while its profile shows work was paired with
    // the wrong thread (a libuv or V8 thread started between it and its profiler): estimate instead.
    if (cpu.workersS?.some((s, i) => workers[i]!.busy >= 100 && s < (0.1 * workers[i]!.busy * o.intervalUs) / 1e6)) cpu.workersS = undefined;
    const cpuOf = (t: ThreadProfile): number => (t.threadId === 0 ? cpu.mainS : (cpu.workersS?.[workers.indexOf(t)] ?? (t.busy * o.intervalUs) / 1e6)) * 1e6;
    let jsUs = 0;
    for (const t of mine) {
      const us = cpuOf(t);
      jsUs += us;
      if (t.busy === 0) {
        stages.other += us;
        continue;
      }
      for (const s of STAGES) stages[s] += (us * t.stages[s]) / t.busy;
      for (const [k, v] of t.functions) {
        const key = `${role}|${k}`;
        const f = functions.get(key);
        if (f) f.us += (us * v.n) / t.busy;
        else functions.set(key, { us: (us * v.n) / t.busy, stage: v.stage, role });
      }
    }
    processes.push({ ...cpu, otherS: cpu.totalS - cpu.profilerS - jsUs / 1e6, samples: mine.reduce((s, t) => s + t.busy, 0), estimatedWorkers: cpu.workersS === undefined && workers.length > 0 });
  }
  const sampledUs = STAGES.reduce((s, k) => s + stages[k], 0);
  const totalUs = processes.reduce((s, p) => s + (p.totalS - p.profilerS) * 1e6, 0);
  const profilerUs = processes.reduce((s, p) => s + p.profilerS * 1e6, 0);
  const dCount = delta('sluice_engine_range_records_count');
  const result: ProfileRun = {
    protocol,
    rate,
    run,
    windowS,
    loadS: loadEndedS,
    caughtUp: drainedAt!,
    events,
    eventsPerS: events / windowS,
    stageUsPerEvent: Object.fromEntries(STAGES.map((s) => [s, perEvent(stages[s])])) as Record<Stage, number>,
    sampledUsPerEvent: perEvent(sampledUs),
    notSampledUsPerEvent: perEvent(totalUs - sampledUs),
    totalUsPerEvent: perEvent(totalUs),
    profilerUsPerEvent: perEvent(profilerUs),
    processes,
    rangeRecordsMean: dCount > 0 ? delta('sluice_engine_range_records_sum') / dCount : undefined,
    machineBusyCores: ((b.busy - a.busy) / (b.all - a.all)) * cpus().length,
    loadAverage: loadAvgAtEnd,
    loadgen: { acked: summary.acked + summary.rejected, failed: summary.failed, p50: summary.latencyMs.p50, p99: summary.latencyMs.p99, clientCpuS: clientB - clientA },
    top: [...functions.entries()]
      .sort((x, y) => y[1].us - x[1].us)
      .slice(0, o.top)
      .map(([k, v]) => ({ fn: k.slice(k.indexOf('|') + 1), stage: v.stage, role: v.role, usPerEvent: perEvent(v.us), share: v.us / Math.max(1, sampledUs) })),
    profiles: threads.length,
    incompleteProfiles: threads.filter((t) => !t.coversWindow).length,
  };
  if (!o.keep) await rm(dir, { recursive: true, force: true });
  else process.stderr.write(`profile: kept ${dir}\n`);
  return result;
}

const median = (xs: number[]): number => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((p, q) => p - q);
  if (s.length === 0) return NaN;
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const f1 = (x: number | undefined): string => (x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(1));

/** The issue's table: one column per case (median over its runs, runs in parentheses). */
export function formatTable(runs: ProfileRun[]): string {
  const cases = [...new Map(runs.map((r) => [`${r.protocol}:${r.rate}`, r])).keys()];
  const of = (c: string): ProfileRun[] => runs.filter((r) => `${r.protocol}:${r.rate}` === c);
  const name = (c: string): string => {
    const [p, rate] = c.split(':');
    return `${p === 'http' ? 'Segment HTTP' : p === 'arrow-ws' ? 'Arrow WS' : p} at ${Number(rate) / 1000} K ev/s`;
  };
  const cell = (c: string, v: (r: ProfileRun) => number | undefined): string => {
    const rs = of(c);
    const xs = rs.map((r) => v(r) ?? NaN);
    return rs.length === 1 ? f1(xs[0]) : `${f1(median(xs))} (${xs.map(f1).join('/')})`;
  };
  const row = (label: string, v: (r: ProfileRun) => number | undefined): string => `| ${label} | ${cases.map((c) => cell(c, v)).join(' | ')} |`;
  const lines = [
    `| µs of server CPU per event | ${cases.map(name).join(' | ')} |`,
    `|---|${cases.map(() => '--:').join('|')}|`,
    ...STAGES.map((s) => row(STAGE_LABELS[s], (r) => r.stageUsPerEvent[s])),
    row('JS threads, sum of the above', (r) => r.sampledUsPerEvent),
    row('not sampled: libuv pool (fsync, file I/O, LMDB) + V8 helper threads (concurrent GC, background JIT) = /proc − sampled', (r) => r.notSampledUsPerEvent),
    row('**total (/proc utime+stime of both server processes, profiler threads excluded)**', (r) => r.totalUsPerEvent),
    row('profiler threads (excluded above)', (r) => r.profilerUsPerEvent),
    row('of the total: ingest main thread (the ack thread)', (r) => (r.processes[0]!.mainS * 1e6) / r.events),
    row('of the total: ingest other threads (libuv pool: log writes + fsync; V8 helpers)', (r) => (r.processes[0]!.otherS * 1e6) / r.events),
    row('of the total: engine main thread', (r) => (r.processes[1] ? (r.processes[1].mainS * 1e6) / r.events : undefined)),
    row('of the total: engine worker threads', (r) => (r.processes[1]?.workersS ? (r.processes[1].workersS.reduce((s, x) => s + x, 0) * 1e6) / r.events : undefined)),
    row('of the total: engine other threads (libuv pool: log reads, Parquet/LMDB I/O; V8 helpers)', (r) => (r.processes[1] ? (r.processes[1].otherS * 1e6) / r.events : undefined)),
    row('events in the window (accepted + rejected)', (r) => r.events),
    row('window s: load after warm-up + engine catching up', (r) => r.windowS),
    row('of it, load s (until the last ack)', (r) => r.loadS),
    row('log records per engine range (mean)', (r) => r.rangeRecordsMean),

    row('client (loadgen) CPU, cores', (r) => r.loadgen.clientCpuS / r.windowS),
    row('machine busy cores (all tenants)', (r) => r.machineBusyCores),
    row('load average (1 min) at window end', (r) => r.loadAverage),
    row('client ack p99, ms (whole run)', (r) => r.loadgen.p99),
  ];
  return lines.join('\n');
}

export function formatTop(r: ProfileRun): string {
  const lines = [`Top ${r.top.length} self-time functions, ${r.protocol} at ${r.rate} ev/s, run ${r.run + 1} (µs/event; share of sampled):`, ''];
  lines.push('| # | function (path:line) | process | stage | µs/event | share |', '|--:|---|---|---|--:|--:|');
  r.top.forEach((t, i) => lines.push(`| ${i + 1} | \`${t.fn}\` | ${t.role} | ${t.stage} | ${t.usPerEvent.toFixed(2)} | ${(t.share * 100).toFixed(1)} % |`));
  return lines.join('\n');
}

function parseOptions(argv: string[]): ProfileOptions {
  const { values } = benchArgs(import.meta.url, {
    args: argv,
    options: {
      case: { type: 'string', multiple: true },
      runs: { type: 'string', default: '1' },
      duration: { type: 'string', default: '30s' },
      warmup: { type: 'string', default: '10s' },
      users: { type: 'string', default: '20000' },
      // serve's default on the 2-core machines it was written for (4 = 2 × cores until 2026-12-04: issue 13's table).
      shards: { type: 'string', default: '2' },
      workers: { type: 'string', default: '2' },
      'flush-interval': { type: 'string', default: '5s' },
      'loadgen-workers': { type: 'string', default: '2' },
      connections: { type: 'string', default: '8' },
      'batch-size': { type: 'string', default: '50' },
      interval: { type: 'string', default: '1000' },
      top: { type: 'string', default: '10' },
      json: { type: 'string' },
      report: { type: 'string' },
      keep: { type: 'boolean', default: false },
      'serve-arg': { type: 'string', multiple: true },
      'node-arg': { type: 'string', multiple: true },
    },
  });
  const int = (v: string, flag: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0) throw userError('invalid_option', `${flag} must be a positive integer, got ${JSON.stringify(v)}`);
    return n;
  };
  const cases = (values.case ?? ['http:8000', 'arrow-ws:35000']).map((c) => {
    const [protocol, rate] = c.split(':');
    if (!['http', 'ndjson', 'arrow-ws'].includes(protocol!) || rate === undefined) throw userError('invalid_option', `--case must be <http|ndjson|arrow-ws>:<events per s>, got ${JSON.stringify(c)}`);
    return { protocol: protocol as LoadgenProtocol, rate: int(rate, '--case rate') };
  });
  return {
    cases,
    runs: int(values.runs, '--runs'),
    durationMs: parseDuration(values.duration, '--duration'),
    warmupMs: parseDuration(values.warmup, '--warmup'),
    users: int(values.users, '--users'),
    shards: int(values.shards, '--shards'),
    workers: int(values.workers, '--workers'),
    flushIntervalMs: parseDuration(values['flush-interval'], '--flush-interval'),
    loadgenWorkers: int(values['loadgen-workers'], '--loadgen-workers'),
    connections: int(values.connections, '--connections'),
    batchSize: int(values['batch-size'], '--batch-size'),
    intervalUs: int(values.interval, '--interval'),
    top: int(values.top, '--top'),
    keep: values.keep,
    serveArgs: values['serve-arg'] ?? [],
    nodeArgs: values['node-arg'] ?? [],
    json: values.json,
    report: values.report,
  };
}

function commit(): string {
  try {
    const git = (...args: string[]): string => execFileSync('git', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const head = git('rev-parse', '--short', 'HEAD');
    const dirty = git('status', '--porcelain', '--untracked-files=no') !== '';
    return dirty ? `${head} + uncommitted changes` : head;
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  if (o.report !== undefined) {
    const saved = JSON.parse(readFileSync(o.report, 'utf8')) as { header: string; runs: ProfileRun[] };
    process.stdout.write(`${saved.header}\n\n${formatTable(saved.runs)}\n\n${saved.runs.map(formatTop).join('\n\n')}\n`);
    return;
  }
  const runs: ProfileRun[] = [];
  const header = `sluice profile: ${commit()}, node ${process.version}, ${o.shards} shards, ${o.workers} workers, flush ${o.flushIntervalMs} ms${o.serveArgs.length > 0 ? `, serve ${o.serveArgs.join(' ')}` : ''}${o.nodeArgs.length > 0 ? `, node ${o.nodeArgs.join(' ')}` : ''}, window ${o.durationMs / 1000} s after ${o.warmupMs / 1000} s warm-up, sampling every ${o.intervalUs} µs`;
  process.stderr.write(`${header}\n`);
  // Runs interleave the cases (A B A B …) so a noisy minute does not land on one case only.
  for (let run = 0; run < o.runs; run++) {
    for (const c of o.cases) {
      process.stderr.write(`profile: ${c.protocol} at ${c.rate} ev/s, run ${run + 1}/${o.runs} …\n`);
      const r = await profileRun(o, c.protocol, c.rate, run);
      runs.push(r);
      process.stderr.write(`profile: ${r.events} events in ${r.windowS.toFixed(1)} s, ${r.totalUsPerEvent.toFixed(1)} µs/event (/proc), JS threads ${r.sampledUsPerEvent.toFixed(1)}; ${r.profiles} profiles${r.incompleteProfiles ? ` (${r.incompleteProfiles} not covering the window)` : ''}\n`);
      for (const p of r.processes) {
        const workers = p.workersS?.length === 0 ? 'no workers' : p.workersS === undefined ? (p.estimatedWorkers ? 'workers not found in /proc (estimated from samples)' : 'no workers') : `workers ${p.workersS.map((x) => x.toFixed(2)).join(' + ')} s`;
        process.stderr.write(`  ${p.role} ${p.pid}: total ${p.totalS.toFixed(2)} s CPU, main ${p.mainS.toFixed(2)} s, ${workers}, other threads ${p.otherS.toFixed(2)} s, profiler ${p.profilerS.toFixed(2)} s; ${p.samples} non-idle samples\n`);
      }
      if (o.json) await writeFile(o.json, `${JSON.stringify({ header, options: o, runs }, null, 2)}\n`);
    }
  }
  process.stdout.write(`${header}\n\n${formatTable(runs)}\n\n${runs.map(formatTop).join('\n\n')}\n`);
}

// Only as a script: tests import the helpers above.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
