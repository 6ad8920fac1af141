/**
 * Erasure cost against lake size (issue 12: "cost proportional to the user's data, not to the
 * lake"). Builds two lakes with the real server — `sluice serve` (compiled, bin/sluice.js) driven
 * by the project's load generator over Arrow WS, at max or (`--rate R`) open loop at R events/s, a
 * rate the engine sustains (at max a 10 M build outran the engine's checkpoints: 146 s each, 4.9 GB
 * RSS, and serve's close timeout killed it) — one of `--events` and one `--ratio`
 * times smaller (same event-time span, `--ratio` times fewer users, so a typical user holds about
 * as many events in both), stops the server, then times the offline `sluice erase` of one typical
 * user per run, alternating small and large lake, a different user each run. After each erase it
 * checks with DuckDB over every view that the erased users' rows are gone and every other user's
 * counts are unchanged, and that in the gold windows of their events every cell changed exactly as
 * its DuckDB recomputation from silver did (gold is compared to silver before and after the erase:
 * too-late events not yet reconciled make them differ before), and exits 1 on any difference. Per erase it also reports how the job
 * corrected each gold window (engine/erasure-job.ts: subtracted, recomputed from silver, or left
 * to correct once merged), from the job file.
 *
 *   node --import tsx bench/erasure-lake.ts [--events N] [--users U] [--shards S] [--runs R]
 *     [--ratio 10] [--span-hours 20] [--rate EV_PER_S] [--work DIR] [--reuse] [--compact] [--keep] [--out FILE.json]
 *   node --import tsx bench/erasure-lake.ts --lake DIR --data DIR --reuse [--shards S] [--runs R]
 *
 * `--work DIR --reuse` keeps the lakes under DIR/events-<N>/ and builds only the missing ones;
 * `--lake/--data` times erasures on one existing lake (no small lake, no build). Erased users stay
 * erased, so a reused lake loses R users per run of this script (a few hundred events of millions).
 * `--compact` runs `sluice compact --older-than 1s` over each lake first: every partition merged
 * across shards into `part-c…` files, the steady state of a lake older than the current hour.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './args.js';
import { openLakeQuery } from '../analytics/query.js';
import { shardOfUser } from '../common/hash.js';
import { goldMetricsSql } from '../engine/gold-sql.js';
import { runLoadgen } from '../loadgen/run.js';
import { REALISTIC_MIX } from '../loadgen/options.js';
import { BenchServer } from './e2e-server.js';

const HOUR = 3_600_000;
const WRITE_KEY = 'wk_erasure_bench';
const ROOT = fileURLToPath(new URL('..', import.meta.url));
/** Bounds: the load of one lake, the server's drain, one erase. */
const MAX_LOAD_MS = 40 * 60_000;
const MAX_DRAIN_MS = 15 * 60_000;
const MAX_ERASE_MS = 30 * 60_000;
/** Tables whose rows carry a user id, counted per user before and after every erase. */
const USER_TABLES = ['events', 'bronze_events', 'late_events', 'sessions'] as const;

interface LakeDirs {
  name: string;
  lake: string;
  data: string;
}

interface BuildInfo {
  eventsSent: number;
  users: number;
  shards: number;
  spanHours: number;
  acked: number;
  rejected: number;
  failed: number;
  loadS: number;
  ackedPerS: number;
  drainS: number;
  /** Target rate of the load (events/s), or undefined: closed loop at max. */
  rate?: number;
}

interface LakeStats {
  files: number;
  bytes: number;
  compactedFiles: number;
  shardFiles: number;
  dataBytes: number;
  byTable: Record<string, { files: number; bytes: number }>;
}

/** Per table, per user id: rows. */
type Counts = Record<(typeof USER_TABLES)[number], Map<string, number>>;

interface Baseline {
  counts: Counts;
  /** dlq rows (they are raw payloads, matched by the id inside). */
  dlqRows: number;
  silverRows: number;
}

interface EraseRun {
  lake: string;
  round: number;
  user: string;
  shard: number;
  userEvents: number;
  userHours: number;
  wallS: number;
  cpuUserS: number;
  cpuSysS: number;
  maxRssMB: number;
  /** Seconds from the command's start to the first time each job phase was seen (polled every 100 ms). */
  phases: Record<string, number>;
  layers: Record<string, { files: number; rowsRemoved: number }>;
  filesRewritten: number;
  /** Bytes (before the erase) of the files rewritten or deleted, gold windows included, and the lake's bytes then. */
  bytesRewritten: number;
  lakeBytes: number;
  rowsRemoved: number;
  verifyS: number;
  /** Gold windows the job subtracted from, recomputed from silver, and left to correct once merged. */
  gold: { subtracted: number; recomputed: number; waiting: number };
  /** Of the windows it corrected: cells (of all of them) differing from a DuckDB recomputation from silver after the erase. */
  goldCellsChecked: number;
  goldCellsDiffering: number;
  /** Cells of the user's windows in which gold changed exactly as its recomputation from silver did (all of them, or the bench fails). */
  goldCellsChangedAsSilver: number;
}

function parse() {
  const { values } = benchArgs(import.meta.url, {
    options: {
      events: { type: 'string', default: '10000000' },
      users: { type: 'string' },
      shards: { type: 'string', default: '4' },
      runs: { type: 'string', default: '3' },
      ratio: { type: 'string', default: '10' },
      'span-hours': { type: 'string', default: '20' },
      rate: { type: 'string' },
      work: { type: 'string' },
      lake: { type: 'string' },
      data: { type: 'string' },
      reuse: { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
      compact: { type: 'boolean', default: false },
      out: { type: 'string' },
    },
  });
  const int = (name: string, v: string | undefined, min: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer ≥ ${min}, got ${v}`);
    return n;
  };
  const events = int('events', values.events, 1000);
  const o = {
    events,
    users: values.users === undefined ? Math.max(100, Math.round(events / 100)) : int('users', values.users, 1),
    shards: int('shards', values.shards, 1),
    runs: int('runs', values.runs, 1),
    ratio: int('ratio', values.ratio, 0),
    spanHours: int('span-hours', values['span-hours'], 1),
    rate: values.rate === undefined ? undefined : int('rate', values.rate, 1),
    work: resolve(values.work ?? join(tmpdir(), `sluice-erasure-bench-${process.pid}`)),
    lake: values.lake === undefined ? undefined : resolve(values.lake),
    data: values.data === undefined ? undefined : resolve(values.data),
    reuse: values.reuse!,
    compact: values.compact!,
    keep: values.keep! || values.work !== undefined || values.lake !== undefined,
    out: values.out,
  };
  if ((o.lake === undefined) !== (o.data === undefined)) throw new Error('--lake and --data go together');
  if (o.lake !== undefined && !o.reuse) throw new Error('--lake/--data name an existing lake: add --reuse');
  if (o.ratio === 1) throw new Error('--ratio must be 0 (no small lake) or ≥ 2');
  return o;
}

type Options = ReturnType<typeof parse>;

const log = (msg: string): void => void process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${msg}\n`);

/** Builds a lake with the real server and load generator; returns what the load did. */
async function buildLake(dirs: LakeDirs, events: number, users: number, o: Options): Promise<BuildInfo> {
  rmSync(dirs.lake, { recursive: true, force: true });
  rmSync(dirs.data, { recursive: true, force: true });
  mkdirSync(join(dirs.lake, '..'), { recursive: true });
  const server = await BenchServer.start({ dataDir: dirs.data, lake: dirs.lake, writeKey: WRITE_KEY, shards: o.shards, workers: 2, flushIntervalMs: 10_000, logFile: join(dirs.lake, '..', 'serve.log'), startTimeoutMs: 120_000 });
  try {
    // Event time: `spanHours` hours ending 4 h ago, whatever the event count (a bigger lake is denser).
    const startTime = Math.floor((Date.now() - (o.spanHours + 4) * HOUR) / HOUR) * HOUR;
    const started = performance.now();
    let lastLog = 0;
    // Whether the engine keeps up: what it has processed and committed, next to what was acked.
    const lag = setInterval(() => {
      void engineCounts(server.url).then(
        (c) => log(`${dirs.name}: engine processed ${c.processed}, committed ${c.committed}`),
        () => undefined,
      );
    }, 30_000);
    const s = await runLoadgen({
      url: server.url,
      writeKey: WRITE_KEY,
      protocol: 'arrow-ws',
      events,
      durationMs: MAX_LOAD_MS,
      users,
      seed: 12,
      workers: 1,
      connections: 4,
      batchSize: 1000,
      pipeline: 4,
      ...REALISTIC_MIX,
      startTime,
      stepMs: (o.spanHours * HOUR) / events,
      ...(o.rate === undefined ? {} : { rate: o.rate }),
      maxRetries: 200,
      onProgress: (p) => {
        if (p.elapsedS - lastLog < 15) return;
        lastLog = p.elapsedS;
        log(`${dirs.name}: ${p.elapsedS.toFixed(0)} s, acked ${p.acked}, ${Math.round(p.rate)} ev/s, retried ${p.retried}, failed ${p.failed}`);
      },
    });
    clearInterval(lag);
    const loadS = (performance.now() - started) / 1000;
    log(`${dirs.name}: load done, acked ${s.acked} + rejected ${s.rejected} in ${loadS.toFixed(0)} s; draining`);
    const drainStart = performance.now();
    // serve kills an engine that has not drained 2 min after SIGTERM (the rest stays in the log):
    // on a loaded machine the backlog is larger, so wait until the engine has processed it first.
    await waitForEngine(server.url, s.acked, drainStart + MAX_DRAIN_MS);
    await server.stop(MAX_DRAIN_MS);
    const info: BuildInfo = { eventsSent: s.sent, users, shards: o.shards, spanHours: o.spanHours, acked: s.acked, rejected: s.rejected, failed: s.failed, loadS, ackedPerS: s.acked / loadS, drainS: (performance.now() - drainStart) / 1000, rate: o.rate };
    writeFileSync(join(dirs.lake, '..', 'build.json'), `${JSON.stringify(info, null, 1)}\n`);
    return info;
  } catch (err) {
    server.kill();
    throw err;
  }
}

/**
 * Polls /metrics until the engine has processed and committed every acknowledged event (bounded by `deadline`,
 * a performance.now() time). Not sluice_engine_queue_depth_events: it kept its last value (430 778)
 * after the engine had processed everything.
 */
async function engineCounts(url: string): Promise<{ processed: number; committed: number }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return {
    processed: Number(/^sluice_engine_events_processed_total (\S+)$/m.exec(text)?.[1] ?? NaN),
    committed: Number(/^sluice_engine_events_committed_total (\S+)$/m.exec(text)?.[1] ?? NaN),
  };
}

async function waitForEngine(url: string, acked: number, deadline: number): Promise<void> {
  for (;;) {
    const { processed, committed } = await engineCounts(url);
    // Committed too: serve SIGKILLs an engine whose close (the final checkpoint) takes over 2 min,
    // and a 3 M-event backlog's final checkpoint did (exit 1, the lake short of the log's events).
    if (processed >= acked && committed >= processed) return;
    if (performance.now() > deadline) throw new Error(`the engine processed ${processed} and committed ${committed} of ${acked} events within ${MAX_DRAIN_MS / 60_000} min`);
    await new Promise((r) => setTimeout(r, 2000));
  }
}

function walk(dir: string): Array<{ path: string; size: number }> {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    const st = statSync(p);
    return st.isDirectory() ? walk(p) : [{ path: p, size: st.size }];
  });
}

function lakeStats(dirs: LakeDirs): LakeStats {
  const byTable: LakeStats['byTable'] = {};
  let compactedFiles = 0;
  let shardFiles = 0;
  for (const f of walk(dirs.lake)) {
    if (!f.path.endsWith('.parquet')) continue;
    const rel = f.path.slice(dirs.lake.length + 1);
    const table = rel.startsWith('_sluice') ? '_sluice' : rel.split('/').slice(0, rel.startsWith('gold') || rel.startsWith('silver') || rel.startsWith('bronze') ? 2 : 1).join('/');
    const t = (byTable[table] ??= { files: 0, bytes: 0 });
    t.files++;
    t.bytes += f.size;
    const name = rel.slice(rel.lastIndexOf('/') + 1);
    if (name.startsWith('part-c')) compactedFiles++;
    else if (name.startsWith('part-s')) shardFiles++;
  }
  const all = walk(dirs.lake);
  return { files: all.length, bytes: all.reduce((a, f) => a + f.size, 0), compactedFiles, shardFiles, dataBytes: walk(dirs.data).reduce((a, f) => a + f.size, 0), byTable };
}

/** Per-user counts of every user-bearing view, and the dlq's rows, through `sluice query`'s views (commit records honoured). */
async function snapshot(lake: string): Promise<Baseline> {
  const q = await openLakeQuery({ lake });
  try {
    const counts = {} as Counts;
    for (const t of USER_TABLES) {
      const r = await q.run(`SELECT user_id, count(*)::BIGINT FROM ${t} GROUP BY 1`);
      counts[t] = new Map(r.rows.map((row) => [String(row[0]), Number(row[1])]));
    }
    const dlqRows = Number((await q.run('SELECT count(*)::BIGINT FROM dlq')).rows[0]![0]);
    const silverRows = [...counts.events.values()].reduce((a, b) => a + b, 0);
    return { counts, dlqRows, silverRows };
  } finally {
    await q.close();
  }
}

/** `n` users whose silver event counts are nearest the median (a typical user), with their event and hour counts. */
async function typicalUsers(lake: string, n: number, exclude: Set<string>): Promise<Array<{ user: string; events: number; hours: number }>> {
  const q = await openLakeQuery({ lake });
  try {
    const r = await q.run(`
      WITH per AS (SELECT user_id, count(*) AS n, count(DISTINCT date_trunc('hour', event_time)) AS h FROM events WHERE user_id <> '' GROUP BY 1),
           m AS (SELECT quantile_disc(n, 0.5) AS med FROM per)
      SELECT user_id, n::BIGINT, h::BIGINT FROM per, m ORDER BY abs(n - med), user_id LIMIT ${n + exclude.size}`);
    return r.rows
      .map((row) => ({ user: String(row[0]), events: Number(row[1]), hours: Number(row[2]) }))
      .filter((u) => !exclude.has(u.user))
      .slice(0, n);
  } finally {
    await q.close();
  }
}

/**
 * After erasing `erased`: none of their rows in any view (ids, and their id inside raw payloads
 * and properties), and every other user's counts equal the baseline. Throws on any difference.
 */
async function verify(lake: string, base: Baseline, erased: string[]): Promise<void> {
  const now = await snapshot(lake);
  const gone = new Set(erased);
  const problems: string[] = [];
  for (const t of USER_TABLES) {
    for (const [user, n] of base.counts[t]) {
      const after = now.counts[t].get(user) ?? 0;
      const want = gone.has(user) ? 0 : n;
      if (after !== want) problems.push(`${t}: user ${user} has ${after} rows, expected ${want}`);
    }
    for (const [user, n] of now.counts[t]) if (!base.counts[t].has(user)) problems.push(`${t}: user ${user} appeared with ${n} rows`);
  }
  const q = await openLakeQuery({ lake });
  try {
    const ids = erased.map((u) => `'${u}'`).join(', ');
    const tokens = (col: string): string => erased.map((u) => `coalesce(contains(${col}, '${JSON.stringify(u)}'), false)`).join(' OR ');
    const left: Array<[string, string]> = [
      ['events', `user_id IN (${ids}) OR anonymous_id IN (${ids}) OR ${tokens('properties')}`],
      ['late_events', `user_id IN (${ids}) OR anonymous_id IN (${ids}) OR ${tokens('properties')}`],
      ['bronze_events', `user_id IN (${ids}) OR anonymous_id IN (${ids}) OR ${tokens('raw')} OR ${tokens('properties')}`],
      ['sessions', `user_id IN (${ids})`],
      ['dlq', tokens('raw')],
    ];
    for (const [t, where] of left) {
      const n = Number((await q.run(`SELECT count(*)::BIGINT FROM ${t} WHERE ${where}`)).rows[0]![0]);
      if (n !== 0) problems.push(`${t}: ${n} rows of erased users remain`);
    }
    // Nobody else's dead letters went: the dlq lost at most the erased users' rows (loadgen's invalid events carry user ids).
    const others = Number((await q.run(`SELECT count(*)::BIGINT FROM dlq WHERE NOT (${tokens('raw')})`)).rows[0]![0]);
    if (others !== now.dlqRows) problems.push(`dlq: ${now.dlqRows - others} rows still name an erased user`);
    if (now.dlqRows > base.dlqRows) problems.push(`dlq grew from ${base.dlqRows} to ${now.dlqRows}`);
  } finally {
    await q.close();
  }
  if (problems.length > 0) throw new Error(`erasure verification failed on ${lake}:\n  ${problems.slice(0, 20).join('\n  ')}${problems.length > 20 ? `\n  … ${problems.length - 20} more` : ''}`);
}

/** The hourly and daily gold windows holding the user's silver events. */
async function userWindows(lake: string, user: string): Promise<string[]> {
  const q = await openLakeQuery({ lake });
  try {
    const r = await q.run(`SELECT DISTINCT epoch_ms(date_trunc('hour', event_time))::BIGINT, epoch_ms(date_trunc('day', event_time))::BIGINT FROM events WHERE user_id = '${user}'`);
    const hours = new Set(r.rows.map((x) => `hourly/${Number(x[0])}`));
    const days = new Set(r.rows.map((x) => `daily/${Number(x[1])}`));
    return [...hours, ...days];
  } finally {
    await q.close();
  }
}

/** Per window (`hourly/<start>`, `daily/<start>`), per cell: the gold row and the row recomputed from silver (either may be absent). */
type GoldVsSilver = Map<string, Map<string, { gold?: Record<string, unknown>; silver?: Record<string, unknown> }>>;

const COUNT_COLUMNS = ['events', 'active_users', 'installs', 'sessions', 'screen_views', 'notification_views', 'notification_opens'];

async function goldVsSilver(lake: string, windows: string[]): Promise<GoldVsSilver> {
  const q = await openLakeQuery({ lake });
  const out: GoldVsSilver = new Map();
  try {
    for (const w of windows) {
      const [g, s] = w.split('/') as ['hourly' | 'daily', string];
      const start = Number(s);
      const cells = new Map<string, { gold?: Record<string, unknown>; silver?: Record<string, unknown> }>();
      const add = (side: 'gold' | 'silver', r: { columns: string[]; rows: unknown[][] }): void => {
        for (const row of r.rows) {
          const o = Object.fromEntries(r.columns.map((c, i) => [c, typeof row[i] === 'bigint' ? Number(row[i]) : row[i]]).filter(([c]) => !['year', 'month', 'day', 'hour', 'window_start'].includes(c as string)));
          const key = `${String(o.device_type)}/${String(o.app_version)}/${String(o.country)}`;
          const c = cells.get(key) ?? {};
          c[side] = o;
          cells.set(key, c);
        }
      };
      add('gold', await q.run(`SELECT * FROM ${g}_metrics WHERE epoch_ms(window_start) = ${start}`));
      add('silver', await q.run(goldMetricsSql(g, 'events', start, start + (g === 'hourly' ? HOUR : 24 * HOUR))));
      out.set(w, cells);
    }
  } finally {
    await q.close();
  }
  return out;
}

/**
 * Whether the erase changed gold exactly as it changed silver, window by window and cell by cell
 * (gold may differ from silver before the erase — too-late events not yet reconciled — so gold is
 * compared to silver before and after, not only after): a cell equal to its recomputation before
 * is equal (or gone from both) after; a cell that differed differs by the same counts after.
 * Returns the cells compared and those that break this.
 */
function goldChangedAsSilver(before: GoldVsSilver, after: GoldVsSilver): { cells: number; broken: string[] } {
  let cells = 0;
  const broken: string[] = [];
  const counts = (c: { gold?: Record<string, unknown>; silver?: Record<string, unknown> } | undefined): string =>
    JSON.stringify(COUNT_COLUMNS.map((f) => Number(c?.gold?.[f] ?? 0) - Number(c?.silver?.[f] ?? 0)));
  for (const [w, b] of before) {
    const a = after.get(w)!;
    for (const key of new Set([...b.keys(), ...a.keys()])) {
      cells++;
      const x = b.get(key);
      const y = a.get(key);
      const equalBefore = JSON.stringify(x?.gold) === JSON.stringify(x?.silver);
      const ok = equalBefore ? JSON.stringify(y?.gold) === JSON.stringify(y?.silver) : counts(x) === counts(y);
      if (!ok) broken.push(`${w} ${key}: before gold ${JSON.stringify(x?.gold)} silver ${JSON.stringify(x?.silver)}; after gold ${JSON.stringify(y?.gold)} silver ${JSON.stringify(y?.silver)}`);
    }
  }
  return { cells, broken };
}

/**
 * The gold windows (`hourly/<start>`, `daily/<start>`) against a DuckDB recomputation from silver
 * through `sluice query`'s views: cells in either, and cells not equal in both (every column).
 */
async function goldAgainstSilver(lake: string, windows: string[]): Promise<{ cells: number; differing: number }> {
  const q = await openLakeQuery({ lake });
  let cells = 0;
  let differing = 0;
  try {
    for (const w of windows) {
      const [g, s] = w.split('/') as ['hourly' | 'daily', string];
      const start = Number(s);
      const key = (cols: string[], row: unknown[]): [string, string] => {
        const o = Object.fromEntries(cols.map((c, i) => [c, typeof row[i] === 'bigint' ? Number(row[i]) : row[i] instanceof Date ? (row[i] as Date).getTime() : row[i]]));
        const cell = `${String(o.device_type)}/${String(o.app_version)}/${String(o.country)}`;
        delete o.window_start;
        return [cell, JSON.stringify(Object.keys(o).sort().filter((k) => !['year', 'month', 'day', 'hour'].includes(k)).map((k) => [k, o[k]]))];
      };
      const gold = await q.run(`SELECT * FROM ${g}_metrics WHERE epoch_ms(window_start) = ${start}`);
      const silver = await q.run(goldMetricsSql(g, 'events', start, start + (g === 'hourly' ? HOUR : 24 * HOUR)));
      const a = new Map(gold.rows.map((r) => key(gold.columns, r)));
      const b = new Map(silver.rows.map((r) => key(silver.columns, r)));
      for (const c of new Set([...a.keys(), ...b.keys()])) {
        cells++;
        if (a.get(c) !== b.get(c)) differing++;
      }
    }
  } finally {
    await q.close();
  }
  return { cells, differing };
}

/** Job phases seen in <data>/erasure/jobs/ while `running` lasts (ids not in `before`). */
function watchPhases(data: string, before: Set<string>, t0: number): { stop: () => Record<string, number> } {
  const dir = join(data, 'erasure', 'jobs');
  const seen: Record<string, number> = {};
  const poll = (): void => {
    let names: string[] = [];
    try {
      names = readdirSync(dir).filter((n) => n.endsWith('.json') && !before.has(n));
    } catch {
      return;
    }
    for (const n of names) {
      try {
        const phase = (JSON.parse(readFileSync(join(dir, n), 'utf8')) as { phase: string }).phase;
        seen[phase] ??= (performance.now() - t0) / 1000;
      } catch {
        // being replaced (tmp + rename): next poll
      }
    }
  };
  const timer = setInterval(poll, 100);
  return {
    stop: () => {
      clearInterval(timer);
      poll();
      return seen;
    },
  };
}

function jobIds(data: string): Set<string> {
  try {
    return new Set(readdirSync(join(data, 'erasure', 'jobs')).filter((n) => n.endsWith('.json')));
  } catch {
    return new Set();
  }
}

/** Runs `sluice erase` (compiled CLI) under /usr/bin/time; resolves with its output, wall time and rusage. */
function runErase(dirs: LakeDirs, user: string, shards: number, reason: string): Promise<{ stdout: string; ids: string[]; wallS: number; cpuUserS: number; cpuSysS: number; maxRssMB: number; phases: Record<string, number> }> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SLUICE_')));
  env.SLUICE_LOG_LEVEL = 'warn';
  const args = ['-f', 'RUSAGE %e %U %S %M', process.execPath, join(ROOT, 'bin', 'sluice.js'), 'erase', '--lake', dirs.lake, '--data', dirs.data, '--shards', String(shards), '--user', user, '--reason', reason];
  const before = jobIds(dirs.data);
  return new Promise((resolvePromise, reject) => {
    const t0 = performance.now();
    const watch = watchPhases(dirs.data, before, t0);
    const child = spawn('/usr/bin/time', args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-20_000)));
    const timer = setTimeout(() => child.kill('SIGKILL'), MAX_ERASE_MS);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      const wallS = (performance.now() - t0) / 1000;
      const phases = watch.stop();
      const m = /RUSAGE ([\d.]+) ([\d.]+) ([\d.]+) (\d+)/.exec(err);
      if (code !== 0 || !m) return reject(new Error(`sluice erase exited with ${code ?? signal}:\n${err}\n${out}`));
      const ids = [...jobIds(dirs.data)].filter((n) => !before.has(n)).map((n) => n.slice(0, -'.json'.length));
      resolvePromise({ stdout: out, ids, wallS, cpuUserS: Number(m[2]), cpuSysS: Number(m[3]), maxRssMB: Number(m[4]) / 1024, phases });
    });
  });
}

async function eraseOnce(dirs: LakeDirs, round: number, pick: { user: string; events: number; hours: number }, o: Options, base: Baseline, erased: string[]): Promise<EraseRun> {
  log(`${dirs.name}: round ${round}: erasing ${pick.user} (${pick.events} events over ${pick.hours} hours, shard ${shardOfUser(pick.user, o.shards)})`);
  const sizes = new Map(walk(dirs.lake).map((f) => [f.path, f.size]));
  const windows = await userWindows(dirs.lake, pick.user);
  const goldBefore = await goldVsSilver(dirs.lake, windows);
  const r = await runErase(dirs, pick.user, o.shards, `bench round ${round}`);
  const result = JSON.parse(r.stdout) as { requests: Array<{ id: string; state: string }> };
  const fresh = result.requests.find((q) => q.id === r.ids[0]);
  if (r.ids.length !== 1 || fresh?.state !== 'done') throw new Error(`erase did not complete one new request (new jobs: ${r.ids.join(', ') || 'none'}): ${r.stdout}`);
  const audit = JSON.parse(readFileSync(join(dirs.lake, '_sluice', 'audit', `${fresh.id}.json`), 'utf8')) as { layers: Record<string, { files: string[]; rowsRemoved: number }> };
  erased.push(pick.user);
  const v0 = performance.now();
  await verify(dirs.lake, base, erased);
  const verifyS = (performance.now() - v0) / 1000;
  const layers = Object.fromEntries(Object.entries(audit.layers).map(([k, l]) => [k, { files: l.files.length, rowsRemoved: l.rowsRemoved }]));
  const job = JSON.parse(readFileSync(join(dirs.data, 'erasure', 'jobs', `${fresh.id}.json`), 'utf8')) as { gold?: Record<string, { how?: string }> };
  const hows = Object.values(job.gold ?? {}).map((w) => w.how);
  const gold = { subtracted: hows.filter((h) => h === 'subtracted').length, recomputed: hows.filter((h) => h === 'recomputed').length, waiting: hows.filter((h) => h === undefined).length };
  const check = await goldAgainstSilver(dirs.lake, Object.entries(job.gold ?? {}).filter(([, w]) => w.how !== undefined).map(([k]) => k));
  // Only the windows the job corrected: one not merged yet has no gold (it is corrected once merged).
  const corrected = new Set(Object.entries(job.gold ?? {}).filter(([, w]) => w.how !== undefined).map(([k]) => k));
  for (const w of goldBefore.keys()) if (!corrected.has(w)) goldBefore.delete(w);
  const changed = goldChangedAsSilver(goldBefore, await goldVsSilver(dirs.lake, [...goldBefore.keys()]));
  if (changed.broken.length > 0) throw new Error(`gold did not change as silver did on ${dirs.name} (${changed.broken.length} of ${changed.cells} cells):\n  ${changed.broken.slice(0, 5).join('\n  ')}`);
  const run: EraseRun = {
    lake: dirs.name,
    round,
    user: pick.user,
    shard: shardOfUser(pick.user, o.shards),
    userEvents: pick.events,
    userHours: pick.hours,
    wallS: r.wallS,
    cpuUserS: r.cpuUserS,
    cpuSysS: r.cpuSysS,
    maxRssMB: r.maxRssMB,
    phases: r.phases,
    layers,
    filesRewritten: Object.entries(layers).filter(([k]) => k !== 'state' && k !== 'log').reduce((a, [, l]) => a + l.files, 0),
    bytesRewritten: Object.values(audit.layers).flatMap((l) => l.files).reduce((a, key) => a + (sizes.get(join(dirs.lake, key)) ?? 0), 0),
    lakeBytes: [...sizes.values()].reduce((a, b) => a + b, 0),
    rowsRemoved: Object.entries(layers).filter(([k]) => k !== 'state').reduce((a, [, l]) => a + l.rowsRemoved, 0),
    verifyS,
    gold,
    goldCellsChecked: check.cells,
    goldCellsDiffering: check.differing,
    goldCellsChangedAsSilver: changed.cells,
  };
  log(`${dirs.name}: round ${round}: ${run.wallS.toFixed(1)} s wall, ${(run.cpuUserS + run.cpuSysS).toFixed(1)} s CPU, ${run.filesRewritten} files / ${mb(run.bytesRewritten)} / ${run.rowsRemoved} rows; gold windows ${JSON.stringify(gold)}, cells differing from silver recomputed ${check.differing} of ${check.cells}, cells changed as silver did ${changed.cells} of ${changed.cells}; verified in ${verifyS.toFixed(1)} s; phases ${JSON.stringify(run.phases)}`);
  return run;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const fmt = (n: number, d = 1): string => n.toFixed(d);
const mb = (b: number): string => `${(b / 1e6).toFixed(0)} MB`;

async function main(): Promise<void> {
  const o = parse();
  const lakes: Array<{ dirs: LakeDirs; events: number; users: number }> = [];
  if (o.lake !== undefined) {
    lakes.push({ dirs: { name: 'given', lake: o.lake, data: o.data! }, events: 0, users: 0 });
  } else {
    const mk = (events: number, users: number): { dirs: LakeDirs; events: number; users: number } => {
      const dir = join(o.work, `events-${events}`);
      return { dirs: { name: `${events / 1e6}M`, lake: join(dir, 'lake'), data: join(dir, 'data') }, events, users };
    };
    if (o.ratio > 0) lakes.push(mk(Math.round(o.events / o.ratio), Math.max(10, Math.round(o.users / o.ratio))));
    lakes.push(mk(o.events, o.users));
  }
  log(`commit ${gitHead()}, work ${o.work}`);
  const builds: Record<string, BuildInfo | undefined> = {};
  for (const l of lakes) {
    const info = join(l.dirs.lake, '..', 'build.json');
    if (o.reuse && existsSync(l.dirs.lake) && existsSync(l.dirs.data)) {
      builds[l.dirs.name] = existsSync(info) ? (JSON.parse(readFileSync(info, 'utf8')) as BuildInfo) : undefined;
      log(`${l.dirs.name}: reusing ${l.dirs.lake}`);
      continue;
    }
    log(`${l.dirs.name}: building (${l.events} events, ${l.users} users, ${o.shards} shards)`);
    builds[l.dirs.name] = await buildLake(l.dirs, l.events, l.users, o);
  }

  if (o.compact) {
    for (const l of lakes) {
      const t0 = performance.now();
      const out = execFileSync(process.execPath, [join(ROOT, 'bin', 'sluice.js'), 'compact', '--lake', l.dirs.lake, '--older-than', '1s', '--json', '--force'], { encoding: 'utf8', timeout: MAX_ERASE_MS });
      log(`${l.dirs.name}: sluice compact in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${out.trim().replace(/\s+/g, ' ').slice(0, 300)}`);
    }
  }

  const state = new Map<string, { base: Baseline; stats: LakeStats; picks: Array<{ user: string; events: number; hours: number }>; erased: string[] }>();
  for (const l of lakes) {
    const base = await snapshot(l.dirs.lake);
    const stats = lakeStats(l.dirs);
    const picks = await typicalUsers(l.dirs.lake, o.runs, new Set());
    if (picks.length < o.runs) throw new Error(`${l.dirs.name}: only ${picks.length} users to erase`);
    state.set(l.dirs.name, { base, stats, picks, erased: [] });
    log(`${l.dirs.name}: ${base.silverRows} silver rows, ${stats.files} files, ${mb(stats.bytes)} lake + ${mb(stats.dataBytes)} data; ${stats.compactedFiles} compacted / ${stats.shardFiles} per-shard Parquet files`);
  }

  const runs: EraseRun[] = [];
  for (let round = 0; round < o.runs; round++) {
    // Alternate the order so drift in the machine's load does not favour one lake.
    const order = round % 2 === 0 ? lakes : [...lakes].reverse();
    for (const l of order) {
      const s = state.get(l.dirs.name)!;
      runs.push(await eraseOnce(l.dirs, round, s.picks[round]!, o, s.base, s.erased));
    }
  }

  const report = {
    commit: gitHead(),
    date: new Date().toISOString(),
    options: { ...o },
    lakes: lakes.map((l) => ({ name: l.dirs.name, lake: l.dirs.lake, build: builds[l.dirs.name], silverRows: state.get(l.dirs.name)!.base.silverRows, dlqRows: state.get(l.dirs.name)!.base.dlqRows, users: state.get(l.dirs.name)!.base.counts.events.size, stats: state.get(l.dirs.name)!.stats })),
    runs,
  };
  if (o.out) writeFileSync(o.out, `${JSON.stringify(report, null, 1)}\n`);
  process.stdout.write(`${summarize(report.lakes, runs)}\n`);
  if (!o.keep) rmSync(o.work, { recursive: true, force: true });
}

function summarize(lakes: Array<{ name: string; silverRows: number; users: number; stats: LakeStats }>, runs: EraseRun[]): string {
  const lines = ['| lake | silver rows | users | lake files (compacted / per-shard) | lake bytes | erase wall s median (min–max) | CPU s median | files rewritten (median) | MB rewritten (median, % of lake) | rows removed (median) | user events (median) |', '|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|'];
  for (const l of lakes) {
    const r = runs.filter((x) => x.lake === l.name);
    const wall = r.map((x) => x.wallS);
    lines.push(`| ${l.name} | ${l.silverRows} | ${l.users} | ${l.stats.files} (${l.stats.compactedFiles} / ${l.stats.shardFiles}) | ${mb(l.stats.bytes)} | **${fmt(median(wall))}** (${fmt(Math.min(...wall))}–${fmt(Math.max(...wall))}) | ${fmt(median(r.map((x) => x.cpuUserS + x.cpuSysS)))} | ${median(r.map((x) => x.filesRewritten))} | ${fmt(median(r.map((x) => x.bytesRewritten)) / 1e6)} (${fmt(median(r.map((x) => (100 * x.bytesRewritten) / x.lakeBytes)))} %) | ${median(r.map((x) => x.rowsRemoved))} | ${median(r.map((x) => x.userEvents))} |`);
  }
  if (lakes.length === 2) {
    const rounds = [...new Set(runs.map((r) => r.round))];
    const ratios = rounds.map((k) => runs.find((r) => r.round === k && r.lake === lakes[1]!.name)!.wallS / runs.find((r) => r.round === k && r.lake === lakes[0]!.name)!.wallS);
    lines.push('', `erase time ratio ${lakes[1]!.name}/${lakes[0]!.name} per round: ${ratios.map((x) => fmt(x, 2)).join(' / ')}; median **${fmt(median(ratios), 2)}** (lake rows ratio ${fmt(lakes[1]!.silverRows / lakes[0]!.silverRows, 2)})`);
  }
  lines.push('', '| lake | round | user | shard | user events / hours | wall s | CPU s | max RSS MB | phase first seen at s | gold windows subtracted / recomputed / waiting | gold cells ≠ silver recomputed / checked | per layer files/rows | verify s |', '|---|--:|---|--:|--:|--:|--:|--:|---|--:|--:|---|--:|');
  for (const r of runs) {
    const phases = Object.entries(r.phases).map(([p, t]) => `${p} ${fmt(t)}`).join(', ');
    const layers = Object.entries(r.layers).map(([k, l]) => `${k} ${l.files}/${l.rowsRemoved}`).join(', ');
    lines.push(`| ${r.lake} | ${r.round} | ${r.user} | ${r.shard} | ${r.userEvents} / ${r.userHours} | ${fmt(r.wallS)} | ${fmt(r.cpuUserS + r.cpuSysS)} | ${fmt(r.maxRssMB, 0)} | ${phases} | ${r.gold.subtracted} / ${r.gold.recomputed} / ${r.gold.waiting} | ${r.goldCellsDiffering} / ${r.goldCellsChecked} | ${layers} | ${fmt(r.verifyS)} |`);
  }
  return lines.join('\n');
}

/** The checkout's commit, or (a copy made with `git archive`) SLUICE_BENCH_COMMIT. */
function gitHead(): string {
  try {
    return execFileSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return process.env.SLUICE_BENCH_COMMIT ?? 'unknown (not a git checkout)';
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`erasure bench FAILED: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
