/**
 * A shard's checkpoints against what phones send (disorder, re-sends, events later than the
 * lateness allows), with restarts and a failing object store: real LMDB, a real local lake read
 * back by DuckDB. Oracles that do not share the runtime's code: the stream's own ids (generated
 * here), each exactly once in silver, and the lake of the same stream run without a restart.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { ObjectStore } from '../../storage/object-store.js';
import { openObjectStore } from '../../storage/open-store.js';
import { listCommitRecords } from '../../storage/commit-record.js';
import { ShardRuntime } from '../../engine/shard-runtime.js';
import { IngestBatchBuilder, type IngestRow } from '../../ingest/batch-builder.js';
import { openLakeReader } from '../helpers/lake.js';
import { testRuntimeOptions } from '../helpers/shard-runtime.js';

const MIN = 60_000;
const T0 = Date.UTC(2026, 5, 10, 7, 0, 0);
const root = mkdtempSync(join(tmpdir(), 'sluice-replay-'));
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

/** Processes records `from` … `to` − 1, checkpointing where `cutsAfter` says. */
async function run(rt: ShardRuntime, records: ArrayBuffer[], from = 0, to = records.length): Promise<void> {
  for (let r = from; r < to; r++) {
    rt.processRecords([r], [records[r]!.slice(0)]);
    if (cutsAfter(r, records.length)) await rt.checkpoint();
  }
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

describe('checkpoints, restarts and failures against a phone-like stream', () => {
  const options = (name: string): ReturnType<typeof testRuntimeOptions> => testRuntimeOptions(dir(`${name}-data`), dir(`${name}-lake`), { maxRowsPerParquetCall: 150 });
  const stream = phoneStream(24, 400, 500, 11);
  /** The lake of the stream run without a restart (built once). */
  let reference: Promise<string> | undefined;
  const uninterrupted = (): Promise<string> =>
    (reference ??= (async () => {
      const a = await ShardRuntime.open(0, options('whole'));
      await run(a, stream.records);
      await a.close();
      return dir('whole-lake');
    })());

  it('an uninterrupted run has every generated id once in silver, every event in bronze', async () => {
    const lake = await readLake(await uninterrupted());
    expectEveryIdOnce(lake.silver, stream.ids);
    expect(lake.bronze).toBe(stream.events);
    expect(lake.sessions.length).toBeGreaterThan(100);
  }, 120_000);

  // Stopped after record 13: the checkpoint after 11 committed, records 12 and 13 only in memory (and so on).
  it.each([5, 13, 20])('a restart replays what the last checkpoint did not cover: the same lake, file for file (stopped after record %i)', async (stopAfter) => {
    const lastCheckpoint = stopAfter - (stopAfter % 4) - 1;
    const b = await ShardRuntime.open(0, options(`crash-${stopAfter}`));
    await run(b, stream.records, 0, stopAfter + 1);
    // Death: the environment and the store close, nothing after the last checkpoint is committed.
    const internals = b as unknown as { env: { close(): Promise<void> }; store: ObjectStore };
    await internals.store.close();
    await internals.env.close();

    const c = await ShardRuntime.open(0, options(`crash-${stopAfter}`));
    expect(c.openResult.checkpointOffset).toBe(lastCheckpoint);
    await run(c, stream.records, lastCheckpoint + 1);
    await c.close();

    const crashed = await readLake(dir(`crash-${stopAfter}-lake`));
    expectEveryIdOnce(crashed.silver, stream.ids);
    expect(crashed.bronze).toBe(stream.events);
    expect(crashed.sessions).toEqual((await readLake(await uninterrupted())).sessions);
    // Parquet of every table, byte for byte (window partials aside: their rows' order and float sums may differ after a restore).
    const [whole, again] = await Promise.all([openObjectStore(await uninterrupted()), openObjectStore(dir(`crash-${stopAfter}-lake`))]);
    const parquet = (files: Map<string, string>): Map<string, string> => new Map([...files].filter(([k]) => !k.startsWith('_sluice/')));
    expect(parquet(await lakeFiles(again))).toEqual(parquet(await lakeFiles(whole)));
    await Promise.all([whole.close(), again.close()]);
  }, 120_000);

  it('a checkpoint that fails keeps what it held; the retry, once the store works again, commits it with what came since: every id once', async () => {
    const o = options('fail');
    // The obstacle: a regular file where the store stages objects (every stage fails).
    const staging = join(o.lake, '_sluice', 'staging');
    mkdirSync(join(o.lake, '_sluice'), { recursive: true });
    writeFileSync(staging, 'not a directory');
    const rt = await ShardRuntime.open(0, o);
    const records = stream.records.slice(0, 12);
    for (let r = 0; r < 4; r++) rt.processRecords([r], [records[r]!.slice(0)]);
    await expect(rt.checkpoint()).rejects.toMatchObject({ code: 'store_stage_failed' });
    for (let r = 4; r < 8; r++) rt.processRecords([r], [records[r]!.slice(0)]);
    await expect(rt.checkpoint()).rejects.toMatchObject({ code: 'store_stage_failed' });
    rmSync(staging);
    for (let r = 8; r < 12; r++) rt.processRecords([r], [records[r]!.slice(0)]);
    expect((await rt.checkpoint()).offset).toBe(11);
    await rt.close();

    const store = await openObjectStore(o.lake);
    const commits = (await listCommitRecords(store)).map((c) => c.id).sort();
    await store.close();
    expect(commits).toEqual(['s0-0-11']);
    const lake = await readLake(o.lake);
    const sent = new Set([...stream.ids].filter((id) => Number(id.split('-')[2]) < 12));
    expectEveryIdOnce(lake.silver, sent);
  }, 120_000);
});
