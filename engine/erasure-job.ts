/**
 * The erasure job: deletes a request's users from every layer. The coordinator runs it at the end
 * of a checkpoint round (engine/coordinator.ts), so no flush, gold merge, DLQ flush, reconciliation
 * or compaction of the lake runs at the same time, for a bounded time a round (`yieldNow`: the
 * next round's commits do not wait for a whole job). Every step is recorded in the job file
 * (storage/erasure-store.ts) before the next one starts, and every step is idempotent, so a crash
 * or a stop anywhere resumes at the step it was in and the request completes exactly once:
 *
 *   accepted ─▶ waiting-commit: the users' shards (and dlq/) have committed past the request's
 *   │           log marks — every event of theirs that ingest acknowledged is in the lake or in
 *   │           the shard's open sessions, and ingest refuses new ones
 *   ├─▶ purge: their open sessions leave the shards' state (memory + LMDB)
 *   ├─▶ scanned: DuckDB finds the files holding their rows: bronze, silver, late and dlq in every
 *   │           shard's files (an anonymousId or an id in properties sits on the shard of the
 *   │           event's userId); the shards where rows were found are "involved": their sessions
 *   │           (by user_id, or by the session ids of the matched silver rows) and session_aliases
 *   │           are read too, and their logs are sealed and truncated like the ids' own shards';
 *   │           the gold windows they touched and their part of each (gold-sql.ts over the matched
 *   │           silver rows) → the plan, recorded
 *   ├─▶ rewritten: each planned file rewritten without their rows (storage/rewrite.ts), one
 *   │           two-phase commit per file; the plan marks it done
 *   ├─▶ gold-done: each touched hourly/daily window, once merged, has their part subtracted
 *   │           (correctGold: the cost follows their rows, not the lake) and is overwritten; a
 *   │           window the subtraction cannot correct exactly is recomputed from silver instead
 *   ├─▶ waiting-log: the ids' shards' LMDB files (where the purge deleted) are compacted online
 *   │           (checkpoint, close, copy into a fresh file, reopen: no freed page keeps a purged
 *   │           session); a log (theirs, an involved shard's, the DLQ's) whose active segment
 *   │           holds records at or below the marks is rolled (sealed, on the log's writer:
 *   │           ingest, over IPC from the engine process); then it waits until truncation after
 *   │           the checkpoint (or DLQ flush) covering the sealed segments has deleted them —
 *   │           the next checkpoint round when the engine keeps up
 *   └─▶ done: audit record `_sluice/audit/<id>.json`, ids in clear deleted
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import type { Table } from 'apache-arrow';
import type { Logger } from 'pino';
import { internalError } from '../common/errors.js';
import { faultPoint } from '../common/fault.js';
import { META_PREFIX, partitionTimeOfKey, shardOfPart, TABLES, type TableName } from '../common/lake-layout.js';
import { writeCommitRecord } from '../storage/commit-record.js';
import { withoutCompactedInputs } from '../storage/compact.js';
import type { ObjectStore } from '../storage/object-store.js';
import { decodeParquet, encodeParquet, type ParquetCompression } from '../storage/parquet.js';
import { rewriteWithout } from '../storage/rewrite.js';
import type { ErasureJob, ErasureRequest, ErasureStore, GoldWindowCorrection } from '../storage/erasure-store.js';
import { metricRowsToBatch, type MetricRow } from './gold-merge.js';
import { DEFAULT_METRIC_EVENT_TYPES, goldMetricsSql, NO_SESSION_ALIASES, resolveSessionIds, type MetricEventTypes } from './gold-sql.js';
import { goldWindowKey } from './reconcile.js';
import { PARTIALS_PREFIX } from './shard-runtime.js';

const HOUR = 3_600_000;
const DAY = 86_400_000;

export const AUDIT_PREFIX = `${META_PREFIX}/audit/`;

/** What the job needs of the engine around it (the coordinator, or `sluice erase` offline). */
export interface ErasureHost {
  store: ObjectStore;
  dataDir: string;
  log: Logger;
  compression: ParquetCompression;
  sessionGapMs: number;
  metricEventTypes?: Partial<MetricEventTypes>;
  /** Last log offset of `shard` covered by a committed checkpoint (−1: none). */
  checkpointed(shard: number): number;
  /** Last DLQ log offset flushed into dlq/ (−1: none). */
  dlqFlushed(): number;
  /** Drops the users' open sessions from the shard's state. */
  purge(shard: number, users: string[]): Promise<number>;
  /** Committed emission frontiers over all shards (hourly, daily), ms. */
  frontier(): { hourly: number; daily: number };
  /** Truncates the logs below what is committed (sealed segments only). */
  truncateLogs(): Promise<void>;
  /**
   * Seals a segment log's active segment (shard −1: the DLQ log), so truncation can delete it once
   * its records are committed; resolves with the first offset after it. Absent: not segment logs.
   */
  rollLog?(shard: number): Promise<number>;
  /** The shard checkpoints, closes, compacts its LMDB file (freed pages may hold purged sessions) and reopens. */
  compactState?(shard: number): Promise<void>;
  /**
   * True once this call's time is spent (the coordinator's budget per checkpoint round): the jobs
   * stop at their next step boundary, every step before it recorded, and go on at the next call.
   * Absent: run as far as the jobs can go (`sluice erase` offline).
   */
  yieldNow?(): boolean;
}

/**
 * Tables whose rows name a user, and how: columns equal to the id, columns holding it in JSON text.
 * Scanned in every shard's files: anonymous_id and JSON text do not determine a row's shard (an
 * event is sharded by its user_id, the userId when there is one), and dlq/ is not sharded.
 * Sessions (`SESSIONS`: one user's, matched by user_id and by the session ids of the matched
 * silver rows) and their aliases are scanned in the involved shards only: the ids' own shards and
 * the shards where matching rows were found.
 */
const MATCH: Array<{ table: TableName; ids: string[]; json: string[] }> = [
  { table: 'events', ids: ['user_id', 'anonymous_id'], json: ['properties'] },
  { table: 'late_events', ids: ['user_id', 'anonymous_id'], json: ['properties'] },
  { table: 'bronze_events', ids: ['user_id', 'anonymous_id'], json: ['raw', 'properties'] },
  { table: 'dlq', ids: [], json: ['raw'] },
];
const SESSIONS = { ids: ['user_id'], json: [] as string[] };

/**
 * The job file's fields this module adds to storage/erasure-store.ts's ErasureJob (the store saves
 * the job as JSON, whole): `involved` — per shard other than the requested ids' own where the scan
 * found matching rows, its committed log offset at the scan (every matching row of it is at or
 * below): the mark its log is sealed and truncated past, as request.marks are for the ids' shards.
 */
type Job = ErasureJob & { involved?: Record<string, number> };

const q = (s: string): string => `'${s.replaceAll("'", "''")}'`;
/** The id as a JSON string token (with its quotes): what raw payloads and properties hold. */
const token = (id: string): string => JSON.stringify(id);

/**
 * Runs every open request's next steps; returns the ids completed in this call. Stops early at a
 * step boundary when `host.yieldNow()` says so: what is between two calls (shard checkpoints, gold
 * merges, reconciliation) is what a crash and restart puts there too, which every step survives
 * (a planned file replaced meanwhile is rescanned, a gold window changed meanwhile is recomputed).
 */
export async function runErasures(host: ErasureHost, erasures: ErasureStore): Promise<string[]> {
  const done: string[] = [];
  for (const request of await erasures.requests()) {
    const job = await erasures.job(request.id);
    if (!goldCorrectionDue(job)) continue;
    await correctGold(host, job, request.id, () => erasures.saveJob(job));
    await erasures.saveJob(job);
    if (host.yieldNow?.()) return done;
  }
  for (const { request, job } of await erasures.open()) {
    const users = await erasures.pendingUsers(request.id);
    if (!users) {
      host.log.error({ id: request.id }, 'erasure request has lost its pending file; it cannot be completed');
      continue;
    }
    if (await step(host, erasures, request, job, users)) done.push(request.id);
    if (host.yieldNow?.()) return done;
  }
  return done;
}

/** A done job whose gold windows are still to be corrected. */
const goldCorrectionDue = (job: ErasureJob | undefined): job is ErasureJob => job?.phase === 'done' && (job.windows?.hourly.length ?? 0) + (job.windows?.daily.length ?? 0) > 0;

/** Whether {@link runErasures} has anything to do: a request not done, or a done one whose gold is still to correct. */
export async function erasureWorkPending(erasures: ErasureStore): Promise<boolean> {
  for (const request of await erasures.requests()) {
    const job = await erasures.job(request.id);
    if (job?.phase !== 'done' || goldCorrectionDue(job)) return true;
  }
  return false;
}

async function save(erasures: ErasureStore, job: ErasureJob, phase: ErasureJob['phase'], waitingFor?: string): Promise<void> {
  job.phase = phase;
  job.updatedAt = new Date().toISOString();
  if (waitingFor === undefined) delete job.waitingFor;
  else job.waitingFor = waitingFor;
  await erasures.saveJob(job);
}

const layer = (job: ErasureJob, name: string): { files: string[]; rowsRemoved: number } => (job.layers[name] ??= { files: [], rowsRemoved: 0 });

/** Advances one job as far as it can go now; true when it completed. */
async function step(host: ErasureHost, erasures: ErasureStore, request: ErasureRequest, job: ErasureJob, users: string[]): Promise<boolean> {
  const shards = [...new Set(request.shards)];
  if (job.phase === 'accepted' || job.phase === 'waiting-commit') {
    // Every shard ingest took a mark of (today the ids' own shards: see docs/ERASURE.md on rows of other shards).
    const marked = [...new Set([...shards, ...Object.keys(request.marks.shards).map(Number)])];
    const behind = marked.filter((s) => host.checkpointed(s) < (request.marks.shards[String(s)] ?? -1));
    if (behind.length > 0 || host.dlqFlushed() < request.marks.dlq) {
      if (job.phase !== 'waiting-commit') await save(erasures, job, 'waiting-commit', `checkpoints of shards ${behind.join(', ') || '-'} / the DLQ flush past the request's log marks`);
      return false;
    }
    let purged = 0;
    for (const s of shards) purged += await host.purge(s, users.filter((_, i) => request.shards[i] === s));
    // Accumulated: a purge redone after a crash finds nothing left.
    job.openSessionsPurged = (job.openSessionsPurged ?? 0) + purged;
    await erasures.saveJob(job);
    faultPoint('erasure:purged');
    await scan(host, job, users, shards);
    await save(erasures, job, 'scanned');
    if (host.yieldNow?.()) return false;
  }
  if (job.phase === 'scanned') {
    // A planned file another writer replaced meanwhile (compaction, reconciliation: possible when
    // the job stopped after its scan — a crash, or its time per round spent) moved its rows
    // elsewhere: scan again (bounded). Recorded per file, so a stop before the rescan keeps it.
    for (let round = 0; ; round++) {
      for (const entry of job.plan ?? []) {
        if (entry.done) continue;
        const r = await rewriteWithout(host.store, entry.key, (t) => dropMask(t, entry.table as TableName | 'session_aliases', users, job.sessionIds ?? []), `erase-${request.id}`, { compression: host.compression }, entry.rows);
        entry.done = true;
        if (r.missing && !r.missing.ours) entry.stale = true;
        else {
          const l = layer(job, entry.table);
          l.files.push(entry.key);
          // The scan's count: a file rewritten before a crash has nothing left to drop when redone.
          l.rowsRemoved += entry.rows;
        }
        if (r.rowsBefore - r.rowsAfter !== entry.rows && r.rowsBefore !== r.rowsAfter) host.log.warn({ key: entry.key, planned: entry.rows, dropped: r.rowsBefore - r.rowsAfter }, 'erasure dropped another row count than its scan found');
        faultPoint('erasure:mid-rewrite');
        await erasures.saveJob(job);
        if (host.yieldNow?.()) return false;
      }
      if (!(job.plan ?? []).some((e) => e.stale)) break;
      if (round >= 3) throw internalError('erasure_plan_stale', `erasure ${request.id}: the files it planned to rewrite keep being replaced; retried after the next checkpoint`);
      await scan(host, job, users, shards);
      await erasures.saveJob(job);
    }
    await save(erasures, job, 'rewritten');
  }
  if (job.phase === 'rewritten') {
    // Windows still open hold counts only (no id): they are corrected once merged, also after the job is done.
    if (!(await correctGold(host, job, request.id, () => erasures.saveJob(job)))) return false;
    await save(erasures, job, 'gold-done');
    if (host.yieldNow?.()) return false;
  }
  if (job.phase === 'gold-done' || job.phase === 'waiting-log') {
    if (!job.stateCompacted && host.compactState) {
      for (const s of shards) await host.compactState(s);
      job.stateCompacted = true;
      await erasures.saveJob(job);
    }
    // A sealed segment goes at the truncation after the checkpoint that covers it; the active one is sealed now.
    if (host.rollLog) for (const s of await activeHolding(host.dataDir, request, job)) await host.rollLog(s);
    faultPoint('erasure:rolled');
    await host.truncateLogs();
    const held = await logsHolding(host.dataDir, request, job);
    if (!job.stateCompacted) held.push('the LMDB state files of the shards (compacted at the next start)');
    if (held.length > 0) {
      const why = `${held.join(', ')}; sealed, deleted by the truncation after the checkpoint that covers it`;
      if (job.phase !== 'waiting-log' || job.waitingFor !== why) await save(erasures, job, 'waiting-log', why);
      return false;
    }
    layer(job, 'log').files = [];
    job.completedAt ??= new Date().toISOString();
    await erasures.saveJob(job);
    faultPoint('erasure:before-audit');
    await writeAudit(host.store, request, job);
    faultPoint('erasure:audited');
    await erasures.forgetUsers(request.id);
    job.sessionIds = [];
    await save(erasures, job, 'done');
    host.log.info({ id: request.id }, 'erasure completed');
    return true;
  }
  return false;
}

/**
 * The logs that may hold records of the request's ids, with the last offset that may: the ids' own
 * shards (request.marks), the shards where the scan found matching rows (`involved`: an anonymousId
 * or an id in properties, on another user's shard) and the DLQ log (shard −1).
 */
export function logMarks(request: ErasureRequest, job: ErasureJob | undefined): Array<[number, number]> {
  const marks = new Map<number, number>([...new Set(request.shards)].map((s) => [s, request.marks.shards[String(s)] ?? -1]));
  for (const [s, mark] of Object.entries((job as Job | undefined)?.involved ?? {})) marks.set(Number(s), Math.max(marks.get(Number(s)) ?? -1, mark));
  marks.set(-1, request.marks.dlq);
  return [...marks];
}

/** The logs (shard, −1: the DLQ log) whose active (newest) segment may hold records of the request's ids. */
async function activeHolding(dataDir: string, request: ErasureRequest, job: ErasureJob): Promise<number[]> {
  const out: number[] = [];
  for (const [s, mark] of logMarks(request, job)) {
    if (mark < 0) continue;
    const names = await segmentNames(dataDir, s < 0 ? 'dlq' : `shard-${s}`);
    if (names.length > 0 && Number(names[names.length - 1]!.slice(0, 20)) <= mark) out.push(s);
  }
  return out;
}

async function segmentNames(dataDir: string, dir: string): Promise<string[]> {
  try {
    return (await readdir(join(dataDir, 'log', dir))).filter((n) => /^\d{20}\.seg$/.test(n)).sort();
  } catch {
    return [];
  }
}

/** Which log directories still hold a segment whose records may include the request's ids. */
export async function logsHolding(dataDir: string, request: ErasureRequest, job?: ErasureJob): Promise<string[]> {
  const out: string[] = [];
  for (const [s, mark] of logMarks(request, job)) {
    if (mark < 0) continue;
    const dir = s < 0 ? 'dlq' : `shard-${s}`;
    const names = await segmentNames(dataDir, dir);
    if (names.length > 0 && Number(names[0]!.slice(0, 20)) <= mark) out.push(`${dir}/${names[0]}`);
  }
  return out;
}

/**
 * The tables' candidate files. `shards` undefined: every file (tables matched by columns that do
 * not determine the shard, and dlq/, which is not sharded). Otherwise those shards' own files
 * (flushed `part-s{n}-…` and compacted `part-c…-s{n}`) and compacted files of no single shard
 * (lakes compacted before compaction kept shards apart).
 */
async function candidates(store: ObjectStore, table: TableName, shards?: ReadonlySet<number>): Promise<string[]> {
  const keys = (await store.list(`${TABLES[table].prefix}/`)).map((o) => o.key).filter((k) => k.endsWith('.parquet'));
  if (!shards) return keys;
  return keys.filter((k) => {
    const shard = shardOfPart(k);
    if (shard !== undefined) return shards.has(shard);
    return k.slice(k.lastIndexOf('/') + 1).startsWith('part-c');
  });
}

/**
 * Local paths of `keys` (S3: copies in `scratch`, named after their keys — one scratch directory
 * serves every table of a job, and names counted per call made a later table's copies overwrite
 * an earlier one's that DuckDB still had to read).
 */
async function localPaths(store: ObjectStore, keys: string[], scratch: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const key of keys) {
    let path = store.localPath(key);
    if (!path) {
      const bytes = await store.get(key);
      if (!bytes) continue;
      path = join(scratch, key.replaceAll('/', '~'));
      await writeFile(path, bytes);
    }
    out.set(path, key);
  }
  return out;
}

const parquetList = (paths: Iterable<string>): string => `[${[...paths].map(q).join(', ')}]`;

/** SQL condition matching the users' rows in a relation with those columns (sessions: also by `sessionIds`). */
function condition(ids: string[], json: string[], users: string[], sessionIds: string[], table: string): string {
  const idList = sessionIds.map(q).join(', ');
  if (table === 'session_aliases') return sessionIds.length === 0 ? 'false' : `session_id IN (${idList}) OR alias_id IN (${idList})`;
  const parts = ids.map((c) => `${c} IN (${users.map(q).join(', ')})`);
  for (const c of json) for (const u of users) parts.push(`coalesce(contains(${c}, ${q(token(u))}), false)`);
  if (table === 'sessions' && sessionIds.length > 0) parts.push(`session_id IN (${idList})`);
  return parts.length === 0 ? 'false' : parts.join(' OR ');
}

/**
 * The scan: plan (files and matching rows), session ids, touched windows, involved shards.
 * Recorded before any rewrite. Row tables are read in every shard's files (an anonymousId or an id
 * in properties sits on the shard of the event's userId); the shards where matches were found join
 * the ids' own shards as involved ones, whose sessions and session aliases are then read: sessions
 * by user_id or by the session ids of the matched silver rows (resolved through the aliases).
 */
async function scan(host: ErasureHost, job: Job, users: string[], shards: number[]): Promise<void> {
  const scratch = await mkdtemp(join(tmpdir(), 'sluice-erase-'));
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  const plan: NonNullable<ErasureJob['plan']> = [];
  // A rescan (see the rewrite step) keeps what the first scan found in files rewritten since.
  const sessionIds = new Set<string>(job.sessionIds ?? []);
  const hours = new Set<number>(job.windows?.hourly ?? []);
  // Only the first scan sees every row of theirs: a rescan comes after rewrites (their part is kept from the first).
  const first = job.plan === undefined;
  let silver: { rel: string; where: string } | undefined;
  let aliases = NO_SESSION_ALIASES;
  const lateHours = new Set<number>();
  const found = new Set<number>(Object.keys(job.involved ?? {}).map(Number));
  try {
    await conn.run("SET TimeZone = 'UTC'");
    for (const m of MATCH) {
      const paths = await localPaths(host.store, await candidates(host.store, m.table), scratch);
      if (paths.size === 0) continue;
      const cols = await columnsOf(conn, [...paths.keys()]);
      const where = condition(m.ids.filter((c) => cols.has(c)), m.json.filter((c) => cols.has(c)), users, [], m.table);
      const rel = `read_parquet(${parquetList(paths.keys())}, filename = true, union_by_name = true)`;
      for (const r of await rows(conn, `SELECT filename, count(*)::INTEGER AS n FROM ${rel} WHERE ${where} GROUP BY filename`)) {
        const key = paths.get(String(r.filename))!;
        plan.push({ table: m.table, key, rows: Number(r.n), done: false });
        const shard = m.table === 'dlq' ? undefined : shardOfPart(key);
        if (shard !== undefined) found.add(shard);
      }
      // Compacted files of no single shard: bronze rows carry their shard.
      if (m.table === 'bronze_events' && cols.has('shard')) {
        for (const r of await rows(conn, `SELECT DISTINCT shard FROM ${rel} WHERE ${where}`)) found.add(Number(r.shard));
      }
      if (m.table === 'events') {
        // The users' part of gold counts each row once: not the inputs of a compaction whose merged
        // file is present too (a crash between its publish and its deletes). Both are rewritten.
        const once = new Set(await withoutCompactedInputs(host.store, [...paths.values()]));
        const read = [...paths].filter(([, key]) => once.has(key)).map(([path]) => path);
        silver = { rel: read.length === paths.size ? rel : `read_parquet(${parquetList(read)}, filename = true, union_by_name = true)`, where };
        for (const r of await rows(conn, `SELECT DISTINCT session_id FROM ${rel} WHERE (${where}) AND session_id IS NOT NULL`)) sessionIds.add(String(r.session_id));
      }
      if (m.table === 'events' || m.table === 'late_events') {
        for (const r of await rows(conn, `SELECT DISTINCT epoch_ms(date_trunc('hour', event_time::TIMESTAMP))::BIGINT AS h FROM ${rel} WHERE ${where}`)) {
          hours.add(Number(r.h));
          if (m.table === 'late_events') lateHours.add(Number(r.h));
        }
      }
    }
    const involved = new Set<number>([...shards, ...found]);
    const sessionPaths = await localPaths(host.store, await candidates(host.store, 'sessions', involved), scratch);
    const sessionsRel = sessionPaths.size === 0 ? undefined : `read_parquet(${parquetList(sessionPaths.keys())}, filename = true, union_by_name = true)`;
    if (sessionsRel) {
      for (const r of await rows(conn, `SELECT DISTINCT session_id FROM ${sessionsRel} WHERE ${condition(SESSIONS.ids, [], users, [], 'sessions')}`)) sessionIds.add(String(r.session_id));
    }
    const aliasPaths = await localPaths(host.store, await candidates(host.store, 'session_aliases', involved), scratch);
    if (aliasPaths.size > 0) aliases = `read_parquet(${parquetList(aliasPaths.keys())}, union_by_name = true)`;
    if (aliasPaths.size > 0 && sessionIds.size > 0) {
      // An alias row names the session's final id and an earlier one: either may be what silver holds.
      const rel = `read_parquet(${parquetList(aliasPaths.keys())}, filename = true, union_by_name = true)`;
      const where = condition([], [], users, [...sessionIds], 'session_aliases');
      for (const r of await rows(conn, `SELECT DISTINCT session_id, alias_id FROM ${rel} WHERE ${where}`)) {
        sessionIds.add(String(r.session_id));
        sessionIds.add(String(r.alias_id));
      }
      for (const r of await rows(conn, `SELECT filename, count(*)::INTEGER AS n FROM ${rel} WHERE ${condition([], [], users, [...sessionIds], 'session_aliases')} GROUP BY filename`)) {
        plan.push({ table: 'session_aliases', key: aliasPaths.get(String(r.filename))!, rows: Number(r.n), done: false });
      }
    }
    // Their own sessions, and the sessions built from the matched silver rows (another user's, when matched by anonymous_id).
    if (sessionsRel) {
      for (const r of await rows(conn, `SELECT filename, count(*)::INTEGER AS n FROM ${sessionsRel} WHERE ${condition(SESSIONS.ids, [], users, [...sessionIds], 'sessions')} GROUP BY filename`)) {
        plan.push({ table: 'sessions', key: sessionPaths.get(String(r.filename))!, rows: Number(r.n), done: false });
      }
    }
    if (first) job.gold = silver ? await goldParts(host, conn, silver, aliases, users, hours, lateHours) : {};
  } finally {
    conn.closeSync();
    db.closeSync();
    await rm(scratch, { recursive: true, force: true });
  }
  job.plan = plan;
  job.sessionIds = [...sessionIds];
  // Every matching row of another shard is committed, so at or below its checkpoint now: its log is sealed and truncated past that.
  const involved = { ...job.involved };
  for (const s of found) if (!shards.includes(s)) involved[String(s)] = Math.max(involved[String(s)] ?? -1, host.checkpointed(s));
  if (Object.keys(involved).length > 0) job.involved = involved;
  const days = new Set([...hours].map((h) => Math.floor(h / DAY) * DAY).concat(job.windows?.daily ?? []));
  job.windows = { hourly: [...hours].sort((a, b) => a - b), daily: [...days].sort((a, b) => a - b) };
  layer(job, 'state').rowsRemoved = job.openSessionsPurged ?? 0;
}

async function columnsOf(conn: DuckDBConnection, paths: string[]): Promise<Set<string>> {
  const r = await rows(conn, `DESCRIBE SELECT * FROM read_parquet(${parquetList(paths)}, union_by_name = true)`);
  return new Set(r.map((x) => String(x.column_name)));
}

async function rows(conn: DuckDBConnection, sql: string): Promise<Array<Record<string, unknown>>> {
  return (await conn.runAndReadAll(sql)).getRowObjectsJS() as Array<Record<string, unknown>>;
}

/** Per row of `t`: 1 where the row belongs to (or names) one of `users` — the JS twin of `condition`. */
export function dropMask(t: Table, table: TableName | 'session_aliases', users: string[], sessionIds: string[]): Uint8Array {
  const mask = new Uint8Array(t.numRows);
  const set = new Set(users);
  const tokens = users.map(token);
  const column = (name: string): { get(i: number): unknown } | null => t.getChild(name) as { get(i: number): unknown } | null;
  if (table === 'session_aliases') {
    const ids = new Set(sessionIds);
    const a = column('alias_id');
    const s = column('session_id');
    for (let i = 0; i < t.numRows; i++) if (ids.has(String(s?.get(i))) || ids.has(String(a?.get(i)))) mask[i] = 1;
    return mask;
  }
  const m = table === 'sessions' ? SESSIONS : MATCH.find((x) => x.table === table)!;
  const idCols = m.ids.map(column).filter((c) => c !== null);
  const jsonCols = m.json.map(column).filter((c) => c !== null);
  const sessions = new Set(table === 'sessions' ? sessionIds : []);
  const sessionCol = sessions.size > 0 ? column('session_id') : null;
  for (let i = 0; i < t.numRows; i++) {
    if (idCols.some((c) => set.has(c!.get(i) as string))) mask[i] = 1;
    else if (sessionCol && sessions.has(sessionCol.get(i) as string)) mask[i] = 1;
    else if (jsonCols.some((c) => {
      const v = c!.get(i);
      return typeof v === 'string' && tokens.some((tok) => v.includes(tok));
    })) mask[i] = 1;
  }
  return mask;
}

type Grain = 'hourly' | 'daily';

const windowLength = (g: Grain): number => (g === 'hourly' ? HOUR : DAY);
const fingerprint = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

/** Whether a gold window is merged: no partial of it pending, every shard committed past it. */
async function readiness(host: ErasureHost): Promise<(g: Grain, start: number) => boolean> {
  const frontier = host.frontier();
  const partials = new Set((await host.store.list(`${PARTIALS_PREFIX}/`)).map((o) => o.key.split('/').slice(2, 4).join('/')));
  return (g, start) => !partials.has(`${g}/${start}`) && (g === 'hourly' ? frontier.hourly >= start + HOUR : frontier.daily >= start + DAY + host.sessionGapMs);
}

/** Gold metric count columns: what a user's rows add to a cell, and what erasing them subtracts. */
const COUNTS = ['events', 'active_users', 'installs', 'sessions', 'screen_views', 'notification_views', 'notification_opens'] as const;

const num = (v: unknown): number => (typeof v === 'bigint' ? Number(v) : typeof v === 'number' ? v : Number(v ?? 0));

/**
 * The users' part of each gold window they touched (hours in `hours`, their days): gold-sql's rows
 * over their own silver rows alone (`silver.where` of the candidate files, read before any
 * rewrite), with session_ms and bounces for the daily ratios. Every count of a cell is a sum over
 * rows or sessions, and active_users counts each of them once per cell, so the part subtracts
 * exactly when what the erasure drops is whole users and whole sessions, all counted in gold. Where
 * it is not — a row of another user that names them (properties, anonymous_id: that user may keep
 * other rows in the cell, so taking one active user off it would be wrong), a session some of whose
 * events stay, a too-late event of theirs still in late/ (`lateHours`: whether its window was
 * reconciled already is not known) — the window is marked to be recomputed, and so are the windows
 * of those sessions' remaining events (their first event may move), which `hours` gains. The
 * window's gold file is fingerprinted now (null when not merged yet: then it is recomputed once merged): the
 * subtraction applies only to that same file.
 */
async function goldParts(
  host: ErasureHost,
  conn: DuckDBConnection,
  silver: { rel: string; where: string },
  aliases: string,
  users: string[],
  hours: Set<number>,
  lateHours: ReadonlySet<number>,
): Promise<Record<string, GoldWindowCorrection>> {
  await conn.run(`CREATE OR REPLACE TEMP TABLE erased AS SELECT * EXCLUDE (filename) FROM ${silver.rel} WHERE ${silver.where}`);
  const erased = `(${resolveSessionIds('erased', aliases)})`;
  const kept = `(${resolveSessionIds(`(SELECT * EXCLUDE (filename) FROM ${silver.rel} WHERE NOT coalesce((${silver.where}), false))`, aliases)})`;
  const hourOf = "epoch_ms(date_trunc('hour', event_time::TIMESTAMP))::BIGINT";
  const inexact = new Set<number>(lateHours);
  for (const r of await rows(conn, `SELECT DISTINCT ${hourOf} AS h FROM erased WHERE user_id IS NOT NULL AND user_id NOT IN (${users.map(q).join(', ')})`)) inexact.add(Number(r.h));
  const split = `SELECT session_id FROM ${erased} WHERE session_id IS NOT NULL INTERSECT SELECT session_id FROM ${kept} WHERE session_id IS NOT NULL`;
  for (const r of await rows(conn, `SELECT DISTINCT ${hourOf} AS h FROM (SELECT session_id, event_time FROM ${erased} UNION ALL SELECT session_id, event_time FROM ${kept}) WHERE session_id IN (${split})`)) inexact.add(Number(r.h));
  for (const h of inexact) hours.add(h);
  const types = { ...DEFAULT_METRIC_EVENT_TYPES, ...host.metricEventTypes };
  const ready = await readiness(host);
  const days = new Set([...hours].map((h) => Math.floor(h / DAY) * DAY));
  const out: Record<string, GoldWindowCorrection> = {};
  for (const [g, start] of [...[...hours].map((h) => ['hourly', h] as const), ...[...days].map((d) => ['daily', d] as const)]) {
    const end = start + windowLength(g);
    const recompute = [...inexact].some((h) => h >= start && h < end);
    let base: string | null = null;
    if (ready(g, start)) {
      const bytes = await host.store.get(goldWindowKey(g, start));
      base = bytes ? fingerprint(bytes) : null;
    }
    const parts = recompute || base === null ? [] : await rows(conn, goldMetricsSql(g, erased, start, end, types, { sums: g === 'daily', sessionGapMs: host.sessionGapMs }));
    out[`${g}/${start}`] = {
      base,
      rows: parts.map((r) => Object.fromEntries(Object.entries(r).filter(([k]) => k !== 'window_start').map(([k, v]) => [k, typeof v === 'string' ? v : num(v)]))),
      ...(recompute ? { recompute: true } : {}),
    };
  }
  return out;
}

/**
 * `gold` (a merged window's rows) without the users' `part`; undefined when the part does not fit
 * (a cell missing or a count going negative: the file is not the one the part was taken against).
 * Daily ratios are re-derived from the remaining integer sums the way gold-sql computes them, so
 * the result has the same bits as a recomputation: Σ duration ms = avg_session_s × 1000 × sessions
 * and bounces = bounce_rate × sessions, rounded (exact while Σ ms < 2^50). A cell left with no
 * event disappears.
 */
export function subtractPart(g: Grain, gold: MetricRow[], part: ReadonlyArray<Record<string, string | number>>): MetricRow[] | undefined {
  const key = (r: Record<string, unknown>): string => `${String(r.device_type)}\u0001${String(r.app_version)}\u0001${String(r.country)}`;
  const cells = new Map(gold.map((r) => [key(r), { ...r }]));
  for (const p of part) {
    const r = cells.get(key(p));
    if (!r) return undefined;
    const started = num(r.sessions);
    for (const f of COUNTS) {
      r[f] = num(r[f]) - num(p[f]);
      if ((r[f] as number) < 0) return undefined;
    }
    if (g === 'daily') {
      const left = r.sessions as number;
      const ms = started === 0 ? 0 : Math.round(num(r.avg_session_s) * 1000 * started) - num(p.session_ms);
      const bounces = started === 0 ? 0 : Math.round(num(r.bounce_rate) * started) - num(p.bounces);
      if (ms < 0 || bounces < 0 || bounces > left) return undefined;
      r.avg_session_s = left === 0 ? null : ms / left / 1000;
      r.bounce_rate = left === 0 ? null : bounces / left;
      r.notification_ctr = (r.notification_views as number) === 0 ? null : (r.notification_opens as number) / (r.notification_views as number);
    }
  }
  return gold.map((r) => cells.get(key(r))!).filter((r) => num(r.events) > 0);
}

/** The rows of a gold window file (low volume: one per grouping-set cell). */
function goldRows(bytes: Uint8Array): MetricRow[] {
  return decodeParquet(bytes).toArray().map((r) => (r as { toJSON(): MetricRow }).toJSON());
}

/**
 * Corrects the job's remaining gold windows that are merged: each has the users' part subtracted
 * (read the window's file, subtract, overwrite it, commit record), at a cost that follows their
 * rows; a window whose part is missing or marked, or whose file changed since the scan (another
 * writer — reconciliation, a merge — rewrote it: whether it still counts them is unknown), is
 * recomputed from silver instead (recomputeWindows). Windows not merged yet stay in `job.windows`.
 * Crash-safe: the corrected file's fingerprint is saved (`save`) before it is written, so a redo
 * that finds it in place does not subtract twice. False when it stopped early (`host.yieldNow`):
 * the windows left stay in `job.windows` for the next call.
 */
async function correctGold(host: ErasureHost, job: ErasureJob, id: string, save: () => Promise<void>): Promise<boolean> {
  const windows = job.windows ?? { hourly: [], daily: [] };
  if (windows.hourly.length + windows.daily.length === 0) return true;
  const ready = await readiness(host);
  const todo = [...windows.hourly.map((s) => ['hourly', s] as const), ...windows.daily.map((s) => ['daily', s] as const)].filter(([g, s]) => ready(g, s));
  const recompute: Array<readonly [Grain, number]> = [];
  for (const [g, start] of todo) {
    const part = job.gold?.[`${g}/${start}`];
    if (!part || part.recompute || part.base === null) {
      recompute.push([g, start]);
      continue;
    }
    const key = goldWindowKey(g, start);
    let bytes = await host.store.get(key);
    const now = bytes ? fingerprint(bytes) : null;
    if (now !== part.next || now === null) {
      const left = now === part.base && bytes ? subtractPart(g, goldRows(bytes), part.rows) : undefined;
      if (!left) {
        host.log.info({ id, window: `${g}/${start}` }, 'gold window changed since the erasure scan; recomputed from silver');
        recompute.push([g, start]);
        continue;
      }
      bytes = encodeParquet([metricRowsToBatch(g, left)], { compression: host.compression });
      part.next = fingerprint(bytes);
      await save();
      faultPoint('erasure:gold-recorded');
      await host.store.put(key, bytes);
      faultPoint('erasure:gold-written');
    }
    // Also when redone after a crash that came after the write (same id: the record is rewritten, not added).
    await writeCommitRecord(host.store, { id: `erase-${id}-gold-${g}-${start}`, time: new Date().toISOString(), kind: 'reconcile', added: [{ key, rows: decodeParquet(bytes!).numRows, bytes: bytes!.byteLength }], removed: [] });
    part.how = 'subtracted';
    windowCorrected(job, g, start, key);
    await save();
    if (host.yieldNow?.()) return false;
  }
  if (recompute.length > 0) await recomputeWindows(host, job, id, recompute);
  return true;
}

function windowCorrected(job: ErasureJob, g: Grain, start: number, key: string): void {
  const l = layer(job, g === 'hourly' ? 'hourly_metrics' : 'daily_metrics');
  if (!l.files.includes(key)) l.files.push(key);
  const windows = job.windows!;
  if (g === 'hourly') windows.hourly = windows.hourly.filter((s) => s !== start);
  else windows.daily = windows.daily.filter((s) => s !== start);
}

/**
 * The fallback: recomputes merged windows from the silver of every shard around them (the
 * windows' days ± 1), as reconciliation does — a cost that follows the lake, for the windows
 * correctGold cannot subtract from exactly.
 */
async function recomputeWindows(host: ErasureHost, job: ErasureJob, id: string, todo: ReadonlyArray<readonly [Grain, number]>): Promise<void> {
  const silverKeys = (await host.store.list(`${TABLES.events.prefix}/`)).map((o) => o.key).filter((k) => k.endsWith('.parquet'));
  const lo = Math.min(...todo.map(([, s]) => s)) - DAY;
  const hi = Math.max(...todo.map(([, s]) => s)) + 2 * DAY;
  const scratch = await mkdtemp(join(tmpdir(), 'sluice-erase-gold-'));
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  try {
    const inRange = silverKeys.filter((k) => {
      const t = partitionTimeOfKey(k);
      return t !== undefined && t >= lo && t < hi;
    });
    // Each row once, also while a compaction's merged file and its inputs are both present.
    const silverPaths = await localPaths(host.store, await withoutCompactedInputs(host.store, inRange), scratch);
    const aliasKeys = (await host.store.list(`${TABLES.session_aliases.prefix}/`)).map((o) => o.key).filter((k) => k.endsWith('.parquet'));
    const aliasPaths = await localPaths(host.store, aliasKeys, scratch);
    const parquet = (p: Iterable<string>): string => `read_parquet(${parquetList(p)}, union_by_name = true)`;
    const silver =
      silverPaths.size === 0
        ? undefined
        : `(${resolveSessionIds(`(SELECT * FROM ${parquet(silverPaths.keys())})`, aliasPaths.size > 0 ? parquet(aliasPaths.keys()) : NO_SESSION_ALIASES)})`;
    const types = { ...DEFAULT_METRIC_EVENT_TYPES, ...host.metricEventTypes };
    for (const [g, start] of todo) {
      const out = silver ? await rows(conn, goldMetricsSql(g, silver, start, start + windowLength(g), types, { sessionGapMs: host.sessionGapMs })) : [];
      const key = goldWindowKey(g, start);
      const batch = metricRowsToBatch(g, out);
      const body = encodeParquet([batch], { compression: host.compression });
      await host.store.put(key, body);
      await writeCommitRecord(host.store, { id: `erase-${id}-gold-${g}-${start}`, time: new Date().toISOString(), kind: 'reconcile', added: [{ key, rows: batch.numRows, bytes: body.byteLength }], removed: [] });
      const part = job.gold?.[`${g}/${start}`];
      if (part) part.how = 'recomputed';
      windowCorrected(job, g, start, key);
    }
  } finally {
    conn.closeSync();
    db.closeSync();
    await rm(scratch, { recursive: true, force: true });
  }
}

/** The audit record: append-only, one object per request, never an id in clear. */
export interface AuditRecord {
  requestId: string;
  receivedAt: string;
  completedAt: string;
  reason: string | null;
  /** HMAC-SHA256 of each user id with the data directory's salt (`<data>/erasure/salt`), hex. */
  userHashes: string[];
  hash: 'hmac-sha256(salt, user_id)';
  layers: Record<string, { files: string[]; rowsRemoved: number }>;
  openSessionsPurged: number;
}

async function writeAudit(store: ObjectStore, request: ErasureRequest, job: ErasureJob): Promise<void> {
  const record: AuditRecord = {
    requestId: request.id,
    receivedAt: request.receivedAt,
    completedAt: job.completedAt!,
    reason: request.reason,
    userHashes: request.userHashes,
    hash: 'hmac-sha256(salt, user_id)',
    layers: job.layers,
    openSessionsPurged: job.openSessionsPurged ?? 0,
  };
  await store.put(`${AUDIT_PREFIX}${request.id}.json`, new TextEncoder().encode(`${JSON.stringify(record, null, 1)}\n`));
}

/** Every audit record of the lake, oldest first. */
export async function listAudit(store: ObjectStore): Promise<AuditRecord[]> {
  const out: AuditRecord[] = [];
  for (const o of await store.list(AUDIT_PREFIX)) {
    const b = await store.get(o.key);
    if (b) out.push(JSON.parse(new TextDecoder().decode(b)) as AuditRecord);
  }
  return out.sort((a, b) => (a.receivedAt < b.receivedAt ? -1 : 1));
}
