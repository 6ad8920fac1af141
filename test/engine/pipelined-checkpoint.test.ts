/**
 * Pipelined checkpoints (ShardRuntime.beginCheckpoint): a checkpoint holds its shard only for its
 * cut; the records processed while the cut is encoded, staged, recorded in LMDB and published go
 * to the next checkpoint. Real LMDB, a real local lake read back by DuckDB.
 *
 * Oracles that do not share the runtime's code: the stream's own ids (generated here, with the
 * disorder, re-sends and late events of real phones), each exactly once in silver; and the same
 * stream checkpointed one commit after another at the same records, whose lake must be the same
 * file for file, byte for byte.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { ObjectStore } from '../../storage/object-store.js';
import { openObjectStore } from '../../storage/open-store.js';
import { listCommitRecords } from '../../storage/commit-record.js';
import { ShardPool } from '../../engine/pool.js';
import { ShardRuntime } from '../../engine/shard-runtime.js';
import type { CheckpointResult } from '../../engine/types.js';
import { IngestBatchBuilder, type IngestRow } from '../../ingest/batch-builder.js';
import { openLakeReader } from '../helpers/lake.js';
import { testRuntimeOptions } from '../helpers/shard-runtime.js';

const MIN = 60_000;
const T0 = Date.UTC(2026, 5, 10, 7, 0, 0);
const root = mkdtempSync(join(tmpdir(), 'sluice-pipelined-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const dir = (name: string): string => join(root, name);

/** Checkpoints come after every record whose index ≡ 3 (mod 4), and after the last. */
const cutsAfter = (r: number, records: number): boolean => r % 4 === 3 || r === records - 1;

interface PhoneStream {
  records: ArrayBuffer[];
  /** Every distinct event id sent (re-sends share one). */
  ids: Set<string>;
  events: number;
}

/**
 * Log records of what phones send: `perRecord` events each, 40 min of received time apart;
 * event times up to 50 min before receipt for one in eight (a phone offline for a while), 2 h
 * before for one in 30 (later than the lateness allows), and one in 15 a re-send of an event
 * already sent (same id, received again up to an hour later). Deterministic for a seed.
 */
function phoneStream(recordCount: number, perRecord: number, users: number, seed: number): PhoneStream {
  let x = seed >>> 0;
  const rand = (): number => {
    x = (x + 0x6d2b79f5) >>> 0;
    let t = Math.imul(x ^ (x >>> 15), 1 | x);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const types = ['Application Opened', 'Screen Viewed', 'Button Tapped', 'Notification Received', 'Notification Opened', 'Application Installed'];
  const sent: IngestRow[] = [];
  const ids = new Set<string>();
  const records: ArrayBuffer[] = [];
  let events = 0;
  for (let r = 0; r < recordCount; r++) {
    const received = T0 + r * 40 * MIN;
    const b = new IngestBatchBuilder(perRecord);
    for (let i = 0; i < perRecord; i++) {
      events++;
      const resendable = sent.filter((e) => e.received_at > received - 60 * MIN);
      if (resendable.length > 0 && rand() < 1 / 15) {
        b.push({ ...resendable[Math.floor(rand() * resendable.length)]!, received_at: received });
        continue;
      }
      const lag = rand() < 1 / 30 ? 120 * MIN : rand() < 1 / 8 ? Math.floor(rand() * 50 * MIN) : Math.floor(rand() * MIN);
      const type = types[Math.floor(rand() * types.length)]!;
      const e: IngestRow = {
        event_id: `ph-${seed}-${r}-${i}`,
        user_id: `u${Math.floor(rand() * users)}`,
        anonymous_id: null,
        event_type: type,
        event_time: received - lag,
        received_at: received,
        device_type: rand() < 0.6 ? 'ios' : 'android',
        os: null,
        app_version: rand() < 0.5 ? '5.0' : '5.1',
        country: ['BR', 'IN', 'SE'][Math.floor(rand() * 3)]!,
        source: 'test',
        properties: type === 'Screen Viewed' ? JSON.stringify({ name: `s${Math.floor(rand() * 4)}` }) : null,
        raw: null,
      };
      sent.push(e);
      ids.add(e.event_id);
      b.push(e);
    }
    const ipc = b.toIPC();
    records.push(ipc.slice().buffer);
  }
  return { records, ids, events };
}

/** One commit after another, as before: each checkpoint awaited before the next record. */
async function sequential(rt: ShardRuntime, records: ArrayBuffer[], from = 0): Promise<void> {
  for (let r = from; r < records.length; r++) {
    rt.processRecords([r], [records[r]!.slice(0)]);
    if (cutsAfter(r, records.length)) await rt.checkpoint();
  }
}

/**
 * Pipelined: after each cut, the next records are processed one per turn of the event loop while
 * the commit runs (up to the next cut, which waits for it). Returns how many records were
 * processed while a commit was still running, and stops (returning) after record `stopAfter`.
 */
async function pipelined(rt: ShardRuntime, records: ArrayBuffer[], options: { from?: number; stopAfter?: number } = {}): Promise<{ overlapped: number; results: CheckpointResult[] }> {
  let overlapped = 0;
  let committing: Promise<CheckpointResult> | undefined;
  let done = true;
  const results: CheckpointResult[] = [];
  for (let r = options.from ?? 0; r < records.length; r++) {
    if (!done) overlapped++;
    rt.processRecords([r], [records[r]!.slice(0)]);
    if (r === options.stopAfter) break;
    if (cutsAfter(r, records.length)) {
      const { committed } = await rt.beginCheckpoint();
      done = false;
      committing = committed.then((c) => {
        done = true;
        results.push(c);
        return c;
      });
    } else {
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
  await committing;
  return { overlapped, results };
}

/** Every object of the lake outside `_sluice/` (the Parquet files of every table) plus the window partials, key → sha1. */
async function lakeFiles(store: ObjectStore): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  for (const o of await store.list('')) {
    if (o.key.startsWith('_sluice/') && !o.key.startsWith('_sluice/partials/')) continue;
    files.set(o.key, createHash('sha1').update((await store.get(o.key))!).digest('hex'));
  }
  return files;
}

/** Silver ids, bronze rows and sessions of a local lake, by DuckDB. */
async function readLake(lake: string): Promise<{ silver: Map<string, number>; bronze: number; sessions: string[] }> {
  const reader = await openLakeReader(lake);
  try {
    const silver = new Map<string, number>();
    for (const r of await reader.rows<{ event_id: string; n: bigint }>(`SELECT event_id, count(*) AS n FROM ${reader.rel('events')} GROUP BY event_id`)) silver.set(r.event_id, Number(r.n));
    const [{ n: bronze }] = await reader.rows<{ n: bigint }>(`SELECT count(*) AS n FROM ${reader.rel('bronze_events')}`);
    const sessions = (await reader.rows<{ s: string }>(`SELECT concat_ws('|', user_id, epoch_ms(session_start), epoch_ms(session_end), event_count) AS s FROM ${reader.rel('sessions')}`)).map((r) => r.s).sort();
    return { silver, bronze: Number(bronze), sessions };
  } finally {
    reader.close();
  }
}

function expectEveryIdOnce(silver: Map<string, number>, ids: Set<string>): void {
  const missing = [...ids].filter((id) => !silver.has(id));
  const doubled = [...silver].filter(([, n]) => n !== 1).map(([id]) => id);
  const extra = [...silver.keys()].filter((id) => !ids.has(id));
  expect({ missing: missing.length, doubled: doubled.length, extra: extra.length }).toEqual({ missing: 0, doubled: 0, extra: 0 });
}

describe('pipelined checkpoints', () => {
  // Small encode calls: a cut's commit yields between many of them, so records really run inside it.
  const options = (name: string): ReturnType<typeof testRuntimeOptions> => testRuntimeOptions(dir(`${name}-data`), dir(`${name}-lake`), { maxRowsPerParquetCall: 150 });
  const stream = phoneStream(24, 400, 500, 11);
  /** The one-after-another lake (built once). */
  let reference: Promise<string> | undefined;
  const sequentialLake = (): Promise<string> =>
    (reference ??= (async () => {
      const a = await ShardRuntime.open(0, options('seq'));
      await sequential(a, stream.records);
      await a.close();
      return dir('seq-lake');
    })());

  it('records processed while a cut commits go to the next checkpoint: the lake is the one-after-another lake, byte for byte, every id once', async () => {
    const seqLake = await sequentialLake();
    const b = await ShardRuntime.open(0, options('pipe'));
    const { overlapped, results } = await pipelined(b, stream.records);
    await b.close();
    // The test means something only if records did run inside commits.
    expect(overlapped).toBeGreaterThan(stream.records.length / 2);
    expect(results.reduce((n, r) => n + r.events, 0)).toBe(stream.events);

    const [seqStore, pipeStore] = await Promise.all([openObjectStore(seqLake), openObjectStore(dir('pipe-lake'))]);
    const [seqFiles, pipeFiles] = await Promise.all([lakeFiles(seqStore), lakeFiles(pipeStore)]);
    expect(pipeFiles.size).toBeGreaterThan(20);
    expect(pipeFiles).toEqual(seqFiles);
    await Promise.all([seqStore.close(), pipeStore.close()]);

    const lake = await readLake(dir('pipe-lake'));
    expectEveryIdOnce(lake.silver, stream.ids);
    expect(lake.bronze).toBe(stream.events);
    // The checkpointed offset is the last record's.
    const again = await ShardRuntime.open(0, options('pipe'));
    expect(again.openResult.checkpointOffset).toBe(stream.records.length - 1);
    await again.close();
  }, 120_000);

  // Stopped after record 13: the cut after 11 committed, records 12 and 13 only in memory (and so on).
  it.each([5, 13, 20])('a restart after records processed past the last committed cut replays them: every id once, the same sessions (stopped after record %i)', async (stopAfter) => {
    const lastCut = stopAfter - (stopAfter % 4) - 1;
    const b = await ShardRuntime.open(0, options(`crash-${stopAfter}`));
    await pipelined(b, stream.records, { stopAfter });
    const internals = b as unknown as { env: { close(): Promise<void> }; store: ObjectStore };
    await internals.store.close();
    await internals.env.close();

    const c = await ShardRuntime.open(0, options(`crash-${stopAfter}`));
    expect(c.openResult.checkpointOffset).toBe(lastCut);
    await pipelined(c, stream.records, { from: lastCut + 1 });
    await c.close();

    const [crashed, reference] = await Promise.all([readLake(dir(`crash-${stopAfter}-lake`)), readLake(await sequentialLake())]);
    expectEveryIdOnce(crashed.silver, stream.ids);
    expect(crashed.bronze).toBe(stream.events);
    expect(crashed.sessions.length).toBeGreaterThan(100);
    expect(crashed.sessions).toEqual(reference.sessions);
  }, 120_000);

  it("a cut whose commit fails is committed as it was cut — records processed meanwhile go to the next — once the store works again", async () => {
    const o = options('fail');
    // The obstacle: a regular file where the store stages objects (every stage fails).
    const staging = join(o.lake, '_sluice', 'staging');
    mkdirSync(join(o.lake, '_sluice'), { recursive: true });
    writeFileSync(staging, 'not a directory');
    const rt = await ShardRuntime.open(0, o);
    const records = stream.records.slice(0, 12);
    for (let r = 0; r < 4; r++) rt.processRecords([r], [records[r]!.slice(0)]);
    const { committed } = await rt.beginCheckpoint();
    // Between the cut and its failure, and after it.
    for (let r = 4; r < 8; r++) rt.processRecords([r], [records[r]!.slice(0)]);
    await expect(committed).rejects.toMatchObject({ code: 'store_stage_failed' });
    // Still failing: the retry of the held cut fails before anything new is cut.
    await expect(rt.beginCheckpoint()).rejects.toMatchObject({ code: 'store_stage_failed' });
    rmSync(staging);
    for (let r = 8; r < 12; r++) rt.processRecords([r], [records[r]!.slice(0)]);
    const r = await rt.checkpoint();
    expect(r.offset).toBe(11);
    await rt.close();

    const store = await openObjectStore(o.lake);
    const commits = (await listCommitRecords(store)).map((c) => c.id).sort();
    await store.close();
    expect(commits).toEqual(['s0-0-3', 's0-4-11']);
    const lake = await readLake(o.lake);
    const sentIds = new Set<string>();
    for (const id of stream.ids) if (Number(id.split('-')[2]) < 12) sentIds.add(id);
    expectEveryIdOnce(lake.silver, sentIds);
  }, 120_000);

  it("through the worker pool: a range sent after a checkpoint is processed and answered before the checkpoint's commit, and goes to the next checkpoint", async () => {
    const pool = new ShardPool(1);
    try {
      await pool.open(0, options('pool'));
      const payload = (r: number): Uint8Array => new Uint8Array(stream.records[r]!.slice(0));
      const first = await pool.batch(0, [0, 1, 2, 3, 4, 5, 6, 7].map((r) => ({ offset: r, payload: payload(r) })));
      const answered: string[] = [];
      const checkpoint = pool.checkpoint(0).then((r) => (answered.push('checkpoint'), r));
      const batch = pool.batch(0, [{ offset: 8, payload: payload(8) }]).then((r) => (answered.push('batch'), r));
      const [c, b] = await Promise.all([checkpoint, batch]);
      expect(answered).toEqual(['batch', 'checkpoint']);
      // The checkpoint committed records 0–7; record 8 is held for the next one.
      expect(c).toMatchObject({ offset: 7, events: first.rows });
      expect(c.bufferedBytes).toBeGreaterThan(0);
      expect(b.offset).toBe(8);
      const next = await pool.checkpoint(0);
      expect(next).toMatchObject({ offset: 8, events: b.rows });
      await pool.close(0);
    } finally {
      await pool.destroy();
    }
  }, 60_000);
});
