/**
 * A steady trickle of late events into an old hour, through the real sink path (PartitionBuffer →
 * encodeGroups → TwoPhaseCommitter → local lake) over an injected clock: files stay few (at most
 * one per shard per flush interval), compaction brings the partition to ≤ 2 files with every row
 * kept, and a crash after any compaction step neither loses nor doubles rows — for a
 * commit-honouring reader at every instant, and for a plain DuckDB glob once finishCompactions ran.
 * Retention then deletes expired partitions.
 */
import { cpSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { partName, TABLES } from '../../common/lake-layout.js';
import { listCommitRecords, liveFiles, writeCommitRecord } from '../../storage/commit-record.js';
import { applyRetention, compactAll, compactPartition, finishCompactions, partitionsOf, type CompactOptions } from '../../storage/compact.js';
import { encodeGroups } from '../../storage/encode-groups.js';
import { LocalObjectStore } from '../../storage/local-store.js';
import { PartitionBuffer } from '../../storage/partition-buffer.js';
import { TwoPhaseCommitter } from '../../storage/two-phase.js';
import { glob, openDuck, type Duck } from './duck.js';
import { bronzeOf, silverRows } from './silver-rows.js';
import { encodeParquet } from '../../storage/parquet.js';

const H = 3_600_000;
const LATE_HOUR = Date.UTC(2026, 4, 10, 9);
const START = LATE_HOUR + 6 * H; // "now" when the trickle starts
const SHARDS = 2;
const FLUSH_MS = 10_000;
const SECONDS = 600; // ten simulated minutes, one late event per second
const LATE_DIR = `${TABLES.events.prefix}/year=2026/month=05/day=10/hour=09/`;
const LATE_PATH = 'year=2026/month=05/day=10/hour=09';

const root = mkdtempSync(join(tmpdir(), 'sluice-trickle-'));
const pristine = join(root, 'pristine');
let duck: Duck;
let endMs = 0;

/** Runs the trickle into a fresh lake at `pristine`. */
async function writeTrickle(): Promise<void> {
  const store = new LocalObjectStore(pristine);
  let now = START;
  const shards = Array.from({ length: SHARDS }, (_, s) => ({
    buffer: new PartitionBuffer({ flushIntervalMs: FLUSH_MS }),
    committer: new TwoPhaseCommitter(store, { now: () => now }),
    offset: 0,
    shard: s,
  }));
  let seed = 1;
  for (let second = 0; second < SECONDS; second++) {
    now = START + second * 1_000;
    for (const sh of shards) {
      // Current traffic (a few events in the current hour) and, on alternate shards, one late event.
      sh.buffer.addByTime('events', silverRows({ rows: 3, seed: seed++, startMs: now - 2_000, spanMs: 1_000, batchRows: 3 })[0]!, 'event_time', now, sh.offset++);
      if (second % SHARDS === sh.shard) {
        sh.buffer.addByTime('events', silverRows({ rows: 1, seed: seed++, startMs: LATE_HOUR + second * 1_000, spanMs: 1, batchRows: 1 })[0]!, 'event_time', now, sh.offset++);
      }
      const due = sh.buffer.takeDue(now);
      if (due.length === 0) continue;
      const first = Math.min(...due.map((g) => g.minOffset!));
      const last = Math.max(...due.map((g) => g.maxOffset!));
      const files = encodeGroups(due, (suffix) => partName(sh.shard, first, last, suffix));
      const pending = await sh.committer.stage(files, { id: `s${sh.shard}-${first}-${last}`, kind: 'flush', shard: sh.shard, offsets: { first, last } });
      await sh.committer.publish(pending);
    }
  }
  now = START + SECONDS * 1_000;
  for (const sh of shards) {
    const due = sh.buffer.takeDue(now, { force: true });
    if (due.length === 0) continue;
    const first = Math.min(...due.map((g) => g.minOffset!));
    const last = Math.max(...due.map((g) => g.maxOffset!));
    await sh.committer.publish(await sh.committer.stage(encodeGroups(due, (s) => partName(sh.shard, first, last, s)), { id: `s${sh.shard}-${first}-${last}`, kind: 'flush', shard: sh.shard }));
  }
  endMs = now;
}

let copies = 0;
function freshLake(): { dir: string; store: LocalObjectStore } {
  const dir = join(root, `lake-${copies++}`);
  cpSync(pristine, dir, { recursive: true });
  return { dir, store: new LocalObjectStore(dir) };
}

/** Rows and distinct event ids a plain glob reader sees in the late hour. */
async function globCount(dir: string): Promise<[number, number]> {
  const [r] = await duck.rows<{ n: bigint; d: bigint }>(`SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM ${glob(join(dir, TABLES.events.prefix))} WHERE hour = 9`);
  return [Number(r!.n), Number(r!.d)];
}

/** Rows and distinct ids a commit-honouring reader (liveFiles) sees in the late hour. */
async function liveCount(dir: string, store: LocalObjectStore): Promise<[number, number]> {
  const keys = [...(await liveFiles(store, LATE_DIR)).keys()];
  if (keys.length === 0) return [0, 0];
  const [r] = await duck.rows<{ n: bigint; d: bigint }>(`SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM read_parquet([${keys.map((k) => `'${join(dir, k)}'`).join(', ')}])`);
  return [Number(r!.n), Number(r!.d)];
}

const lateFiles = async (store: LocalObjectStore): Promise<string[]> => ((await partitionsOf(store, 'events')).get(LATE_DIR) ?? []).map((f) => f.key);

beforeAll(async () => {
  duck = await openDuck();
  await writeTrickle();
});
afterAll(() => {
  duck.close();
  rmSync(root, { recursive: true, force: true });
});

describe('late trickle', () => {
  it('makes at most one file per shard per flush interval in the late partition, never one per event', async () => {
    const store = new LocalObjectStore(pristine);
    const files = await lateFiles(store);
    const intervals = Math.ceil((SECONDS * 1_000) / FLUSH_MS);
    expect(files.length).toBeLessThanOrEqual(SHARDS * (intervals + 1));
    expect(files.length).toBeLessThan(SECONDS / 4);
    expect(await globCount(pristine)).toEqual([SECONDS, SECONDS]);
    expect(await liveCount(pristine, store)).toEqual([SECONDS, SECONDS]);
  });

  it('compacts the partition to one file per shard keeping every row exactly once', async () => {
    const { dir, store } = freshLake();
    const before = await lateFiles(store);
    const r = await compactPartition(store, TABLES.events.prefix, LATE_PATH, { now: endMs + 1 });
    // Shards are never merged together (a user's rows stay in their shard's files: erasure).
    expect(r).toEqual({ inputs: before.length, outputs: SHARDS, rows: SECONDS });
    const after = await lateFiles(store);
    expect(after).toHaveLength(SHARDS);
    expect(after.map((k) => /\/part-c[0-9a-f]{16}-s(\d+)\.parquet$/.exec(k)?.[1]).sort()).toEqual(Array.from({ length: SHARDS }, (_, i) => String(i)));
    expect(await globCount(dir)).toEqual([SECONDS, SECONDS]);
    expect(await liveCount(dir, store)).toEqual([SECONDS, SECONDS]);
    expect([...(await liveFiles(store, LATE_DIR)).values()].reduce((n, rows) => n + rows, 0)).toBe(SECONDS);
    // Running it again has nothing left to merge.
    expect(await compactPartition(store, TABLES.events.prefix, LATE_PATH, { now: endMs + 2 })).toEqual({ inputs: 0, outputs: 0, rows: 0 });
    // The merged file is readable and sorted rows survived: ids are the originals.
    const records = await listCommitRecords(store);
    const compact = records.filter((x) => x.kind === 'compact');
    expect(compact).toHaveLength(SHARDS);
    const removed = compact.flatMap((c) => c.removed);
    expect(removed.map((f) => f.key).sort()).toEqual(before.sort());
    expect(removed.reduce((n, f) => n + f.rows, 0)).toBe(SECONDS);
  });

  it('splits into target-size files when the partition is bigger than the target', async () => {
    const { dir, store } = freshLake();
    const inputs = await lateFiles(store);
    const sizes = (await store.list(LATE_DIR)).reduce((n, o) => n + o.size, 0);
    const r = await compactPartition(store, TABLES.events.prefix, LATE_PATH, { now: endMs + 1, targetBytes: Math.ceil(sizes / 3), smallFileBytes: sizes });
    // Greedy packing by size; a last group of one file is left as it is.
    expect(r.inputs).toBeGreaterThanOrEqual(inputs.length - 1);
    expect(r.outputs).toBeGreaterThanOrEqual(3);
    expect(r.outputs).toBeLessThanOrEqual(4);
    expect(await globCount(dir)).toEqual([SECONDS, SECONDS]);
  });

  it.each(['stage', 'record', 'publish'] as const)('survives a crash after the %s step: never loses or doubles rows', async (step) => {
    const { dir, store } = freshLake();
    const inputs = await lateFiles(store);
    const options: CompactOptions = { now: endMs + 1, stopAfter: step };
    await compactPartition(store, TABLES.events.prefix, LATE_PATH, options);
    // At the crash instant a commit-honouring reader still sees every row exactly once.
    expect(await liveCount(dir, store)).toEqual([SECONDS, SECONDS]);
    // A plain glob reader sees doubles only in the publish→delete window.
    expect(await globCount(dir)).toEqual(step === 'publish' ? [2 * SECONDS, SECONDS] : [SECONDS, SECONDS]);

    const finished = await finishCompactions(store);
    expect(finished.lost).toEqual([]);
    expect(finished.finished).toBe(step === 'stage' ? 0 : SHARDS);
    expect(await globCount(dir)).toEqual([SECONDS, SECONDS]);
    expect(await liveCount(dir, store)).toEqual([SECONDS, SECONDS]);
    const files = await lateFiles(store);
    expect(files.length).toBe(step === 'stage' ? inputs.length : SHARDS);
    // Nothing staged is left behind, and a later compaction run converges to the same state.
    expect(await store.list('_sluice/staging/')).toEqual([]);
    await compactPartition(store, TABLES.events.prefix, LATE_PATH, { now: endMs + 2 });
    expect(await lateFiles(store)).toHaveLength(SHARDS);
    expect(await globCount(dir)).toEqual([SECONDS, SECONDS]);
    expect(await liveCount(dir, store)).toEqual([SECONDS, SECONDS]);
  });

  it('backs off when another compactor already claimed one of its inputs', async () => {
    const { dir, store } = freshLake();
    const [first] = await lateFiles(store);
    await writeCommitRecord(store, { id: 'compact-rival', time: new Date(endMs).toISOString(), kind: 'compact', added: [{ key: `${LATE_DIR}part-crival.parquet`, rows: 1 }], removed: [{ key: first!, rows: 1 }] });
    const r = await compactPartition(store, TABLES.events.prefix, LATE_PATH, { now: endMs + 1 });
    // The rival's shard backs off; the other shards' files are merged.
    expect(r.outputs).toBe(SHARDS - 1);
    expect((await listCommitRecords(store)).filter((x) => x.kind === 'compact' && x.aborted)).toHaveLength(1);
    expect(await globCount(dir)).toEqual([SECONDS, SECONDS]);
    expect(await liveCount(dir, store)).toEqual([SECONDS, SECONDS]);
  });

  it('compactAll only touches closed partitions; retention deletes expired ones with a record', async () => {
    const { dir, store } = freshLake();
    const currentHours = [...(await partitionsOf(store, 'events')).keys()].filter((d) => d !== LATE_DIR);
    const beforeCurrent = await Promise.all(currentHours.map(async (d) => (await store.list(d)).length));
    const r = await compactAll(store, { olderThanMs: H, now: endMs, tables: ['events'] });
    expect(r.partitions).toBe(1);
    expect(await lateFiles(store)).toHaveLength(SHARDS);
    expect(await Promise.all(currentHours.map(async (d) => (await store.list(d)).length))).toEqual(beforeCurrent);

    const removed = await applyRetention(store, { silver: 1 }, LATE_HOUR + 25 * H);
    expect(removed.partitions).toBe(1);
    expect(await lateFiles(store)).toEqual([]);
    expect(existsSync(join(dir, LATE_DIR))).toBe(false);
    const retention = (await listCommitRecords(store)).find((x) => x.kind === 'retention')!;
    expect(retention.removed.reduce((n, f) => n + f.rows, 0)).toBe(SECONDS);
    expect(await liveFiles(store, LATE_DIR)).toEqual(new Map());
    // The newer partitions are untouched.
    expect((await partitionsOf(store, 'events')).size).toBe(currentHours.length);
  });

  it('compactAll stops between partitions once its signal is aborted (a closing engine does not wait for a whole run)', async () => {
    const { store } = freshLake();
    const before = (await lateFiles(store)).length;
    expect(before).toBeGreaterThan(SHARDS);
    const aborted = new AbortController();
    aborted.abort();
    const none = await compactAll(store, { olderThanMs: H, now: endMs, tables: ['events'], signal: aborted.signal });
    expect(none.partitions).toBe(0);
    expect(await lateFiles(store)).toHaveLength(before);
    const live = new AbortController();
    const r = await compactAll(store, { olderThanMs: H, now: endMs, tables: ['events'], signal: live.signal });
    expect(r.partitions).toBe(1);
    expect(await lateFiles(store)).toHaveLength(SHARDS);
  });

  it('never merges files of different schemas together', async () => {
    const dir = join(root, 'mixed');
    const store = new LocalObjectStore(dir);
    const committer = new TwoPhaseCommitter(store, { now: () => endMs });
    const a = silverRows({ rows: 10, seed: 901, startMs: LATE_HOUR, spanMs: 1_000, batchRows: 10 })[0]!;
    const b = silverRows({ rows: 20, seed: 902, startMs: LATE_HOUR, spanMs: 1_000, batchRows: 20 })[0]!;
    // Same rows plus a column: a newer writer's schema.
    const extra = bronzeOf(silverRows({ rows: 5, seed: 903, startMs: LATE_HOUR, spanMs: 1_000, batchRows: 5 })[0]!, 0, 0);
    const files = [
      { key: `${LATE_DIR}part-s0-0-0.parquet`, body: encodeParquet([a]), rows: 10 },
      { key: `${LATE_DIR}part-s0-1-1.parquet`, body: encodeParquet([extra]), rows: 5 },
      { key: `${LATE_DIR}part-s0-2-2.parquet`, body: encodeParquet([b]), rows: 20 },
      { key: `${LATE_DIR}part-s0-3-3.parquet`, body: encodeParquet([a.slice(0, 3)]), rows: 3 },
    ];
    await committer.publish(await committer.stage(files, { id: 'mixed', kind: 'flush' }));
    const r = await compactPartition(store, TABLES.events.prefix, LATE_PATH, { now: endMs + 1 });
    // Key order: [s0-0 | s0-1 (other schema) | s0-2, s0-3] → only the last two merge.
    expect(r).toEqual({ inputs: 2, outputs: 1, rows: 23 });
    expect((await lateFiles(store)).length).toBe(3);
    const [n] = await duck.rows<{ n: bigint }>(`SELECT count(*) AS n FROM read_parquet('${join(dir, LATE_DIR)}*.parquet', union_by_name = true)`);
    expect(Number(n!.n)).toBe(38);
  });
});
