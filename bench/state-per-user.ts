/**
 * Operator state per ACTIVE user (issue 13: "server RSS with 1 M active users ≤ 1 GiB, state
 * ≤ 200 B per user"): one ShardPipeline on a real LMDB env (opened as engine/shard-runtime.ts
 * does) with the engine's default options (session gap 30 min, allowed lateness 2 h, dedup TTL
 * 24 h, default dedupHotCapacity), fed `--users` distinct users with `--events-per-user` events
 * each, all inside one hour of event time: afterwards every user has an OPEN session and is in
 * the open hourly and daily windows — the state of "N users active right now".
 *
 *   node --expose-gc --import tsx bench/state-per-user.ts [--users 1000000] [--events-per-user 2] [--batch 8192] [--json]
 *
 * Measures (after forced GCs) heapUsed, external, arrayBuffers, rss and RssAnon before feeding,
 * after feeding, and after one checkpoint run exactly as ShardRuntime.checkpoint runs it
 * (pipeline.checkpoint(), onCheckpointTxn + the meta puts in one env.transactionSync,
 * afterCheckpoint), plus the LMDB file on disk. Then a destructive breakdown: the aggregate's
 * windows are dropped, then the session table's maps, then the whole pipeline, each followed by
 * GC and a measurement, so each structure's share is a measured difference (not an estimate).
 *
 * Dedup is per EVENT (its hot table holds every event id of the TTL), not per user: B/user is
 * also given without the dedup structures (hot table + its pending-id arrays).
 *
 * Batches go through the same path as the runtime's: IngestBatchBuilder.toIPC → readFlatIpc →
 * processBatch, then advanceWatermark(localWatermark) as ShardRuntime.emitUpTo does. Bronze and
 * silver outputs are dropped at once (the runtime buffers them until the checkpoint; they are not
 * operator state).
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs } from './args.js';
import { writeHeapSnapshot } from 'node:v8';
import { open as openLmdb, type Database, type RootDatabase } from 'lmdb';
import { readFlatIpc } from '../common/ipc-read.js';
import { tableFromIPC } from 'apache-arrow';
import { IngestBatchBuilder } from '../ingest/batch-builder.js';
import { ShardPipeline } from '../engine/operators/shard-pipeline.js';
import { SessionTable } from '../engine/kernels/session-table.js';
import { defaultEngineOptions } from '../engine/options.js';

const { values } = benchArgs(import.meta.url, {
  options: {
    users: { type: 'string', default: '1000000' },
    'events-per-user': { type: 'string', default: '2' },
    batch: { type: 'string', default: '8192' },
    json: { type: 'boolean', default: false },
    /** Writes V8 heap snapshots of the empty and the checkpointed pipeline there (compare with bench/mem-heapsnap.mjs). */
    heapsnap: { type: 'string' },
  },
});
const N = Number(values.users);
const K = Number(values['events-per-user']);
const BATCH = Number(values.batch);
if (!(N > 0 && K > 0 && BATCH > 0)) throw new Error('--users, --events-per-user, --batch must be positive');

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with node --expose-gc');

// The engine's defaults (engine/options.ts), so the bench follows them if they change.
const defaults = defaultEngineOptions();

// ---- deterministic data -------------------------------------------------------------------

let seed = 0x13;
const rand32 = (): number => {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return (t ^ (t >>> 14)) >>> 0;
};
const hex = (n: number, digits: number): string => n.toString(16).padStart(8, '0').slice(-digits);
/** A v4-looking UUID (36 chars), as Segment's messageId / many SDKs' anonymous user ids. */
const uuid = (): string => `${hex(rand32(), 8)}-${hex(rand32(), 4)}-4${hex(rand32(), 3)}-${hex((rand32() & 0x3fff) | 0x8000, 4)}-${hex(rand32(), 8)}${hex(rand32(), 4)}`;
/** Real SDK user ids: UUIDs (36), Firebase-like ids (28), prefixed database ids (20–24). */
function userId(): string {
  const r = rand32() % 3;
  if (r === 0) return uuid();
  if (r === 1) {
    const A = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
    let s = '';
    for (let k = 0; k < 28; k++) s += A[rand32() % A.length];
    return s;
  }
  return `usr_${hex(rand32(), 8)}${hex(rand32(), 8)}${hex(rand32(), 8 - (rand32() % 5))}`;
}
const DEVICES = ['ios', 'android', 'web'];
const OS = { ios: 'iOS', android: 'Android', web: 'Web' } as Record<string, string>;
const VERSIONS = ['4.1.0', '4.2.0', '4.2.1', '4.3.0'];
const COUNTRIES = ['US', 'DE', 'FR', 'BR', 'IN'];
const SCREENS = ['Home', 'Feed', 'Search', 'Profile', 'Settings', 'Product Detail', 'Cart', 'Checkout'];
/** One hour of event time: every user's events fall in [T0, T0 + 1 h). */
const T0 = Date.UTC(2026, 11, 3, 10, 0, 0);
const SPREAD_MS = 50 * 60_000;
const STEP_MS = Math.floor((10 * 60_000 - 1) / Math.max(1, K - 1)); // K events within 10 min: one session

/**
 * Feeds N users × K events in event-time order (user i starts at T0 + i/N · 50 min, its events
 * STEP_MS apart), one IngestBatchBuilder of BATCH rows at a time. `process` gets each IPC record.
 */
function generate(process: (ipc: Uint8Array, rows: number) => void): void {
  const builder = new IngestBatchBuilder(BATCH);
  // Users are generated in windows so that events interleave in time as they would live.
  const WINDOW = Math.max(1, Math.floor(BATCH / K));
  for (let first = 0; first < N; first += WINDOW) {
    const last = Math.min(N, first + WINDOW);
    const users: Array<{ id: string; start: number; device: string; version: string; country: string }> = [];
    for (let i = first; i < last; i++) {
      const device = DEVICES[rand32() % DEVICES.length]!;
      users.push({ id: userId(), start: T0 + Math.floor((i / N) * SPREAD_MS), device, version: VERSIONS[rand32() % VERSIONS.length]!, country: COUNTRIES[rand32() % COUNTRIES.length]! });
    }
    for (let k = 0; k < K; k++) {
      for (const u of users) {
        const t = u.start + k * STEP_MS;
        const screen = k === 0 ? null : SCREENS[rand32() % SCREENS.length]!;
        builder.push({
          event_id: uuid(),
          user_id: u.id,
          anonymous_id: null,
          event_type: screen === null ? 'Application Opened' : 'Screen Viewed',
          event_time: t,
          received_at: t + 150 + (rand32() % 2000),
          device_type: u.device,
          os: OS[u.device]!,
          app_version: u.version,
          country: u.country,
          source: 'ios-sdk',
          properties: screen === null ? '{"from_background":false}' : `{"name":"${screen}","category":"main"}`,
          raw: null,
        });
        if (builder.full) {
          process(builder.toIPC(), builder.length);
          builder.reset();
        }
      }
    }
  }
  if (builder.length > 0) process(builder.toIPC(), builder.length);
}

// ---- measurement ------------------------------------------------------------------------------

interface Mem {
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  rss: number;
  rssAnon: number;
}
function status(field: string): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}
const rssAnon = (): number => status('RssAnon');
async function measure(): Promise<Mem> {
  for (let k = 0; k < 6; k++) {
    gc!();
    await new Promise((r) => setImmediate(r)); // lets finalizers / weak callbacks (ArrayBuffer backing stores) run
  }
  const m = process.memoryUsage();
  return { heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers, rss: m.rss, rssAnon: rssAnon() };
}
/** heapUsed + external (external already includes arrayBuffers in Node's accounting). */
const js = (m: Mem): number => m.heapUsed + m.external;
function diskBytes(dir: string): { size: number; allocated: number } {
  let size = 0;
  let allocated = 0;
  for (const f of readdirSync(dir)) {
    if (f.endsWith('-lock')) continue;
    const s = statSync(join(dir, f));
    size += s.size;
    allocated += s.blocks * 512;
  }
  return { size, allocated };
}
/** Bytes of pages a sub-database occupies (branch + leaf + overflow pages × page size). */
function dbPages(db: Database | RootDatabase): number {
  const s = db.getStats() as { pageSize: number; treeBranchPageCount: number; treeLeafPageCount: number; overflowPages: number; entryCount: number };
  return (s.treeBranchPageCount + s.treeLeafPageCount + s.overflowPages) * s.pageSize;
}

const dir = mkdtempSync(join(tmpdir(), 'sluice-state-per-user-'));
try {
  const before = await measure();
  // As ShardRuntime.open: openLmdb({ path: <shard dir>/state.mdb, maxDbs: 4096, compression: false }).
  const env = openLmdb({ path: join(dir, 'state.mdb'), maxDbs: 4096, compression: false });
  const meta = env.openDB({ name: 'checkpoint', encoding: 'msgpack' });
  let pipeline: ShardPipeline | null = new ShardPipeline({
    shard: 0,
    db: env,
    allowedLatenessMs: defaults.allowedLatenessMs,
    sessionGapMs: defaults.sessionGapMs,
    dedupTtlMs: defaults.dedupTtlMs,
    dedupHotCapacity: defaults.dedupHotCapacity,
    metricEventTypes: defaults.metricEventTypes,
  });
  const empty = await measure();
  if (values.heapsnap) writeHeapSnapshot(join(values.heapsnap, `empty-${N}.heapsnapshot`));
  const hot0 = pipeline.dedupHotTable.bytes;

  let rows = 0;
  let duplicates = 0;
  let pipelineMs = 0;
  let offset = -1;
  const feedStarted = performance.now();
  generate((ipc, n) => {
    const t = performance.now();
    const table = readFlatIpc(ipc) ?? tableFromIPC(ipc);
    for (const batch of table.batches) {
      const out = pipeline!.processBatch(batch);
      duplicates += out.duplicates;
    }
    const wm = pipeline!.localWatermark();
    if (wm.kind === 'event-time') pipeline!.advanceWatermark(wm.timeMs);
    pipelineMs += performance.now() - t;
    rows += n;
    offset++;
  });
  const feedMs = performance.now() - feedStarted;
  const live = pipeline.live();
  if (live.openSessions !== N) throw new Error(`expected ${N} open sessions, got ${live.openSessions}`);
  const activeHour = live.hourly.reduce((s, w) => s + w.activeUsers, 0);
  if (activeHour !== N) throw new Error(`expected ${N} active users in the open hourly window, got ${activeHour}`);
  const dedupPendingBytes = (p: ShardPipeline): number => {
    const d = (p as unknown as { dedup: { pendingHi: Uint32Array; pendingLo: Uint32Array; pendingBucket: Int32Array } }).dedup;
    return d.pendingHi.byteLength + d.pendingLo.byteLength + d.pendingBucket.byteLength;
  };
  const hotFed = pipeline.dedupHotTable;
  const pendingFed = dedupPendingBytes(pipeline);
  const fed = await measure();

  // ---- one checkpoint, as ShardRuntime.checkpoint does it (minus Parquet staging/publishing) ----
  const cpStarted = performance.now();
  const state = pipeline.checkpoint();
  env.transactionSync(() => {
    pipeline!.onCheckpointTxn();
    meta.putSync('state', state);
    meta.putSync('offset', offset);
    meta.putSync('emitted', Number.NEGATIVE_INFINITY);
    meta.putSync('emitted-daily', Number.NEGATIVE_INFINITY);
    meta.putSync('pending', { record: { id: `s0-0-${offset}` }, staged: [] });
  });
  const txnMs = performance.now() - cpStarted;
  pipeline.afterCheckpoint();
  const checkpointMs = performance.now() - cpStarted;
  await env.flushed;
  const hotCp = pipeline.dedupHotTable;
  const pendingCp = dedupPendingBytes(pipeline);
  const checkpointed = await measure();
  if (values.heapsnap) writeHeapSnapshot(join(values.heapsnap, `checkpointed-${N}.heapsnapshot`));
  const disk = diskBytes(dir);
  const dbs: Record<string, number> = {};
  for (const name of ['state-sessions', 'state-accs', 'state-users', 'dedup-meta', 'checkpoint']) dbs[name] = dbPages(env.openDB({ name }));
  let dedupLmdb = 0;
  for (const key of env.getKeys()) {
    const name = String(key);
    if (/^dedup-\d+$/.test(name)) dedupLmdb += dbPages(env.openDB({ name, keyEncoding: 'binary', encoding: 'binary' }));
  }
  dbs['dedup-<hour>'] = dedupLmdb;
  // Stored size of one user's open sessions (the value onCheckpointTxn writes, with msgpack's bin header): a sample.
  let sampleBytes = 0;
  let sampleCount = 0;
  for (const { value } of env.openDB({ name: 'state-sessions', encoding: 'binary' }).getRange({ limit: 2000 })) {
    sampleBytes += (value as Buffer).length;
    sampleCount++;
  }
  const sessionValueBytes = sampleCount > 0 ? sampleBytes / sampleCount : 0;
  const envStats = env.getStats() as { pageSize: number; lastPageNumber: number };

  // ---- destructive breakdown: drop one structure at a time, GC, measure ----
  // (`p` is the same object: it is dropped with `pipeline` below, or the pipeline would stay reachable.)
  type Internals = {
    aggregate: { hourly: Map<number, unknown>; daily: Map<number, unknown>; dirty: unknown[]; emittedAccs: unknown[] };
    sessions: SessionTable;
  };
  let p: Internals | null = pipeline as unknown as Internals;
  p.aggregate.hourly.clear();
  p.aggregate.daily.clear();
  p.aggregate.dirty = [];
  p.aggregate.emittedAccs = [];
  const noAggregate = await measure();
  p.sessions = new SessionTable(defaults.sessionGapMs); // the whole table (its slot arrays, maps, wheel), for an empty one
  const noSessions = await measure();
  p = null;
  pipeline = null;
  const noPipeline = await measure();
  await env.close();
  const noEnv = await measure();

  const mib = (b: number): string => (b / 2 ** 20).toFixed(1);
  const perUser = (b: number): string => (b / N).toFixed(0);
  const result = {
    users: N,
    eventsPerUser: K,
    events: rows,
    duplicates,
    batch: BATCH,
    options: { sessionGapMs: defaults.sessionGapMs, allowedLatenessMs: defaults.allowedLatenessMs, dedupTtlMs: defaults.dedupTtlMs, dedupHotCapacity: defaults.dedupHotCapacity },
    mem: { before, empty, fed, checkpointed, noAggregate, noSessions, noPipeline, noEnv },
    dedup: { hotInitialBytes: hot0, hotFed, pendingFedBytes: pendingFed, hotCheckpointed: hotCp, pendingCheckpointedBytes: pendingCp },
    lmdb: { sessionValueBytes, fileBytes: disk.size, allocatedBytes: disk.allocated, usedBytes: (envStats.lastPageNumber + 1) * envStats.pageSize, dbPages: dbs },
    peakRss: status('VmHWM'),
    ms: { feed: feedMs, pipeline: pipelineMs, checkpoint: checkpointMs, checkpointTxn: txnMs },
  };
  const pending0 = 3 * 1024 * 4; // the pending-id arrays' initial 1024 entries
  const dedupFed = hotFed.bytes - hot0 + pendingFed - pending0;
  const dedupCp = hotCp.bytes - hot0 + pendingCp - pending0;
  const rowsOut = [
    ['after feed', js(fed) - js(empty), fed.rssAnon - empty.rssAnon, dedupFed],
    ['after checkpoint', js(checkpointed) - js(empty), checkpointed.rssAnon - empty.rssAnon, dedupCp],
  ] as const;
  console.log(`N=${N} users × K=${K} events = ${rows} events (${duplicates} duplicates), batches of ${BATCH}; feed ${feedMs.toFixed(0)} ms (pipeline ${pipelineMs.toFixed(0)} ms), checkpoint ${checkpointMs.toFixed(0)} ms (txn ${txnMs.toFixed(0)} ms)`);
  console.log('state            heap+ext MiB  anonRSS MiB  dedup MiB  B/user(heap+ext)  B/user excl dedup  B/user(anonRSS)  anonRSS excl dedup');
  for (const [name, j, a, d] of rowsOut) {
    console.log(
      `${name.padEnd(16)} ${mib(j).padStart(12)} ${mib(a).padStart(12)} ${mib(d).padStart(10)} ${perUser(j).padStart(17)} ${perUser(j - d).padStart(18)} ${perUser(a).padStart(16)} ${perUser(a - d).padStart(19)}`,
    );
  }
  console.log(`LMDB after checkpoint: file ${mib(disk.size)} MiB (allocated ${mib(disk.allocated)} MiB, pages in use ${mib(result.lmdb.usedBytes)} MiB) = ${perUser(result.lmdb.usedBytes)} B/user in use; by db (MiB): ${Object.entries(dbs).map(([k, v]) => `${k} ${mib(v)}`).join(', ')}; a user's stored sessions ${sessionValueBytes.toFixed(0)} B`);
  console.log(
    `breakdown (heap+ext, after checkpoint): aggregate windows ${perUser(js(checkpointed) - js(noAggregate))} B/user, session table ${perUser(js(noAggregate) - js(noSessions))} B/user, rest of pipeline (dedup hot table ${perUser(hotCp.bytes)} B/user + pending ${perUser(pendingCp)} B/user, misc) ${perUser(js(noSessions) - js(noPipeline))} B/user; anonRSS ${perUser(checkpointed.rssAnon - noAggregate.rssAnon)} / ${perUser(noAggregate.rssAnon - noSessions.rssAnon)} / ${perUser(noSessions.rssAnon - noPipeline.rssAnon)} B/user, LMDB env closed ${perUser(noPipeline.rssAnon - noEnv.rssAnon)} B/user (RSS is not always returned)`,
  );
  console.log(
    `absolute: peak rss (VmHWM) ${mib(status('VmHWM'))} MiB, rss ${mib(checkpointed.rss)} MiB, RssAnon ${mib(checkpointed.rssAnon)} MiB, heapUsed ${mib(checkpointed.heapUsed)} MiB, heapTotal ${mib(checkpointed.heapTotal)} MiB, external ${mib(checkpointed.external)} MiB (arrayBuffers ${mib(checkpointed.arrayBuffers)} MiB); empty pipeline: RssAnon ${mib(empty.rssAnon)} MiB, heapUsed ${mib(empty.heapUsed)} MiB`,
  );
  if (values.json) console.log(JSON.stringify(result));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
