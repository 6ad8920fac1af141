/**
 * Soak: does the server hold a steady load for minutes with flat memory, bounded checkpoints and
 * bounded file counts — and under 2× overload, refuse (503 + Retry-After) within its memory
 * budget and still commit everything it acknowledged? (issue 14; a benchmark, not a test.)
 *
 *   node --import tsx bench/soak.ts [--rate N | --find 60s] [--fraction 0.8] [--overload 2]
 *     [--duration 10m] [--sample 5s] [--max-memory 3GiB] [--max-backlog 1GiB] [--flush-interval 10s]
 *     [--protocol http] [--workers 2] [--users 20000] [--zipf 1.1] [--malloc-mmap-threshold 128KiB] [--malloc-arena-max 2] [--keep] [--out FILE.json]
 *
 * Starts `sluice serve` (compiled: `npm run build` first; the engine in its own process) in a
 * temp directory. Without --rate it first finds the sustainable committed rate: the load generator
 * closed-loop (as fast as acks return) for --find, the rate is the engine's processed events/s
 * over its second half (ingest acks faster than the engine commits; the backlog waits in the log),
 * then it waits until the engine has committed everything. Then the soak offers
 * `rate × fraction` (or `rate × overload` with --overload) open-loop for --duration, writing the
 * load generator's ground truth (every acknowledged valid event once), and samples every --sample:
 * RSS of ingest and of the engine process — each split into RssAnon / RssFile / RssShmem, every
 * isolate's V8 heap and external memory (a probe preloaded through NODE_OPTIONS), the engine's
 * anonymous memory by mapping (parquet-wasm heaps, each and summed; brk heap; the rest) — checkpoints (count and mean duration since the last
 * sample, from sluice_engine_checkpoint_seconds; the largest bucket reached), the uncommitted log
 * and the engine backlog, 503s by reason and 429s, ingest's memory admission mark, the shards' dedup hot tables (memory that grows by design to a bound: the summary's engineAnonLessDedup is the rest), and Parquet file counts per table (the current
 * hour's partition, the largest partition, all). After the load: waits for the engine to commit
 * everything, then DuckDB compares silver with the truth (missing, duplicated, extra ids; the
 * find phase writes its own truth, so its events count as expected, not as extra).
 * Each sample also records the CPU the server and the load generator (this process: the client,
 * on the same machine) used since the last one, in cores, and the machine's 1-minute load average
 * (the machine is shared): what bounded it. Prints a
 * table per sample and a summary; --out writes everything as JSON (with the engine's memory bounds
 * that --max-memory derives, engineMemoryLimits).
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { benchArgs } from './args.js';
import { DuckDBInstance } from '@duckdb/node-api';
import { parseBytes, parseDuration } from '../common/duration.js';
import { composeServeConfig } from '../cli/config.js';
import { partitionOf, TABLES, type TableName } from '../common/lake-layout.js';
import { runLoadgen, type LoadgenSummary } from '../loadgen/run.js';
import type { LoadgenProtocol } from '../loadgen/options.js';
import { childrenOf, procStats } from './e2e-server.js';
import { metricValue, startServe, type ServeChild } from './serve-child.js';

const { values: flags } = benchArgs(import.meta.url, {
  options: {
    rate: { type: 'string' },
    find: { type: 'string', default: '60s' },
    fraction: { type: 'string', default: '0.8' },
    overload: { type: 'string' },
    duration: { type: 'string', default: '10m' },
    sample: { type: 'string', default: '5s' },
    'max-memory': { type: 'string' },
    'max-backlog': { type: 'string' },
    'flush-interval': { type: 'string', default: '10s' },
    protocol: { type: 'string', default: 'http' },
    workers: { type: 'string', default: '2' },
    keep: { type: 'boolean', default: false },
    /** glibc's MALLOC_MMAP_THRESHOLD_ for the server's processes (bytes): allocations this big or bigger are mmap'd and returned on free. */
    'malloc-mmap-threshold': { type: 'string' },
    /** glibc's MALLOC_ARENA_MAX for the server's processes: at most this many malloc arenas (threads share them; fewer arenas, less retained memory). */
    'malloc-arena-max': { type: 'string' },
    out: { type: 'string' },
    /** Distinct users of the load (zipf-skewed by --zipf; 0 = uniform: with 1 M users, "1 M active users"). */
    users: { type: 'string', default: '20000' },
    zipf: { type: 'string', default: '1.1' },
  },
});
const KEY = 'wk_soak';
const DURATION_MS = parseDuration(flags.duration!, '--duration');
const SAMPLE_MS = parseDuration(flags.sample!, '--sample');
const PROTOCOL = flags.protocol as LoadgenProtocol;
const WORKERS = Number(flags.workers);
const USERS = Number(flags.users);
const ZIPF = Number(flags.zipf);
/** Bound of the wait for the engine to commit everything after a load. */
const DRAIN_MS = 10 * 60_000;
const TABLE_NAMES: TableName[] = ['events', 'bronze_events', 'hourly_metrics', 'sessions', 'daily_metrics', 'late_events', 'dlq'];

/** What a process's RSS is made of (/proc/<pid>/status, MiB): anonymous, file-backed (page cache: LMDB's map, code), shared memory. */
interface RssParts {
  anon: number;
  file: number;
  shmem: number;
}

/**
 * Resident anonymous memory by kind of mapping, MiB: WebAssembly memories (parquet-wasm's heaps,
 * one per isolate that encodes or decodes: a read-write mapping followed by its reservation of
 * ≥ 1 GiB; they grow to the biggest call and never shrink), the brk heap and the other anonymous
 * mappings (malloc's per-thread arenas, V8's heap pages, LMDB's and DuckDB's native allocations).
 */
interface AnonMaps {
  wasm: number;
  wasmCount: number;
  /** Each WebAssembly memory's resident anonymous MiB, in address order (which heap is which thread's is not known). */
  wasmHeaps: number[];
  brk: number;
  other: number;
}

/** V8 heaps of one process (MiB), from the heap probe: the main thread's, and the worker threads' summed. */
interface Heaps {
  mainUsed: number;
  mainTotal: number;
  workersUsed: number;
  workersTotal: number;
  workers: number;
  /** Off-heap memory V8 knows of (ArrayBuffers, wasm memories, …), all isolates summed. */
  external: number;
}

interface Sample {
  t: number;
  rssIngestMiB: number;
  rssEngineMiB: number;
  rssTotalMiB: number;
  ingest: RssParts;
  engine: RssParts;
  ingestHeap: Heaps | undefined;
  engineHeap: Heaps | undefined;
  /** The engine process's anonymous memory by kind of mapping (/proc/<pid>/smaps). */
  engineMaps: AnonMaps;
  /** Bytes of the data directory (the log's segments and LMDB's files), MiB. */
  dataMiB: number;
  ackedPerS: number;
  processedPerS: number;
  uncommittedMiB: number;
  backlogEvents: number;
  checkpoints: number;
  checkpointMeanS: number;
  /** Upper bound of the largest histogram bucket a checkpoint since the last sample fell in (Infinity past 30 s). */
  checkpointMaxLeS: number;
  refused503: Record<string, number>;
  refused429: number;
  /** Ingest's memory admission mark (sluice_memory_admission_mark_bytes), MiB: the budget, or memory at rest + ¼ budget when the rest is over it; NaN without the metric. */
  admissionMarkMiB: number;
  /** The shards' dedup hot tables after their last checkpoints, MiB (sluice_engine_dedup_hot_bytes summed): engine memory that grows with traffic by design, to a bound; NaN without the metric. */
  dedupHotMiB: number;
  /** The machine's 1-minute load average when sampled (shared machine: what else ran). */
  load1: number;
  /** CPU since the last sample, in cores: the server (ingest + engine processes, every thread), of it the engine process, and this process (the load generator: the client). What bounded the sample. */
  cores: { server: number; engine: number; client: number };
  /** Parquet files per table: current hour's (or day's) partition / largest partition / all. */
  files: Record<string, { current: number; largest: number; total: number; partitions: number }>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const mib = (b: number): number => Math.round(b / 2 ** 20);
const round2 = (x: number): number => Math.round(x * 100) / 100;

/** first / max / last of the samples that have the figure (NaN: not known then). */
const spread = (all: number[]): { first: number | undefined; max: number; last: number | undefined } => {
  const xs = all.filter((x) => !Number.isNaN(x));
  return { first: xs[0], max: Math.max(...xs), last: xs.at(-1) };
};

function rssParts(pids: number[]): RssParts {
  const out = { anon: 0, file: 0, shmem: 0 };
  for (const pid of pids) {
    let text = '';
    try {
      text = readFileSync(`/proc/${pid}/status`, 'utf8');
    } catch {
      continue;
    }
    const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0) * 1024;
    out.anon += kb('RssAnon');
    out.file += kb('RssFile');
    out.shmem += kb('RssShmem');
  }
  return { anon: mib(out.anon), file: mib(out.file), shmem: mib(out.shmem) };
}

function anonMaps(pids: number[]): AnonMaps {
  const out = { wasm: 0, wasmCount: 0, brk: 0, other: 0 };
  const heaps: number[] = [];
  for (const pid of pids) {
    let text = '';
    try {
      text = readFileSync(`/proc/${pid}/smaps`, 'utf8');
    } catch {
      continue;
    }
    const maps: Array<{ start: number; end: number; perm: string; name: string; anon: number }> = [];
    for (const block of text.split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/)) {
      const head = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+ *(.*)$/m.exec(block);
      if (!head) continue;
      const anon = Number(/^Anonymous:\s+(\d+) kB/m.exec(block)?.[1] ?? 0) * 1024;
      maps.push({ start: parseInt(head[1]!, 16), end: parseInt(head[2]!, 16), perm: head[3]!, name: head[4]!.trim(), anon });
    }
    maps.forEach((m, i) => {
      if (m.anon === 0) return;
      const next = maps[i + 1];
      if (m.name === '[heap]') out.brk += m.anon;
      else if (m.perm.startsWith('rw') && m.name === '' && next !== undefined && next.start === m.end && next.perm.startsWith('---') && next.end - next.start >= 2 ** 30) {
        out.wasm += m.anon;
        out.wasmCount++;
        heaps.push(mib(m.anon));
      } else out.other += m.anon;
    });
  }
  return { wasm: mib(out.wasm), wasmCount: out.wasmCount, wasmHeaps: heaps, brk: mib(out.brk), other: mib(out.other) };
}

/**
 * The heap probe: preloaded into every isolate of the server (NODE_OPTIONS --import, so the
 * engine process and its shard workers get it too), it writes its isolate's V8 heap figures to
 * SOAK_HEAP_DIR every second. Bench-only: the server exports no per-isolate heap figures.
 */
const HEAP_PROBE = `import { getHeapStatistics } from 'node:v8';
import { isMainThread, threadId } from 'node:worker_threads';
import { renameSync, writeFileSync } from 'node:fs';
const dir = process.env.SOAK_HEAP_DIR;
if (dir) {
  const file = dir + '/heap-' + process.pid + '-' + threadId + '.json';
  const write = () => {
    const h = getHeapStatistics();
    writeFileSync(file + '.tmp', JSON.stringify({ pid: process.pid, main: isMainThread, at: Date.now(), used: h.used_heap_size, total: h.total_heap_size, limit: h.heap_size_limit, external: h.external_memory }));
    renameSync(file + '.tmp', file);
  };
  write();
  setInterval(write, 1000).unref();
}
`;

function heapsOf(dir: string, pids: number[]): Heaps | undefined {
  const out: Heaps = { mainUsed: 0, mainTotal: 0, workersUsed: 0, workersTotal: 0, workers: 0, external: 0 };
  let found = false;
  for (const name of existsSync(dir) ? readdirSync(dir) : []) {
    const m = /^heap-(\d+)-\d+\.json$/.exec(name);
    if (!m || !pids.includes(Number(m[1]))) continue;
    let h: { main: boolean; at: number; used: number; total: number; external: number };
    try {
      h = JSON.parse(readFileSync(join(dir, name), 'utf8')) as typeof h;
    } catch {
      continue;
    }
    // A worker busy in one long task writes nothing meanwhile: its last figure stands (the pool's workers live as long as the process).
    if (Date.now() - h.at > 120_000) continue;
    found = true;
    if (h.main) {
      out.mainUsed += h.used;
      out.mainTotal += h.total;
    } else {
      out.workersUsed += h.used;
      out.workersTotal += h.total;
      out.workers++;
    }
    out.external += h.external;
  }
  if (!found) return undefined;
  return { mainUsed: mib(out.mainUsed), mainTotal: mib(out.mainTotal), workersUsed: mib(out.workersUsed), workersTotal: mib(out.workersTotal), workers: out.workers, external: mib(out.external) };
}

function bytesUnder(dir: string): number {
  if (!existsSync(dir)) return 0;
  let total = 0;
  for (const name of readdirSync(dir)) {
    try {
      const st = statSync(join(dir, name));
      total += st.isDirectory() ? bytesUnder(join(dir, name)) : st.blocks * 512;
    } catch {
      // deleted meanwhile
    }
  }
  return total;
}

async function scrape(server: ServeChild): Promise<string> {
  try {
    return await (await fetch(`${server.url}/metrics`, { signal: AbortSignal.timeout(30_000) })).text();
  } catch {
    return '';
  }
}

/** Histogram buckets `le → cumulative count` of a metric. */
function buckets(text: string, name: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const m of text.matchAll(new RegExp(`^${name}_bucket\\{le="([^"]+)"\\} (\\S+)$`, 'gm'))) out.set(m[1] === '+Inf' ? Infinity : Number(m[1]), Number(m[2]));
  return out;
}

/** Sum of the samples of `name` whose labels contain `labels` (all of them when ''); 0 when none. */
function sumOf(text: string, name: string, labels = ''): number {
  let total = 0;
  for (const line of text.split('\n')) if (line.startsWith(`${name}{`) && line.includes(labels)) total += Number(line.slice(line.lastIndexOf(' ') + 1));
  if (total > 0 || labels !== '') return total;
  const bare = metricValue(text, name);
  return Number.isNaN(bare) ? 0 : bare;
}

function walk(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    let st;
    try {
      st = statSync(p);
    } catch {
      continue; // compaction deleted it meanwhile
    }
    if (st.isDirectory()) out.push(...walk(p));
    else if (name.endsWith('.parquet')) out.push(p);
  }
  return out;
}

function fileCounts(lake: string): Sample['files'] {
  const out: Sample['files'] = {};
  const now = Date.now();
  for (const t of TABLE_NAMES) {
    const spec = TABLES[t];
    const root = join(lake, spec.prefix);
    const byPartition = new Map<string, number>();
    for (const f of walk(root)) {
      const part = f.slice(root.length + 1, f.lastIndexOf('/'));
      byPartition.set(part, (byPartition.get(part) ?? 0) + 1);
    }
    out[t] = {
      current: byPartition.get(partitionOf(now, spec.granularity)) ?? 0,
      largest: Math.max(0, ...byPartition.values()),
      total: [...byPartition.values()].reduce((a, b) => a + b, 0),
      partitions: byPartition.size,
    };
  }
  return out;
}

/** Samples every SAMPLE_MS until `until` resolves. */
async function sampleWhile(server: ServeChild, root: string, until: Promise<unknown>, samples: Sample[], t0: number): Promise<void> {
  const lake = join(root, 'lake');
  let done = false;
  void until.finally(() => (done = true));
  let prev = await scrape(server);
  let prevAt = performance.now();
  let prevCpu = procStats(server.pid);
  let prevClient = process.cpuUsage();
  while (!done) {
    await Promise.race([sleep(SAMPLE_MS), until.catch(() => undefined)]);
    const text = await scrape(server);
    const at = performance.now();
    const dt = (at - prevAt) / 1000;
    const rss = server.rss();
    const enginePids = childrenOf(server.pid);
    const cp = buckets(text, 'sluice_engine_checkpoint_seconds');
    const cpPrev = buckets(prev, 'sluice_engine_checkpoint_seconds');
    const count = metricValue(text, 'sluice_engine_checkpoint_seconds_count') - (metricValue(prev, 'sluice_engine_checkpoint_seconds_count') || 0);
    const sum = metricValue(text, 'sluice_engine_checkpoint_seconds_sum') - (metricValue(prev, 'sluice_engine_checkpoint_seconds_sum') || 0);
    let maxLe = 0;
    let below = 0;
    for (const [le, n] of [...cp].sort((a, b) => a[0] - b[0])) {
      const grew = n - (cpPrev.get(le) ?? 0);
      if (grew > below) maxLe = le;
      below = grew;
    }
    const cpu = procStats(server.pid);
    const client = process.cpuUsage();
    const cores = {
      server: cpu && prevCpu ? round2((cpu.cpuS - prevCpu.cpuS) / dt) : NaN,
      engine: cpu && prevCpu ? round2((cpu.engineCpuS - prevCpu.engineCpuS) / dt) : NaN,
      client: round2((client.user + client.system - prevClient.user - prevClient.system) / 1e6 / dt),
    };
    prevCpu = cpu;
    prevClient = client;
    const reasons: Record<string, number> = {};
    for (const r of ['uncommitted', 'backlog', 'lag', 'memory', 'log']) {
      const d = sumOf(text, 'sluice_ingest_backpressure_total', `reason="${r}"`) - sumOf(prev, 'sluice_ingest_backpressure_total', `reason="${r}"`);
      if (d > 0) reasons[r] = d;
    }
    const s: Sample = {
      t: Math.round((Date.now() - t0) / 1000),
      rssIngestMiB: mib(rss.ingest),
      rssEngineMiB: mib(rss.engine),
      rssTotalMiB: mib(rss.ingest + rss.engine),
      ingest: rssParts([server.pid]),
      engine: rssParts(enginePids),
      ingestHeap: heapsOf(join(root, 'heap'), [server.pid]),
      engineHeap: heapsOf(join(root, 'heap'), enginePids),
      engineMaps: anonMaps(enginePids),
      dataMiB: mib(bytesUnder(join(root, 'data'))),
      ackedPerS: Math.round((sumOf(text, 'sluice_ingest_events_total') - sumOf(prev, 'sluice_ingest_events_total')) / dt),
      processedPerS: Math.round((metricValue(text, 'sluice_engine_events_processed_total') - (metricValue(prev, 'sluice_engine_events_processed_total') || 0)) / dt),
      uncommittedMiB: Math.round((metricValue(text, 'sluice_log_uncommitted_bytes') / 2 ** 20) * 10) / 10,
      backlogEvents: metricValue(text, 'sluice_engine_queue_depth_events'),
      checkpoints: count,
      checkpointMeanS: count > 0 ? Math.round((sum / count) * 100) / 100 : 0,
      checkpointMaxLeS: count > 0 ? maxLe : 0,
      refused503: reasons,
      refused429: (metricValue(text, 'sluice_ingest_rate_limited_total') || 0) - (metricValue(prev, 'sluice_ingest_rate_limited_total') || 0),
      admissionMarkMiB: mib(metricValue(text, 'sluice_memory_admission_mark_bytes')),
      dedupHotMiB: text.includes('sluice_engine_dedup_hot_bytes{') ? mib(sumOf(text, 'sluice_engine_dedup_hot_bytes')) : NaN,
      files: fileCounts(lake),
      load1: round2(loadavg()[0]!),
      cores,
    };
    samples.push(s);
    const f = s.files;
    const eh = s.engineHeap;
    process.stdout.write(
      `${String(s.t).padStart(5)}s rss ${String(s.rssIngestMiB).padStart(5)}+${String(s.rssEngineMiB).padStart(5)}=${String(s.rssTotalMiB).padStart(5)} MiB (anon/file ingest ${s.ingest.anon}/${s.ingest.file} engine ${s.engine.anon}/${s.engine.file}; engine heap main ${eh?.mainUsed}/${eh?.mainTotal} workers×${eh?.workers} ${eh?.workersUsed}/${eh?.workersTotal} ext ${eh?.external}; maps wasm×${s.engineMaps.wasmCount} ${s.engineMaps.wasm} [${s.engineMaps.wasmHeaps.join(',')}] brk ${s.engineMaps.brk} other ${s.engineMaps.other}; data ${s.dataMiB})  ack ${String(s.ackedPerS).padStart(6)}/s  proc ${String(s.processedPerS).padStart(6)}/s  uncommitted ${String(s.uncommittedMiB).padStart(6)} MiB  cp ${s.checkpoints}× mean ${s.checkpointMeanS}s ≤${s.checkpointMaxLeS}s  503 ${JSON.stringify(s.refused503)} mark ${s.admissionMarkMiB} dedup ${s.dedupHotMiB}  files events ${f.events!.current}/${f.events!.largest}/${f.events!.total} bronze ${f.bronze_events!.current}/${f.bronze_events!.largest} hourly ${f.hourly_metrics!.current}/${f.hourly_metrics!.largest}  cores server ${cores.server} (engine ${cores.engine}) client ${cores.client}  load ${s.load1}\n`,
    );
    prev = text;
    prevAt = at;
  }
}

/** Waits until the engine has committed everything acknowledged (its truncations reported every record: uncommitted log 0). */
async function drain(server: ServeChild): Promise<number> {
  const started = Date.now();
  while (Date.now() - started < DRAIN_MS) {
    const text = await scrape(server);
    if (metricValue(text, 'sluice_log_uncommitted_bytes') === 0) return (Date.now() - started) / 1000;
    await sleep(1000);
  }
  return NaN;
}

async function main(): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), 'sluice-soak-'));
  const lake = join(root, 'lake');
  const args = ['--data', join(root, 'data'), '--lake', lake, '--write-key', KEY, '--flush-interval', flags['flush-interval']!];
  if (flags['max-memory']) args.push('--max-memory', flags['max-memory']);
  if (flags['max-backlog']) args.push('--max-backlog', flags['max-backlog']);
  const heapDir = join(root, 'heap');
  mkdirSync(heapDir);
  writeFileSync(join(root, 'heap-probe.mjs'), HEAP_PROBE);
  // The serve child and every process and worker it starts inherit the probe (and a heap snapshot on SIGUSR2, into root).
  const nodeOptions = process.env.NODE_OPTIONS;
  process.env.NODE_OPTIONS = `${nodeOptions ?? ''} --import ${pathToFileURL(join(root, 'heap-probe.mjs')).href} --heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${root}`.trim();
  process.env.SOAK_HEAP_DIR = heapDir;
  if (flags['malloc-mmap-threshold']) process.env.MALLOC_MMAP_THRESHOLD_ = String(parseBytes(flags['malloc-mmap-threshold'], '--malloc-mmap-threshold'));
  if (flags['malloc-arena-max']) {
    const arenas = Number(flags['malloc-arena-max']);
    if (!Number.isInteger(arenas) || arenas < 1) throw new Error(`--malloc-arena-max must be a positive integer, got ${flags['malloc-arena-max']}`);
    process.env.MALLOC_ARENA_MAX = String(arenas);
  }
  const server = await startServe(args, join(root, 'serve.log')).finally(() => {
    delete process.env.MALLOC_MMAP_THRESHOLD_;
    delete process.env.MALLOC_ARENA_MAX;
    if (nodeOptions === undefined) delete process.env.NODE_OPTIONS;
    else process.env.NODE_OPTIONS = nodeOptions;
  });
  process.stderr.write(`soak: sluice serve ${args.join(' ')} (data in ${root})\n`);
  const t0 = Date.now();
  // The engine's bounds as the server composes them from these flags (no environment, no config file).
  const e = composeServeConfig({ maxMemory: flags['max-memory'] }, {}).engine;
  const engineBounds = {
    shards: e.shards,
    workers: e.workers,
    maxUncommittedBytesPerShard: e.maxUncommittedBytesPerShard,
    dedupHotCapacity: e.dedupHotCapacity,
    encodeChunkBytes: e.encodeChunkBytes,
    maxBytesPerParquetCall: e.maxBytesPerParquetCall,
  };
  const out: Record<string, unknown> = {
    args,
    protocol: PROTOCOL,
    workers: WORKERS,
    durationMs: DURATION_MS,
    sampleMs: SAMPLE_MS,
    malloc: { mmapThreshold: flags['malloc-mmap-threshold'], arenaMax: flags['malloc-arena-max'] },
    engineBounds,
    loadBefore: loadavg(),
  };
  process.stderr.write(`soak: engine bounds ${JSON.stringify(engineBounds)}\n`);
  let failed = false;
  try {
    let sustainable = flags.rate !== undefined ? Number(flags.rate) : NaN;
    const findTruth = join(root, 'find-truth.parquet');
    if (Number.isNaN(sustainable)) {
      const findMs = parseDuration(flags.find!, '--find');
      const samples: Sample[] = [];
      // Its events are in silver too: its own ground truth lets the check below count them, not call them extra.
      const run = runLoadgen({ url: server.url, writeKey: KEY, protocol: PROTOCOL, durationMs: findMs, users: USERS, zipf: ZIPF, seed: 1, workers: WORKERS, connections: 8, batchSize: 100, maxRetries: 100, truth: findTruth });
      await sampleWhile(server, root, run, samples, t0);
      const max = await run;
      const half = samples.slice(Math.floor(samples.length / 2));
      // Committed, not caught up: a sample where the engine processed more than ingest acked is the
      // engine draining a backlog, which it could not keep up with, so each sample counts the lower of the two.
      sustainable = Math.round(half.reduce((a, s) => a + Math.min(s.processedPerS, s.ackedPerS), 0) / Math.max(1, half.length));
      const drainS = await drain(server);
      out.find = { durationMs: findMs, ackedPerS: Math.round(max.eventsPerSecond), processedPerS: sustainable, drainS, samples };
      process.stdout.write(`find: closed loop acked ${Math.round(max.eventsPerSecond)} ev/s, engine processed ${sustainable} ev/s over the second half (the sustainable committed rate); drained in ${drainS} s\n`);
    }
    const factor = flags.overload !== undefined ? Number(flags.overload) : Number(flags.fraction);
    const rate = Math.round(sustainable * factor);
    out.sustainable = sustainable;
    out.offered = rate;
    process.stdout.write(`soak: offering ${rate} ev/s (${factor} × ${sustainable}) for ${DURATION_MS / 1000} s, ${PROTOCOL}, ${WORKERS} loadgen workers\n`);
    const truth = join(root, 'truth.parquet');
    const samples: Sample[] = [];
    const started = Date.now();
    const run = runLoadgen({ url: server.url, writeKey: KEY, protocol: PROTOCOL, rate, durationMs: DURATION_MS, users: USERS, zipf: ZIPF, seed: 2, workers: WORKERS, connections: 16, batchSize: 100, maxRetries: 1000, truth });
    await sampleWhile(server, root, run, samples, started);
    const summary: LoadgenSummary = await run;
    const drainS = await drain(server);
    // Stopped before reading the lake, so that no compaction rewrites files under DuckDB (everything acknowledged was committed above).
    out.exitCode = await server.stop(300_000);
    process.stdout.write(`load done: ${JSON.stringify({ sent: summary.sent, acked: summary.acked, rejected: summary.rejected, retried: summary.retried, failed: summary.failed, throttled: summary.throttled, eventsPerSecond: Math.round(summary.eventsPerSecond), latencyMs: summary.latencyMs })}; committed everything in ${drainS} s after\n`);
    // Silver against the truth (every acknowledged valid event, once), the find phase's included when it ran.
    const db = await DuckDBInstance.create(':memory:');
    const conn = await db.connect();
    const silver = `read_parquet('${join(lake, TABLES.events.prefix)}/**/*.parquet', hive_partitioning = false, union_by_name = true)`;
    const truths = out.find ? `read_parquet(['${findTruth}', '${truth}'])` : `'${truth}'`;
    const one = async (sql: string): Promise<number> => Number((await conn.runAndReadAll(sql)).getRowObjectsJS()[0]!.n as bigint);
    const check = {
      truthRows: await one(`SELECT count(*) AS n FROM ${truths}`),
      ...(out.find ? { findTruthRows: await one(`SELECT count(*) AS n FROM '${findTruth}'`) } : {}),
      silverRows: await one(`SELECT count(*) AS n FROM ${silver}`),
      missing: await one(`SELECT count(*) AS n FROM (SELECT event_id FROM ${truths} EXCEPT SELECT event_id FROM ${silver})`),
      duplicated: await one(`SELECT count(*) - count(DISTINCT event_id) AS n FROM ${silver}`),
      extra: await one(`SELECT count(*) AS n FROM (SELECT event_id FROM ${silver} EXCEPT SELECT event_id FROM ${truths})`),
    };
    conn.closeSync();
    db.closeSync();
    process.stdout.write(`silver vs truth: ${JSON.stringify(check)}\n`);
    const rss = samples.map((s) => s.rssTotalMiB);
    const cps = samples.filter((s) => s.checkpoints > 0);
    const refused = samples.reduce((a, s) => a + Object.values(s.refused503).reduce((x, y) => x + y, 0), 0);
    const summaryOut = {
      rssTotalMiB: { first: rss[0], min: Math.min(...rss), max: Math.max(...rss), last: rss.at(-1) },
      rssIngestMaxMiB: Math.max(...samples.map((s) => s.rssIngestMiB)),
      rssEngineMaxMiB: Math.max(...samples.map((s) => s.rssEngineMiB)),
      // first / max / last (MiB) of what each process's RSS is made of, and of its V8 heaps.
      parts: {
        ingestAnon: spread(samples.map((s) => s.ingest.anon)),
        ingestFile: spread(samples.map((s) => s.ingest.file)),
        ingestHeapUsed: spread(samples.map((s) => s.ingestHeap?.mainUsed ?? NaN)),
        engineAnon: spread(samples.map((s) => s.engine.anon)),
        engineFile: spread(samples.map((s) => s.engine.file)),
        engineShmem: spread(samples.map((s) => s.engine.shmem)),
        engineMainHeapUsed: spread(samples.map((s) => s.engineHeap?.mainUsed ?? NaN)),
        engineWorkersHeapUsed: spread(samples.map((s) => s.engineHeap?.workersUsed ?? NaN)),
        engineExternal: spread(samples.map((s) => s.engineHeap?.external ?? NaN)),
        engineWasm: spread(samples.map((s) => s.engineMaps.wasm)),
        engineBrk: spread(samples.map((s) => s.engineMaps.brk)),
        engineOtherAnon: spread(samples.map((s) => s.engineMaps.other)),
        engineDedupHot: spread(samples.map((s) => s.dedupHotMiB)),
        // What is left when the dedup table (growing by design to its bound) is taken out: should be flat.
        engineAnonLessDedup: spread(samples.map((s) => s.engine.anon - s.dedupHotMiB)),
        dataMiB: spread(samples.map((s) => s.dataMiB)),
      },
      checkpointMeanS: { min: Math.min(...cps.map((s) => s.checkpointMeanS)), max: Math.max(...cps.map((s) => s.checkpointMeanS)) },
      checkpointMaxLeS: Math.max(...cps.map((s) => s.checkpointMaxLeS)),
      uncommittedMaxMiB: Math.max(...samples.map((s) => s.uncommittedMiB)),
      refused503: refused,
      refused429: samples.reduce((a, s) => a + s.refused429, 0),
      filesEnd: samples.at(-1)?.files,
      filesLargestMax: Object.fromEntries(TABLE_NAMES.map((t) => [t, Math.max(...samples.map((s) => s.files[t]!.largest))])),
    };
    process.stdout.write(`summary: ${JSON.stringify(summaryOut)}\n`);
    Object.assign(out, { loadgen: summary, drainS, check, summary: summaryOut, samples });
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    if (out.exitCode === undefined) out.exitCode = await server.stop(300_000);
    if (flags.out) writeFileSync(flags.out, `${JSON.stringify(out, null, 2)}\n`);
    if (!flags.keep && !failed) rmSync(root, { recursive: true, force: true });
  }
}

await main();
