/**
 * The two erasure steps that need the files closed. A running engine does both online (the job:
 * SegmentLog.roll on the log's writer, and the shard task compact-state, which closes the shard's
 * LMDB environment and calls `compactLmdbFile`); these run them at start, before anything opens
 * the files, for a request a crash interrupted:
 *
 * - `sealErasedLogs` (before the logs open: `sluice serve`, `sluice erase`): a log's active
 *   segment is never deleted by truncation, so one holding records at or below a request's mark
 *   is sealed by creating the next, empty segment — exactly what the log does when it rolls. The
 *   engine's next checkpoint then truncates the sealed one (every record in it is committed).
 * - `compactErasedState` (before the shards open: Coordinator.start): LMDB keeps freed pages —
 *   with the purged sessions' bytes — until it reuses them; a copy of the shard's entries into a
 *   fresh environment holds live pages only, and replaces the file.
 *
 * Both are idempotent; the job (engine/erasure-job.ts) waits for their effect before it completes.
 */
import { open as openFile, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { RootDatabase } from 'lmdb';
import { internalError } from '../common/errors.js';
import { faultPoint } from '../common/fault.js';
import { SegmentLog } from '../log/segment-log.js';
import type { ErasureStore } from '../storage/erasure-store.js';
import { logMarks } from './erasure-job.js';
import { openStateEnv } from './state-env.js';

const segmentName = (first: number): string => `${String(first).padStart(20, '0')}.seg`;

async function fsyncDir(dir: string): Promise<void> {
  const fh = await openFile(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Replaces the shard state file at `path` (closed by everyone in this process) by a copy of its
 * entries into a fresh environment: live pages only, so no freed page keeps bytes of deleted
 * entries. The copy is fsync'd and renamed over the file (a crash leaves the old file or the new
 * one, and at worst a stray copy, removed next time). False when there is no file.
 *
 * Not LMDB's compacting copy (`env.backup(path, true)`, MDB_CP_COMPACT): of a database holding
 * values on overflow pages (a dedup run over ≈ 2 KB: ≈ 250 ids of one prefix) it wrote a file
 * whose next drop of that database failed LMDB's assertion in mdb_page_alloc and aborted the
 * process — at every restart, as the file stayed (lmdb-js issue 198;
 * test/engine/state-compact.test.ts).
 */
export async function compactLmdbFile(path: string): Promise<boolean> {
  if (!(await stat(path).catch(() => undefined))) return false;
  const copy = `${path}.compact`;
  await rm(copy, { force: true });
  await rm(`${copy}-lock`, { force: true });
  const env = openStateEnv(path);
  try {
    const target = openStateEnv(copy);
    try {
      copyEntries(env, target, path);
    } finally {
      await target.close();
    }
  } finally {
    await env.close();
  }
  await rm(`${copy}-lock`, { force: true });
  const fh = await openFile(copy, 'r+');
  await fh.sync();
  await fh.close();
  faultPoint('erasure:state-copied');
  await rename(copy, path);
  await rm(`${path}-lock`, { force: true });
  await fsyncDir(dirname(path));
  return true;
}

/** Entries and bytes copied per write transaction (bound the copy's memory, not its result). */
const COPY_BATCH = 10_000;
const COPY_BATCH_BYTES = 64 * 1024 * 1024;

/**
 * Every named database of `from` and its entries, byte for byte (keys and values as stored: the
 * encodings are the readers'), into the empty environment `to`, in key order (appended: full
 * pages). The databases are the root's keys: shard state puts nothing in the root itself.
 * Each database's entry count is checked against the source's.
 */
function copyEntries(from: RootDatabase, to: RootDatabase, path: string): void {
  for (const name of [...from.getKeys()].map(String)) {
    const src = from.openDB({ name, keyEncoding: 'binary', encoding: 'binary' });
    const dst = to.openDB({ name, keyEncoding: 'binary', encoding: 'binary' });
    let batch: Array<[Buffer, Buffer]> = [];
    let batchBytes = 0;
    let copied = 0;
    const flush = (): void => {
      const entries = batch;
      to.transactionSync(() => {
        for (const [k, v] of entries) dst.putSync(k, v, { append: true });
      });
      copied += entries.length;
      batch = [];
      batchBytes = 0;
    };
    for (const { key, value } of src.getRange()) {
      const entry: [Buffer, Buffer] = [Buffer.from(key as Buffer), Buffer.from(value as Buffer)];
      batch.push(entry);
      batchBytes += entry[0].length + entry[1].length;
      if (batch.length >= COPY_BATCH || batchBytes >= COPY_BATCH_BYTES) flush();
    }
    flush();
    const expected = src.getCount();
    if (copied !== expected || dst.getCount() !== expected) throw internalError('state_copy_mismatch', `copying shard state database ${name} of ${path}: ${copied} entries copied, ${dst.getCount()} in the copy, ${expected} in the source`);
  }
}

/** Jobs past their purge (their state is purged, their log records committed). */
async function purgedJobs(erasures: ErasureStore): Promise<Awaited<ReturnType<ErasureStore['open']>>> {
  return (await erasures.open()).filter(({ job }) => job.phase === 'scanned' || job.phase === 'rewritten' || job.phase === 'gold-done' || job.phase === 'waiting-log');
}

/** Seals each log whose active segment still holds a record at or below an open request's mark. Returns the sealed log dirs. */
export async function sealErasedLogs(dataDir: string, erasures: ErasureStore): Promise<string[]> {
  const sealed: string[] = [];
  const seal = async (name: string, shard: number, mark: number): Promise<void> => {
    const dir = join(dataDir, 'log', name);
    let names: string[];
    try {
      names = (await readdir(dir)).filter((n) => /^\d{20}\.seg$/.test(n)).sort();
    } catch {
      return;
    }
    if (names.length === 0 || mark < 0) return;
    const active = names[names.length - 1]!;
    if (Number(active.slice(0, 20)) > mark) return;
    const log = await SegmentLog.open({ dir, shard });
    const next = log.nextOffset;
    await log.close();
    if (next <= Number(active.slice(0, 20))) return; // empty active segment: nothing to seal
    const fh = await openFile(join(dir, segmentName(next)), 'wx').catch(() => undefined);
    await fh?.close();
    await fsyncDir(dir);
    sealed.push(name);
  };
  // The ids' shards, the shards where their scan found rows (anonymous_id, properties), and the DLQ log.
  for (const { request, job } of await purgedJobs(erasures)) {
    for (const [s, mark] of logMarks(request, job)) await seal(s < 0 ? 'dlq' : `shard-${s}`, s, mark);
  }
  return sealed;
}

/**
 * Compacts the LMDB file of each of the requested ids' shards (an open, purged request): only there
 * did the purge delete anything. Returns the shards compacted.
 */
export async function compactErasedState(dataDir: string, erasures: ErasureStore): Promise<number[]> {
  const done: number[] = [];
  for (const { request, job } of await purgedJobs(erasures)) {
    if (job.stateCompacted) continue;
    for (const s of new Set(request.shards)) {
      if (done.includes(s)) continue;
      if (await compactLmdbFile(join(dataDir, 'shards', String(s), 'state.mdb'))) done.push(s);
    }
    job.stateCompacted = true;
    await erasures.saveJob(job);
  }
  return done;
}
