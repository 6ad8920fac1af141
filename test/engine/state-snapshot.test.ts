/**
 * A shard's state in the object store (engine/state-snapshot.ts, issue 10 failover), with real
 * LMDB and a real local lake (and s3rver once):
 *
 *   uninterrupted:  records 0 … N−1 through one ShardRuntime, checkpoint every 4 records
 *   handover:       the same records 0 … k through runtime B1 (stateInObjectStore), which dies
 *                   (no close, nothing after its last checkpoint committed); runtime B2 opens a
 *                   FRESH data dir on the same lake, restores, and processes from its checkpoint
 *
 * Both lakes must hold the same files with the same bytes (silver, bronze, sessions, aliases,
 * late events) and the same gold partials (their rows as a set, sums to 1 µs: a restart, local
 * or restored, lists them in another order and adds in another order): dedup of ids seen before
 * the handover included, since the stream
 * re-sends earlier events after it. The stream spans two days (daily windows), keeps sessions
 * open across records, expires dedup buckets (dropped LMDB databases) and, with a small hot
 * table, merges cold dedup runs.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { open as openLmdb } from 'lmdb';
import { afterAll, describe, expect, it } from 'vitest';
import { IngestBatchBuilder, type IngestRow } from '../../ingest/batch-builder.js';
import { rng } from '../../loadgen/random.js';
import { ShardRuntime } from '../../engine/shard-runtime.js';
import type { ShardRuntimeOptions } from '../../engine/types.js';
import { testRuntimeOptions } from '../helpers/shard-runtime.js';
import { ChangesWriter, readChanges, readChangesHeader } from '../../engine/state-changes.js';
import { StateCapture } from '../../engine/state-capture.js';
import { readStateHead, restoreShardState, STATE_PREFIX } from '../../engine/state-snapshot.js';
import { TABLES } from '../../common/lake-layout.js';
import { COMMITS_PREFIX } from '../../storage/commit-record.js';
import { decodeParquet } from '../../storage/parquet.js';
import { openObjectStore } from '../../storage/open-store.js';
import type { ObjectStore } from '../../storage/object-store.js';
import { startS3rver } from '../helpers/s3rver.js';

const MIN = 60_000;
const T0 = Date.UTC(2026, 2, 1, 20, 0, 0);
// tmpfs when there is one: the lake's fsyncs would otherwise dominate on a shared disk (the code paths are the same).
const root = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'sluice-state-snapshot-'));
afterAll(() => {
  if (!process.env.KEEP_STATE_TEST) rmSync(root, { recursive: true, force: true });
});

const dir = (name: string): string => join(root, name);

const TYPES = ['Application Opened', 'Screen Viewed', 'Button Tapped', 'Notification Received', 'Notification Opened', 'Application Installed'];

/**
 * `records` log records of `perRecord` events from `users` users; record r is about r × 40 min
 * of event time (two days in all). About 6 % of each record re-sends earlier events (same id,
 * later received_at), some from several records back.
 */
function stream(records: number, perRecord: number, users: number, seed = 7, skipUser?: string): Uint8Array[] {
  const rand = rng(seed);
  const sent: IngestRow[] = [];
  const out: Uint8Array[] = [];
  for (let r = 0; r < records; r++) {
    const b = new IngestBatchBuilder(perRecord * 2);
    const base = T0 + r * 40 * MIN;
    for (let i = 0; i < perRecord; i++) {
      if (sent.length > 50 && rand() < 0.06) {
        const again = sent[sent.length - 1 - Math.floor(rand() * Math.min(sent.length, perRecord * 4))]!;
        b.push({ ...again, received_at: base + 30 * MIN });
        continue;
      }
      const t = base + Math.floor(rand() * 40 * MIN) - (rand() < 0.03 ? 90 * MIN : 0);
      const type = TYPES[Math.floor(rand() * TYPES.length)]!;
      const user = `user-${Math.floor(rand() * users)}`;
      const e: IngestRow = {
        event_id: `e-${r}-${i}`,
        user_id: user === skipUser ? 'user-0' : user,
        anonymous_id: null,
        event_type: type,
        event_time: t,
        received_at: base + 30 * MIN,
        device_type: rand() < 0.5 ? 'ios' : 'android',
        os: null,
        app_version: rand() < 0.7 ? '4.1' : '4.0',
        country: ['DE', 'FR', 'US'][Math.floor(rand() * 3)]!,
        source: 'test',
        properties: type === 'Screen Viewed' ? JSON.stringify({ name: `screen-${Math.floor(rand() * 5)}` }) : null,
        raw: null,
      };
      sent.push(e);
      b.push(e);
    }
    out.push(b.toIPC());
  }
  return out;
}

const toBuffer = (bytes: Uint8Array): ArrayBuffer => bytes.slice().buffer;

/** Processes records `from` … `to` − 1, checkpointing after every record whose index ≡ 3 (mod 4). */
async function run(rt: ShardRuntime, records: Uint8Array[], from: number, to: number): Promise<void> {
  for (let r = from; r < to; r++) {
    rt.processRecords([r], [toBuffer(records[r]!)]);
    if (r % 4 === 3) await rt.checkpoint();
  }
}

/** Simulated death: the environment and the store are closed, nothing after the last checkpoint is committed. */
async function die(rt: ShardRuntime): Promise<void> {
  const internals = rt as unknown as { env: { close(): Promise<void> }; store: ObjectStore };
  await internals.store.close();
  await internals.env.close();
}

/**
 * Every lake object outside `_sluice/` (Parquet of every table) plus the window partials, as
 * key → sha1 of its bytes (of its rows as a set for a partial); and every commit record's id with what it added (state deltas aside).
 */
async function lakeContents(store: ObjectStore): Promise<{ files: Map<string, string>; commits: Map<string, string[]> }> {
  const files = new Map<string, string>();
  for (const o of await store.list('')) {
    if (o.key.startsWith('_sluice/') && !o.key.startsWith('_sluice/partials/')) continue;
    files.set(o.key, createHash('sha1').update((await store.get(o.key))!).digest('hex'));
  }
  // A window partial's rows come in the order of the shard's combo table, which a restart (local or
  // restored) rebuilds in LMDB key order: the rows as a set are what gold merges. Its sums of
  // session seconds may differ in the last bits too (floating-point additions in another order
  // after any restart, a local one as well): compared to 1 µs.
  const micro = (_: string, v: unknown): unknown => (typeof v === 'number' ? Math.round(v * 1e6) / 1e6 : v);
  for (const o of await store.list('_sluice/partials/')) {
    const partial = JSON.parse(new TextDecoder().decode((await store.get(o.key))!)) as { rows: unknown[] };
    const rows = partial.rows.map((r) => JSON.stringify(r, micro)).sort();
    files.set(o.key, createHash('sha1').update(JSON.stringify({ ...partial, rows })).digest('hex'));
  }
  const commits = new Map<string, string[]>();
  for (const o of await store.list(COMMITS_PREFIX)) {
    const r = JSON.parse(new TextDecoder().decode((await store.get(o.key))!)) as { id: string; added: Array<{ key: string }> };
    commits.set(r.id, r.added.map((f) => f.key).filter((k) => !k.startsWith(STATE_PREFIX)).sort());
  }
  return { files, commits };
}

async function uninterrupted(records: Uint8Array[], name: string): Promise<{ files: Map<string, string>; commits: Map<string, string[]> }> {
  const lake = dir(`${name}-lake-a`);
  const rt = await ShardRuntime.open(0, testRuntimeOptions(dir(`${name}-data-a`), lake));
  await run(rt, records, 0, records.length);
  await rt.close();
  const store = await openObjectStore(lake);
  try {
    return await lakeContents(store);
  } finally {
    await store.close();
  }
}

describe('state snapshot: restore on another node', () => {
  const N = 40;
  const records = stream(N, 300, 150);
  let reference: Awaited<ReturnType<typeof uninterrupted>>;

  it('a fresh data dir restores from the lake and continues exactly like an uninterrupted run (dedup across the handover included)', async () => {
    reference = await uninterrupted(records, 'main');
    const lake = dir('main-lake-b');
    const state = { baseEveryDeltas: 3 };
    // Node 1: records 0 … 29, checkpoints after 3, 7, …, 27 (seq 1 … 7); records 28 and 29 are processed but never committed.
    const b1 = await ShardRuntime.open(0, testRuntimeOptions(dir('main-data-b1'), lake, { stateInObjectStore: state }));
    await run(b1, records, 0, 30);
    // The state being handed over has cold dedup buckets (hot table evicted, runs merged) and expired ones (dropped databases).
    const dedup = (b1 as unknown as { pipeline: { dedup: { stats: { complete: boolean; buckets: number } } } }).pipeline.dedup.stats;
    expect(dedup.complete).toBe(false);
    expect(dedup.buckets).toBeLessThan((30 * 40) / 60);
    await die(b1);

    const store = await openObjectStore(lake);
    const head = await readStateHead(store, 0);
    expect(head.seq).toBe(7);
    expect(head.base?.seq).toBe(6); // a base after every 3 deltas (3, 6): older deltas and bases deleted
    const stateKeys = (await store.list(`${STATE_PREFIX}/s0/`)).map((o) => o.key.slice(`${STATE_PREFIX}/s0/`.length));
    expect(stateKeys.filter((k) => k.startsWith('d-'))).toEqual(['d-000000000007-s0-24-27.bin']);
    expect(stateKeys.filter((k) => k.endsWith('.json'))).toEqual(['b-000000000006.json']);

    // Node 2: a fresh data dir on the same lake.
    const b2 = await ShardRuntime.open(0, testRuntimeOptions(dir('main-data-b2'), lake, { stateInObjectStore: state }));
    expect(b2.openResult.checkpointOffset).toBe(27);
    await run(b2, records, 28, N);
    await b2.close();

    const handover = await lakeContents(store);
    await store.close();
    expect([...handover.commits.keys()].sort()).toEqual([...reference.commits.keys()].sort());
    for (const [id, added] of reference.commits) expect(handover.commits.get(id), id).toEqual(added);
    expect([...handover.files.keys()].sort()).toEqual([...reference.files.keys()].sort());
    for (const [key, sha] of reference.files) expect(handover.files.get(key), key).toBe(sha);
    // The stream reaches every table the comparison is about.
    const tables = new Set([...reference.files.keys()].map((k) => k.split('/').slice(0, 2).join('/')));
    for (const t of ['silver/events', 'bronze/events', 'gold/sessions', '_sluice/partials']) expect([...tables].some((x) => x.startsWith(t)), t).toBe(true);
    expect([...reference.files.keys()].some((k) => k.startsWith('_sluice/partials/daily/'))).toBe(true);
  }, 120_000);

  it('without the restored state the same handover differs (the comparison above can fail)', async () => {
    const lake = dir('control-lake');
    const b1 = await ShardRuntime.open(0, testRuntimeOptions(dir('control-data-b1'), lake, { stateInObjectStore: true }));
    await run(b1, records, 0, 30);
    await die(b1);
    // A fresh node that does not restore: no dedup ids, sessions or accumulators from before; it resumes at 28.
    const b2 = await ShardRuntime.open(0, testRuntimeOptions(dir('control-data-b2'), lake));
    expect(b2.openResult.checkpointOffset).toBe(-1);
    await run(b2, records, 28, N);
    await b2.close();
    const store = await openObjectStore(lake);
    const control = await lakeContents(store);
    await store.close();
    const differing = [...reference.files].filter(([key, sha]) => control.files.get(key) !== sha).map(([key]) => key);
    expect(differing.some((k) => k.startsWith('silver/events/'))).toBe(true);
    expect(differing.some((k) => k.startsWith('gold/sessions/'))).toBe(true);
  }, 120_000);

  it('a delta staged or published without its commit record is never restored; the commit finishes with its delta', async () => {
    const lake = dir('crash-lake');
    const options = (data: string): ShardRuntimeOptions => testRuntimeOptions(dir(data), lake, { stateInObjectStore: true });
    const b1 = await ShardRuntime.open(0, options('crash-data-b1'));
    await run(b1, records, 0, 8); // checkpoints after 3 and 7: seq 2
    const store = await openObjectStore(lake);
    expect((await readStateHead(store, 0)).seq).toBe(2);

    // The commit record cannot be written (a directory where it goes): files and delta are published, the record is not.
    const obstacle = join(lake, '_sluice', 'commits', 's0-8-11.json');
    mkdirSync(obstacle);
    b1.processRecords([8, 9, 10, 11], [8, 9, 10, 11].map((r) => toBuffer(records[r]!)));
    await expect(b1.checkpoint()).rejects.toThrow();
    const published = (await store.list(`${STATE_PREFIX}/s0/`)).map((o) => o.key);
    expect(published.some((k) => /d-000000000003-s0-8-11\.bin$/.test(k))).toBe(true); // visible, but without its record
    const head = await readStateHead(store, 0);
    expect(head.seq).toBe(2);
    // Another node restores the last committed state, not the orphan delta.
    const other = dir('crash-data-other');
    mkdirSync(join(other, 'shards', '0'), { recursive: true });
    const restored = await restoreShardState(store, 0, join(other, 'shards', '0'));
    expect(restored).toMatchObject({ seq: 2, checkpointOffset: 7 });

    // The obstacle goes: the retried checkpoint finishes exactly that commit, with its delta.
    rmSync(obstacle, { recursive: true });
    await b1.checkpoint();
    expect((await readStateHead(store, 0)).seq).toBe(3);
    await die(b1);
    const b2 = await ShardRuntime.open(0, options('crash-data-b2'));
    expect(b2.openResult.checkpointOffset).toBe(11);
    await die(b2);
    await store.close();
  }, 60_000);

  it('a node that dies halfway through a publish: the next owner finishes that commit (files, delta, record) before it restores, so no row is in two files', async () => {
    const lake = dir('cut-lake');
    const options = (data: string): ShardRuntimeOptions => testRuntimeOptions(dir(data), lake, { stateInObjectStore: true });
    const b1 = await ShardRuntime.open(0, options('cut-data-b1'));
    await run(b1, records, 0, 8); // seq 2, offset 7
    // The commit record of 8 … 11 cannot be written: its files and delta become visible, then the node dies.
    const obstacle = join(lake, '_sluice', 'commits', 's0-8-11.json');
    mkdirSync(obstacle);
    b1.processRecords([8, 9, 10, 11], [8, 9, 10, 11].map((r) => toBuffer(records[r]!)));
    await expect(b1.checkpoint()).rejects.toThrow();
    await die(b1);
    rmSync(obstacle, { recursive: true });
    const store = await openObjectStore(lake);
    expect(await store.get('_sluice/intents/s0.json')).toBeDefined();
    expect((await store.list('silver/events/')).some((o) => o.key.includes('part-s0-8-11'))).toBe(true); // visible, named by no record

    // Another node, a fresh data dir: it finds the intent, publishes the rest of that commit, then restores up to it.
    const b2 = await ShardRuntime.open(0, options('cut-data-b2'));
    expect(b2.openResult.checkpointOffset).toBe(11);
    expect(b2.openResult.recoveredPublished).toBeGreaterThan(0);
    expect(await store.get('_sluice/intents/s0.json')).toBeUndefined();
    expect(await store.get(`${COMMITS_PREFIX}s0-8-11.json`)).toBeDefined();
    // It cuts other ranges than b1 did (a checkpoint every 6 records): replaying 8 … 11 would name them differently.
    for (let r = 12; r < N; r++) {
      b2.processRecords([r], [toBuffer(records[r]!)]);
      if ((r - 12) % 6 === 5 || r === N - 1) await b2.checkpoint();
    }
    await b2.close();

    const named = new Set<string>();
    for (const o of await store.list(COMMITS_PREFIX)) {
      const rec = JSON.parse(new TextDecoder().decode((await store.get(o.key))!)) as { added: Array<{ key: string }> };
      for (const f of rec.added) named.add(f.key);
    }
    const ids: string[] = [];
    for (const o of await store.list(`${TABLES.events.prefix}/`)) {
      expect(named.has(o.key), `${o.key} is named by a commit record`).toBe(true);
      ids.push(...(decodeParquet((await store.get(o.key))!).getChild('event_id')!.toArray() as string[]));
    }
    expect(ids.length).toBeGreaterThan(N * 200);
    expect(ids.length - new Set(ids).size, 'events in silver twice').toBe(0);
    expect(await store.list('_sluice/intents/')).toEqual([]);
    await store.close();
  }, 60_000);

  it('a crash after the checkpoint transaction: the same node recovers and publishes the commit with its delta', async () => {
    const lake = dir('recover-lake');
    const options = (data: string): ShardRuntimeOptions => testRuntimeOptions(dir(data), lake, { stateInObjectStore: true });
    const b1 = await ShardRuntime.open(0, options('recover-data-b1'));
    await run(b1, records, 0, 4);
    // Staging the delta fails (after the LMDB transaction recorded the commit and the delta).
    const blocked = join(lake, '_sluice', 'staging', '_sluice', 'state');
    rmSync(blocked, { recursive: true, force: true });
    mkdirSync(join(lake, '_sluice', 'staging', '_sluice'), { recursive: true });
    writeFileSync(blocked, 'not a directory');
    b1.processRecords([4, 5, 6, 7], [4, 5, 6, 7].map((r) => toBuffer(records[r]!)));
    await expect(b1.checkpoint()).rejects.toThrow();
    const store = await openObjectStore(lake);
    expect((await store.list(`${COMMITS_PREFIX}s0-4-7`)).length).toBe(0); // nothing of the commit is visible
    expect((await readStateHead(store, 0)).seq).toBe(1);
    await die(b1);
    rmSync(blocked);
    // Restart on the same data dir: recovery stages the recorded delta and publishes it with the files.
    const again = await ShardRuntime.open(0, options('recover-data-b1'));
    expect(again.openResult.checkpointOffset).toBe(7);
    expect((await readStateHead(store, 0)).seq).toBe(2);
    await die(again);
    const fresh = await ShardRuntime.open(0, options('recover-data-b2'));
    expect(fresh.openResult.checkpointOffset).toBe(7);
    await die(fresh);
    await store.close();
  }, 60_000);
});

describe('state snapshot: erasure', () => {
  it("after purgeUsers the next checkpoint leaves no state object in the lake with the users' sessions", async () => {
    const records = stream(12, 200, 40, 5);
    const lake = dir('erase-lake');
    const rt = await ShardRuntime.open(0, testRuntimeOptions(dir('erase-data'), lake, { stateInObjectStore: true }));
    const store = await openObjectStore(lake);
    // The user id as a session record spells it (kernels/session-table USER_RECORD: length + 1 = 7 as a
    // varint, then its bytes), and as msgpack's fixstr (0xa6: 6 bytes) in the earlier form: not a prefix of user-70 … either way.
    const needles = [0x07, 0xa6].map((n) => Buffer.concat([Buffer.from([n]), Buffer.from('user-7')]));
    const holding = async (): Promise<string[]> => {
      const keys: string[] = [];
      for (const o of await store.list(`${STATE_PREFIX}/s0/`)) {
        const bytes = Buffer.from((await store.get(o.key))!);
        if (needles.some((n) => bytes.includes(n))) keys.push(o.key);
      }
      return keys;
    };
    await run(rt, records, 0, 8);
    expect((await holding()).length).toBeGreaterThan(0);
    rt.purgeUsers(['user-7']);
    // The same stream without user-7 from here on.
    await run(rt, stream(12, 200, 40, 5, 'user-7'), 8, 12);
    expect(await holding()).toEqual([]);
    const head = await readStateHead(store, 0);
    expect(head).toMatchObject({ seq: 3, base: { seq: 3 }, deltas: [] });
    await die(rt);
    await store.close();
  }, 60_000);
});

describe('erasure: purgeUsers and incremental encoding', () => {
  it("filters the users' closed sessions out of chunks already encoded between checkpoints, and keeps everyone else's", async () => {
    const records = stream(8, 200, 40, 11);
    /** Sessions per user in the lake (every sessions file, decoded). */
    const sessionsByUser = async (store: ObjectStore): Promise<Map<string, number>> => {
      const out = new Map<string, number>();
      for (const o of await store.list(`${TABLES.sessions.prefix}/`)) {
        const users = decodeParquet((await store.get(o.key))!).getChild('user_id')!;
        for (let i = 0; i < users.length; i++) out.set(users.get(i) as string, (out.get(users.get(i) as string) ?? 0) + 1);
      }
      return out;
    };
    const go = async (name: string, purge?: string): Promise<Map<string, number>> => {
      const lake = dir(`${name}-lake`);
      // Every buffer is encoded as a chunk at the end of each record: closed sessions sit in chunks, not buffers.
      const rt = await ShardRuntime.open(0, testRuntimeOptions(dir(`${name}-data`), lake, { encodeChunkRows: 1 }));
      for (let r = 0; r < records.length; r++) rt.processRecords([r], [toBuffer(records[r]!)]);
      if (purge !== undefined) {
        const chunks = (rt as unknown as { encoded: Array<{ key: string }> }).encoded.filter((f) => f.key.startsWith(`${TABLES.sessions.prefix}/`));
        expect(chunks.length).toBeGreaterThan(0);
        expect(rt.purgeUsers([purge]).openSessions).toBeGreaterThan(0);
      }
      await rt.checkpoint();
      const store = await openObjectStore(lake);
      const got = await sessionsByUser(store);
      await store.close();
      await die(rt);
      return got;
    };
    const all = await go('chunk-purge-ref');
    // A user with closed sessions (in chunks by the end of the records).
    const victim = [...all.keys()].sort()[0]!;
    const purged = await go('chunk-purge', victim);
    expect(purged.get(victim)).toBeUndefined();
    all.delete(victim);
    expect(purged.size).toBeGreaterThan(10);
    expect(purged).toEqual(all);
  }, 60_000);
});

describe('state snapshot: capture and codec', () => {
  it('a delta carries raw bytes that rebuild byte-identical databases (msgpack values, ordered-binary and binary keys, drops)', async () => {
    const a = openLmdb({ path: dir('codec-a.mdb'), maxDbs: 16, compression: false });
    const capture = StateCapture.attach(a, [{ db: 'meta', key: 'pending' }]);
    const meta = a.openDB({ name: 'meta', encoding: 'msgpack' });
    const bin = a.openDB({ name: 'bin', keyEncoding: 'binary', encoding: 'binary' });
    const gone = a.openDB({ name: 'gone', encoding: 'msgpack' });
    a.transactionSync(() => {
      meta.putSync('offset', 41);
      meta.putSync(['hourly', 3_600_000, 2], { n: [1, 2, 3], runs: 1 });
      meta.putSync(12_345_678_901, 'x');
      meta.putSync('pending', { node: 'local' });
      bin.putSync(Buffer.from([1, 0, 0, 0, 7]), new Uint8Array([9, 9, 9]));
      gone.putSync('k', 1);
    });
    a.transactionSync(() => {
      meta.removeSync(12_345_678_901);
      gone.dropSync();
    });
    const out = new ChangesWriter((db) => db === 'bin', 64);
    capture.collect(out);
    const blob = out.finish({ kind: 'delta', shard: 0, seq: 1, commitId: 'c', lastOffset: 41, complete: true });
    expect(readChangesHeader(blob)).toMatchObject({ kind: 'delta', seq: 1, commitId: 'c' });
    const changes = [...readChanges(blob)];
    expect(changes.filter((c) => c.db === 'meta').map((c) => c.op).sort()).toEqual(['put', 'put', 'remove']);
    expect(changes.some((c) => c.db === 'gone' && c.op === 'drop')).toBe(true);

    const b = openLmdb({ path: dir('codec-b.mdb'), maxDbs: 16, compression: false });
    b.transactionSync(() => {
      for (const c of readChanges(blob)) {
        const db = b.openDB(c.binaryKey ? { name: c.db, keyEncoding: 'binary', encoding: 'binary' } : { name: c.db, encoding: 'binary' });
        if (c.op === 'put') db.putSync(c.key, c.value);
        else if (c.op === 'remove') db.removeSync(c.key);
        else db.dropSync();
      }
    });
    const metaB = b.openDB({ name: 'meta', encoding: 'msgpack' });
    expect(metaB.get('offset')).toBe(41);
    expect(metaB.get(['hourly', 3_600_000, 2])).toEqual({ n: [1, 2, 3], runs: 1 });
    expect(metaB.get(12_345_678_901)).toBeUndefined();
    expect(metaB.get('pending')).toBeUndefined(); // node-local: excluded
    expect([...b.openDB({ name: 'bin', keyEncoding: 'binary', encoding: 'binary' }).getRange({})].map((e) => [Buffer.from(e.key as Buffer).toString('hex'), Buffer.from(e.value as Buffer).toString('hex')])).toEqual([['0100000007', '090909']]);
    expect([...b.getKeys({})]).toEqual(['bin', 'meta']);
    await a.close();
    await b.close();
  });
});

describe('state snapshot: S3', () => {
  it('hands a shard over through s3rver', async () => {
    const s3 = await startS3rver('state');
    try {
      const records = stream(20, 200, 80, 11);
      const reference = await uninterrupted(records, 's3');
      const lake = `s3://${s3.bucket}/lake`;
      const options = (data: string): ShardRuntimeOptions => testRuntimeOptions(dir(data), lake, { s3Endpoint: s3.endpoint, stateInObjectStore: { baseEveryDeltas: 2, basePartBytes: 4096 } });
      const b1 = await ShardRuntime.open(0, options('s3-data-b1'));
      await run(b1, records, 0, 14);
      await die(b1);
      const b2 = await ShardRuntime.open(0, options('s3-data-b2'));
      expect(b2.openResult.checkpointOffset).toBe(11);
      await run(b2, records, 12, 20);
      await b2.close();
      const store = await openObjectStore(lake, { s3Endpoint: s3.endpoint });
      const handover = await lakeContents(store);
      await store.close();
      expect([...handover.files.keys()].sort()).toEqual([...reference.files.keys()].sort());
      for (const [key, sha] of reference.files) expect(handover.files.get(key), key).toBe(sha);
    } finally {
      await s3.stop();
    }
  }, 120_000);
});
