/**
 * Table-driven tests of the engine's pure kernels (engine/kernels) and the dedup operator's TTL.
 * Deterministic: explicit times, no clock, no sleeps.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Int64, makeData, TimestampMillisecond, Utf8, vectorFromArray, type Data } from 'apache-arrow';
import fc from 'fast-check';
import { open as openLmdb } from 'lmdb';
import { afterAll, describe, expect, it } from 'vitest';
import { DedupTable } from '../../engine/kernels/dedup-table.js';
import { epochMillis } from '../../engine/kernels/epoch-millis.js';
import { markTooLate } from '../../engine/kernels/event-time.js';
import { fingerprintKey, fingerprintUtf8 } from '../../engine/kernels/fingerprint.js';
import { screenName } from '../../engine/kernels/screen-name.js';
import { SlotIndex } from '../../engine/kernels/slot-index.js';
import { KeySet } from '../../engine/kernels/key-set.js';
import { RecordWriter } from '../../engine/kernels/record-bytes.js';
import { packSessions, unpackSessions } from '../../engine/kernels/session-record.js';
import { SessionTable, sessionIdOf, type DimValues } from '../../engine/kernels/session-table.js';
import { murmur3 } from '../../common/hash.js';
import { AggregateOperator, M, mergePartials } from '../../engine/operators/aggregate-operator.js';
import { DedupOperator } from '../../engine/operators/dedup-operator.js';

const T = Date.UTC(2026, 2, 1, 10, 0, 0);
const MIN = 60_000;
const HOUR = 3_600_000;

const utf8 = (values: Array<string | null>): Data<Utf8> => vectorFromArray(values, new Utf8()).data[0]!;

describe('epochMillis', () => {
  it.each([
    ['epoch', 0],
    ['a 2026 time', T],
    ['before 1970', -1],
    ['far before 1970', -86_400_000 * 365 * 30 - 123],
    ['year 2500', Date.UTC(2500, 0, 1, 0, 0, 0, 999)],
  ])('reads %s exactly', (_, ms) => {
    const data = makeData({ type: new TimestampMillisecond(), length: 1, nullCount: 0, data: BigInt64Array.of(BigInt(ms)) });
    expect(Array.from(epochMillis(data))).toEqual([ms]);
    const int64 = makeData({ type: new Int64(), length: 1, nullCount: 0, data: BigInt64Array.of(BigInt(ms)) });
    expect(epochMillis(int64 as never)[0]).toBe(ms);
  });
});

describe('markTooLate', () => {
  it.each([
    { name: 'nothing emitted yet', frontier: -Infinity, t: T, late: 0 },
    { name: 'exactly at the frontier', frontier: T, t: T, late: 0 },
    { name: 'one ms behind the frontier', frontier: T, t: T - 1, late: 1 },
    { name: 'behind the frontier inside a still open hour', frontier: T + 59 * MIN, t: T + 30 * MIN, late: 1 },
    { name: 'days old, long emitted', frontier: T, t: T - 3 * 86_400_000, late: 1 },
  ])('$name → $late', ({ frontier, t, late }) => {
    const out = new Uint8Array(1);
    expect(markTooLate(Float64Array.of(t), Int32Array.of(0), frontier, out)).toBe(t);
    expect(out[0]).toBe(late);
  });

  it('looks only at the selected rows and returns their max time', () => {
    const times = Float64Array.of(T + 5 * HOUR, T - 2 * HOUR, T + HOUR);
    const out = new Uint8Array(2);
    expect(markTooLate(times, Int32Array.of(1, 2), T, out)).toBe(T + HOUR);
    expect(Array.from(out)).toEqual([1, 0]);
    expect(markTooLate(times, new Int32Array(0), T, new Uint8Array(0))).toBe(-Infinity);
  });

  it('advances by event time only up to each row\'s arrival: a clock running ahead does not move the watermark past now', () => {
    const times = Float64Array.of(T + 9 * MIN, T - MIN, T + 2 * MIN);
    const received = Float64Array.of(T, T, T + 3 * MIN);
    const out = new Uint8Array(3);
    // Row 0 claims 10:09 but arrived at 10:00; row 2 (10:02, arrived 10:03) is the furthest real progress.
    expect(markTooLate(times, Int32Array.of(0, 1, 2), T - 30 * MIN, out, received)).toBe(T + 2 * MIN);
    expect(Array.from(out)).toEqual([0, 0, 0]);
    expect(markTooLate(times, Int32Array.of(0), -Infinity, new Uint8Array(1), received)).toBe(T);
  });
});

describe('screenName', () => {
  it.each([
    ['name first (fast path)', '{"name":"Home","tab":2}', 'Home'],
    ['name not first', '{"tab":2,"name":"Cart"}', 'Cart'],
    ['escaped quote in the name', '{"name":"Say \\"hi\\"","x":1}', 'Say "hi"'],
    ['unicode name', '{"name":"Übersicht 🏠"}', 'Übersicht 🏠'],
    ['name twice: the last wins, as in JSON.parse', '{"name":"A","name":"B"}', 'B'],
    ['nested name only', '{"item":{"name":"Shoe"}}', null],
    ['nested name after the top-level one', '{"name":"Product","item":{"name":"Shoe"}}', 'Product'],
    ['name is not a string', '{"name":42}', null],
    ['no name', '{"tab":2}', null],
    ['empty object', '{}', null],
    ['not JSON', 'name', null],
    ['null properties', null, null],
  ])('%s', (_, text, expected) => {
    expect(screenName(utf8([text]), 0)).toBe(expected);
  });
});

describe('DedupTable', () => {
  it('adds, finds, and keeps a (0, 0) fingerprint distinct from empty slots', () => {
    const t = new DedupTable(4);
    expect(t.add(0, 0, 1)).toBe(true);
    expect(t.add(0, 0, 1)).toBe(false);
    expect(t.has(0, 0)).toBe(true);
    expect(t.has(7, 9)).toBe(false);
    for (let i = 1; i <= 1000; i++) expect(t.add(i, i * 31, i % 5)).toBe(true);
    expect(t.size).toBe(1001);
    for (let i = 1; i <= 1000; i++) expect(t.has(i, i * 31)).toBe(true);
  });

  it('drops whole buckets on retain', () => {
    const t = new DedupTable();
    for (let i = 0; i < 100; i++) t.add(i + 1, i, i % 4);
    expect(t.retain((b) => b >= 2)).toBe(50);
    expect(t.has(1, 0)).toBe(false);
    expect(t.has(3, 2)).toBe(true);
  });

  it('counts entries per bucket in place, and a retain that drops nothing changes nothing', () => {
    const t = new DedupTable();
    for (let i = 0; i < 300; i++) t.add(i + 1, i * 7, i < 200 ? 5 : 3 + (i % 2));
    expect(Object.fromEntries(t.bucketCounts())).toEqual({ 5: 200, 3: 50, 4: 50 });
    expect(t.retain((b) => b >= 3)).toBe(0);
    expect(t.size).toBe(300);
    // Bucket 3 only after long runs of kept buckets: still found and dropped.
    expect(t.retain((b) => b >= 4)).toBe(50);
    expect(Object.fromEntries(t.bucketCounts())).toEqual({ 5: 200, 4: 50 });
    for (let i = 0; i < 300; i++) expect(t.has(i + 1, i * 7)).toBe(i < 200 || i % 2 === 1);
  });
});

describe('DedupOperator', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-dedup-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const run = (op: DedupOperator, ids: string[], receivedAt: number): number[] => {
    const keep = new Uint8Array(ids.length);
    op.processBatch(utf8(ids), new Float64Array(ids.length).fill(receivedAt), keep);
    return Array.from(keep);
  };

  it.each([
    { name: 'within the TTL (23 h later)', later: 23 * HOUR, keep: [0] },
    { name: 'after the TTL (26 h later)', later: 26 * HOUR, keep: [1] },
  ])('a repeat $name', ({ name, later, keep }) => {
    const env = openLmdb({ path: join(dir, `${name.replace(/\W+/g, '-')}.mdb`), maxDbs: 256 });
    const op = new DedupOperator(env, { ttlMs: 24 * HOUR });
    expect(run(op, ['x', 'y', 'x'], T)).toEqual([1, 1, 0]);
    env.transactionSync(() => op.onCheckpoint());
    op.afterCheckpoint();
    // A later event advances time; its checkpoint expires buckets older than the TTL.
    expect(run(op, ['z'], T + later)).toEqual([1]);
    env.transactionSync(() => op.onCheckpoint());
    op.afterCheckpoint();
    expect(run(op, ['x'], T + later)).toEqual(keep);
    env.close();
  });

  it('finds ids in LMDB when the hot table was bounded (evicted buckets)', () => {
    const env = openLmdb({ path: join(dir, 'bounded.mdb'), maxDbs: 256 });
    const op = new DedupOperator(env, { ttlMs: 24 * HOUR, hotCapacity: 10 });
    const old = Array.from({ length: 20 }, (_, i) => `old-${i}`);
    expect(run(op, old, T).every((k) => k === 1)).toBe(true);
    expect(run(op, ['new-1'], T + 2 * HOUR)).toEqual([1]);
    env.transactionSync(() => op.onCheckpoint());
    op.afterCheckpoint();
    expect(op.stats.complete).toBe(false);
    expect(op.stats.hotEntries).toBeLessThanOrEqual(10);
    expect(run(op, ['old-3', 'old-19', 'new-1', 'fresh'], T + 3 * HOUR)).toEqual([0, 0, 0, 1]);
    env.close();
  });

  it('gives back the pending-id arrays a burst grew, at the next checkpoint of a usual interval', () => {
    const env = openLmdb({ path: join(dir, 'pending.mdb'), maxDbs: 256 });
    const op = new DedupOperator(env, { ttlMs: 24 * HOUR });
    const checkpoint = (): void => {
      env.transactionSync(() => op.onCheckpoint());
      op.afterCheckpoint();
    };
    const burst = Array.from({ length: 20_000 }, (_, i) => `burst-${i}`);
    expect(run(op, burst, T).every((k) => k === 1)).toBe(true);
    expect(op.stats.pendingBytes).toBeGreaterThanOrEqual(20_000 * 12);
    checkpoint(); // the burst's own checkpoint keeps room for it
    expect(run(op, ['calm-1', 'calm-2', 'burst-7'], T + MIN)).toEqual([1, 1, 0]);
    checkpoint();
    expect(op.stats.pendingBytes).toBe(1024 * 12);
    expect(run(op, ['burst-19999', 'calm-2', 'calm-3'], T + 2 * MIN)).toEqual([0, 0, 1]);
    checkpoint();
    env.close();
  });

  it('reopens with a hot table smaller than the index: cold buckets are merged and searched', () => {
    const path = join(dir, 'reopen.mdb');
    let env = openLmdb({ path, maxDbs: 256 });
    let op = new DedupOperator(env, { ttlMs: 24 * HOUR });
    const ids = (prefix: string, n: number): string[] => Array.from({ length: n }, (_, i) => `${prefix}-${i}`);
    // Three checkpoints: two runs in the 10:00 bucket, one in the 12:00 bucket.
    for (const [batch, at] of [
      [ids('a', 300), T],
      [ids('b', 300), T + 10 * MIN],
      [ids('c', 50), T + 2 * HOUR],
    ] as const) {
      expect(run(op, [...batch], at).every((k) => k === 1)).toBe(true);
      env.transactionSync(() => op.onCheckpoint());
      op.afterCheckpoint();
    }
    env.close();

    env = openLmdb({ path, maxDbs: 256 });
    op = new DedupOperator(env, { ttlMs: 24 * HOUR, hotCapacity: 100 });
    expect(op.stats.complete).toBe(false);
    expect(op.stats.hotEntries).toBe(50);
    expect(run(op, ['a-0', 'a-299', 'b-150', 'c-7', 'd-0', 'a-0'], T + 3 * HOUR)).toEqual([0, 0, 0, 0, 1, 0]);
    env.close();

    // Reopened again with room for everything: every id is hot again, nothing lost by the merge.
    env = openLmdb({ path, maxDbs: 256 });
    op = new DedupOperator(env, { ttlMs: 24 * HOUR });
    expect(op.stats).toMatchObject({ complete: true, hotEntries: 650 });
    expect(run(op, ['a-1', 'b-2', 'c-3'], T + 3 * HOUR)).toEqual([0, 0, 0]);
    env.close();
  });
});

describe('SessionTable', () => {
  const GAP = 30 * MIN;
  const dims: DimValues = { id: 0, d: 'ios', v: '4.0', c: 'DE' };
  const other: DimValues = { id: 1, d: 'android', v: '5.0', c: 'US' };
  const users = utf8(['u1', 'u2']);
  const ids = utf8(['e1', 'e2']);
  const hi = new Uint32Array(2);
  const lo = new Uint32Array(2);
  fingerprintUtf8(users, hi, lo);
  const key = (row: number): number => fingerprintKey(hi[row]!, lo[row]!);
  /** Assigns an event of user row `u` (event id from row `u` of `ids` unless given). */
  const put = (s: SessionTable, u: number, t: number, screen: string | null = null, d: DimValues = dims, eventIds = ids, row = u) => s.assign(key(u), users, eventIds, row, t, screen, d);

  it.each([
    { name: 'one ms inside the gap after the end joins', second: T + GAP - 1, joins: true },
    { name: 'exactly at the gap after the end opens a new one', second: T + GAP, joins: false },
    { name: 'one ms inside the gap before the start joins', second: T - GAP + 1, joins: true },
    { name: 'exactly a gap before the start opens a new one', second: T - GAP, joins: false },
    { name: 'the same instant joins', second: T, joins: true },
  ])('$name', ({ second, joins }) => {
    const s = new SessionTable(GAP);
    const first = put(s, 0, T);
    expect(s.session(first).id).toBe(sessionIdOf('u1', T));
    const then = put(s, 0, second);
    if (joins) {
      expect(then).toBe(first);
      const x = s.session(first);
      expect([x.start, x.end, x.count]).toEqual([Math.min(T, second), Math.max(T, second), 2]);
      // The id follows the start; an earlier id stays as an alias.
      expect(x.id).toBe(sessionIdOf('u1', x.start));
      expect(x.aliases).toEqual(second < T ? [sessionIdOf('u1', T)] : null);
    } else {
      expect(then).not.toBe(first);
      expect(s.openCount).toBe(2); // both stay open: neither is closed by the other
      expect(s.session(then).id).toBe(sessionIdOf('u1', second));
    }
  });

  it('merges two sessions when an event bridges them, in any order', () => {
    const [a, bridge, b] = [T, T + GAP - MIN, T + 2 * GAP - 2 * MIN];
    const orders = [
      [a, b, bridge],
      [bridge, a, b],
      [b, bridge, a],
      [b, a, bridge],
    ];
    for (const order of orders) {
      const s = new SessionTable(GAP);
      for (const t of order) put(s, 0, t, t === a ? 'Home' : t === bridge ? null : 'Cart');
      expect(s.openCount).toBe(1);
      const [x] = s.close(Infinity);
      expect(x).toMatchObject({ id: sessionIdOf('u1', T), start: a, end: b, count: 3, firstScreen: 'Home', lastScreen: 'Cart' });
    }
  });

  it('journals session starts: +1 on open, −1/+1 when the start or the first event moves, −1 for a session merged away', () => {
    const s = new SessionTable(GAP);
    put(s, 0, T + HOUR); // opens at T + 1 h
    put(s, 0, T + HOUR - 10 * MIN, null, other); // start moves 10 min earlier, to another dims
    const a = s.takeStartChanges();
    expect(a.time.map((t, k) => [t - T, a.dims[k]!.id, a.delta[k]])).toEqual([
      [HOUR, 0, 1],
      [HOUR, 0, -1],
      [HOUR - 10 * MIN, 1, 1],
    ]);
    put(s, 0, T); // a separate earlier session
    put(s, 0, T + 25 * MIN); // bridges it with the later one
    const b = s.takeStartChanges();
    expect(b.time.map((t, k) => [t - T, b.delta[k]])).toEqual([
      [0, 1],
      [HOUR - 10 * MIN, -1],
    ]);
    expect(s.takeStartChanges().time).toEqual([]);
  });

  it('a tie on the start time picks the smaller event id for the dimensions', () => {
    const idsAB = utf8(['b', 'a']);
    for (const rows of [
      [0, 1],
      [1, 0],
    ]) {
      const s = new SessionTable(GAP);
      for (const r of rows) put(s, 0, T, null, r === 0 ? dims : other, idsAB, r);
      const [x] = s.close(Infinity);
      expect([x!.firstEventId, x!.dims.id]).toEqual(['a', 1]);
    }
  });

  it('closes a session exactly when the watermark reaches end + gap, and keeps users apart', () => {
    const s = new SessionTable(GAP);
    put(s, 0, T, 'Home');
    put(s, 1, T + 5 * MIN);
    put(s, 0, T + 10 * MIN, 'Cart');
    expect(s.openCount).toBe(2);
    expect(s.close(T + 10 * MIN + GAP - 1).map((x) => x.user)).toEqual(['u2']);
    const [u1] = s.close(T + 10 * MIN + GAP);
    expect(u1).toMatchObject({ user: 'u1', start: T, end: T + 10 * MIN, count: 2, firstScreen: 'Home', lastScreen: 'Cart' });
    expect(s.openCount).toBe(0);
  });

  it('closes a grown session only at its new deadline; several sessions of a user close in order', () => {
    const s = new SessionTable(GAP);
    put(s, 0, T); // filed under T + gap
    put(s, 0, T + 20 * MIN); // grows: deadline T + 20 min + gap
    put(s, 1, T);
    put(s, 1, T + 2 * GAP); // a second open session of u2
    expect(s.openCount).toBe(3);
    expect(s.close(T + GAP).map((x) => [x.user, x.start])).toEqual([['u2', T]]);
    expect(s.close(T + 20 * MIN + GAP - 1)).toEqual([]);
    expect(s.close(T + 20 * MIN + GAP).map((x) => [x.user, x.count])).toEqual([['u1', 2]]);
    put(s, 0, T + 3 * GAP);
    expect(s.close(T + 365 * 86_400_000).map((x) => [x.user, x.start])).toEqual([
      ['u2', T + 2 * GAP],
      ['u1', T + 3 * GAP],
    ]);
    expect(s.openCount).toBe(0);
    expect(s.close(Infinity)).toEqual([]);
  });

  it('a session merged away frees its slot; a new session reusing it closes once, at its own deadline', () => {
    const s = new SessionTable(GAP);
    const a = put(s, 0, T);
    const b = put(s, 0, T + GAP + 10 * MIN); // a second session of u1, due at T + 2 gap + 10 min
    expect(put(s, 0, T + GAP - MIN)).toBe(a); // bridges both: b is merged into a
    expect(s.openCount).toBe(1);
    const c = put(s, 1, T + GAP + 10 * MIN); // u2's first session: same deadline as b, and b's slot
    expect(c).toBe(b);
    expect(s.session(c)).toMatchObject({ user: 'u2', start: T + GAP + 10 * MIN, count: 1, aliases: null });
    expect(s.close(T + 2 * GAP + 10 * MIN - 1)).toEqual([]);
    const closed = s.close(T + 2 * GAP + 10 * MIN);
    expect(closed.map((x) => [x.user, x.start, x.end, x.count])).toEqual([
      ['u1', T, T + GAP + 10 * MIN, 3],
      ['u2', T + GAP + 10 * MIN, T + GAP + 10 * MIN, 1],
    ]);
    expect(closed[0]!.aliases).toEqual([sessionIdOf('u1', T + GAP + 10 * MIN)]);
    expect(s.openCount).toBe(0);
    expect(s.close(Infinity)).toEqual([]);
  });

  it('stored form of open sessions: positional records round-trip through LMDB; values of the object form are still read', () => {
    const s = new SessionTable(GAP);
    put(s, 0, T + 10 * MIN, 'Home');
    put(s, 0, T); // moves the start: an alias; no screen
    put(s, 0, T + 3 * GAP, null, other); // a second open session of u1
    put(s, 0, T + 3 * GAP + 5 * MIN, 'Cart');
    put(s, 1, T + 7 * MIN);
    const dir = mkdtempSync(join(tmpdir(), 'sluice-session-record-'));
    const env = openLmdb({ path: join(dir, 'state.mdb'), maxDbs: 8 });
    try {
      const db = env.openDB({ name: 'state-sessions', encoding: 'msgpack' });
      const k0 = key(0);
      const k1 = key(1);
      db.putSync(k0, packSessions(s.userSessions(k0)));
      db.putSync(k1, s.userSessions(k1)); // the object form, as written before
      const read = new Map(db.getRange().map(({ key: k, value }) => [k as number, unpackSessions(k as number, value)] as const));
      expect(read.get(k0)).toEqual(s.userSessions(k0));
      expect(read.get(k0)!.map((x) => [x.start - T, x.count, x.firstScreen, x.lastScreen, x.aliases?.length ?? 0])).toEqual([
        [0, 2, 'Home', 'Home', 1],
        [3 * GAP, 2, 'Cart', 'Cart', 0],
      ]);
      expect(read.get(k1)).toEqual(s.userSessions(k1));
      // Restored from them, the table goes on as the original does.
      const r = new SessionTable(GAP);
      r.restore([...read.values()].flat(), (d, v, c) => [dims, other].find((x) => x.d === d && x.v === v && x.c === c)!);
      for (const t of [s, r]) put(t, 0, T + 2 * GAP - MIN); // a third session of u1, between the two
      expect(r.close(Infinity)).toEqual(s.close(Infinity));
    } finally {
      env.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('binary stored form (userRecord, what checkpoints write): round-trips through LMDB exactly, with UUID and non-ASCII ids, rare screens, screens weeks after the start and aliases', () => {
    const s = new SessionTable(GAP, { screenInternMax: 1 });
    const users2 = utf8(['Zoë-ü-1', '4E5F6A7B-0C1D-4E2F-8A9B-0C1D2E3F4A5B']);
    const ids2 = utf8(['6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b', 'é-event']);
    const h = new Uint32Array(2);
    const l = new Uint32Array(2);
    fingerprintUtf8(users2, h, l);
    const k = (row: number): number => fingerprintKey(h[row]!, l[row]!);
    const add = (u: number, t: number, screen: string | null, d: DimValues = dims) => s.assign(k(u), users2, ids2, u, t, screen, d);
    add(0, T + 10 * MIN, 'Home'); // interned (the one name the table interns)
    add(0, T, 'Écran ✓'); // moves the start (an alias), a rare screen
    add(0, T + 3 * GAP, null, other); // a second open session
    for (let d = 1; d <= 1300; d++) add(1, T + d * (GAP - MIN), d === 1300 ? 'Cart' : null); // 1300 × 29 min: the last screen 26 days (> 2^31 ms) after its start
    add(1, T + 40 * 86_400_000, 'Far'); // a second session of user 2, far later
    const dir = mkdtempSync(join(tmpdir(), 'sluice-session-binary-'));
    const env = openLmdb({ path: join(dir, 'state.mdb'), maxDbs: 8 });
    try {
      const db = env.openDB({ name: 'state-sessions', encoding: 'msgpack' });
      const w = new RecordWriter();
      env.transactionSync(() => {
        for (const u of [0, 1]) db.putSync(k(u), s.userRecord(k(u), w)!);
      });
      expect(s.userRecord(key(0), w)).toBeUndefined(); // a user with no open session
      const read = new Map(db.getRange().map(({ key: kk, value }) => [kk as number, unpackSessions(kk as number, value)] as const));
      for (const u of [0, 1]) expect(read.get(k(u))).toEqual(s.userSessions(k(u)));
      expect(read.get(k(0))!.map((x) => [x.user, x.firstEventId, x.firstScreen, x.lastScreen, x.aliases?.length ?? 0])).toEqual([
        ['Zoë-ü-1', '6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b', 'Écran ✓', 'Home', 1],
        ['Zoë-ü-1', '6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b', null, null, 0],
      ]);
      expect(read.get(k(1))!.map((x) => [x.count, x.lastScreen])).toEqual([
        [1300, 'Cart'],
        [1, 'Far'],
      ]);
      // Cut short or not a session record: a clear error, not a wrong state.
      const bytes = s.userRecord(k(1), w)!;
      expect(() => unpackSessions(k(1), bytes.subarray(0, bytes.length - 3))).toThrow(/cut short/);
      expect(() => unpackSessions(k(1), Uint8Array.of(1, 2, 3))).toThrow(/not a session record/);
      // Restored from them, the table goes on as the original does.
      const r = new SessionTable(GAP);
      r.restore([...read.values()].flat(), (d, v, c) => [dims, other].find((x) => x.d === d && x.v === v && x.c === c)!);
      for (const t of [s, r]) t.assign(k(0), users2, ids2, 0, T + 2 * GAP - MIN, 'Home', dims); // bridges user 1's two sessions
      expect(r.close(Infinity)).toEqual(s.close(Infinity));
    } finally {
      env.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('gives back the slots of a burst once most of its sessions closed, and goes on as a table that kept them', () => {
    const n = 100_000;
    const userCol = utf8(Array.from({ length: n }, (_, i) => `burst-${i}`));
    const idCol = utf8(Array.from({ length: n }, (_, i) => `e-${i}`));
    const bh = new Uint32Array(n);
    const bl = new Uint32Array(n);
    fingerprintUtf8(userCol, bh, bl);
    const burst = (t: SessionTable): void => {
      // 100 K users, one event each; every tenth one comes back 20 min later (still open after the rest close).
      for (let i = 0; i < n; i++) t.assign(fingerprintKey(bh[i]!, bl[i]!), userCol, idCol, i, T + (i % 600) * 1000, i % 3 === 0 ? 'Home' : null, i % 2 ? dims : other);
      for (let i = 0; i < n; i += 10) t.assign(fingerprintKey(bh[i]!, bl[i]!), userCol, idCol, i, T + 20 * MIN + i, null, dims);
      // … and half of those had an earlier event too: their start moved (an alias each).
      for (let i = 0; i < n; i += 20) t.assign(fingerprintKey(bh[i]!, bl[i]!), userCol, idCol, i, T + (i % 600) * 1000 - MIN, 'Feed', other);
      t.takeStartChanges();
    };
    const kept = new SessionTable(GAP, { compact: false });
    const compacted = new SessionTable(GAP);
    for (const t of [kept, compacted]) burst(t);
    const closedFirst = compacted.close(T + 10 * MIN + GAP);
    expect(kept.close(T + 10 * MIN + GAP)).toEqual(closedFirst);
    expect(closedFirst.length).toBe(n - n / 10);
    kept.clearChanged();
    compacted.clearChanged();
    expect(compacted.openCount).toBe(n / 10);
    expect(kept.slotCount).toBeGreaterThanOrEqual(n);
    expect(compacted.slotCount).toBeLessThan(n / 4);
    // The compacted table behaves exactly as before: new events, a merge, the rest closing.
    for (const t of [kept, compacted]) {
      put(t, 0, T + 25 * MIN);
      t.assign(fingerprintKey(bh[10]!, bl[10]!), userCol, idCol, 10, T + 20 * MIN + 5, 'Cart', other);
    }
    expect(compacted.takeStartChanges()).toEqual(kept.takeStartChanges());
    expect(compacted.snapshot().sort((a, b) => a.key - b.key || a.start - b.start)).toEqual(kept.snapshot().sort((a, b) => a.key - b.key || a.start - b.start));
    expect(compacted.close(Infinity)).toEqual(kept.close(Infinity));
  });

  it('session ids: two murmur3 hashes of "user:start" as 8 hex digits each', () => {
    const bytes = new TextEncoder().encode(`u1:${T}`);
    const hex = (h: number): string => h.toString(16).padStart(8, '0');
    expect(sessionIdOf('u1', T)).toBe(hex(murmur3(bytes, 0, bytes.length, 0x5e55)) + hex(murmur3(bytes, 0, bytes.length, 0x10ad)));
    const s = new SessionTable(GAP);
    const out = new Uint8Array(20);
    s.writeId(put(s, 0, T), out, 4);
    expect(Buffer.from(out.subarray(4)).toString('latin1')).toBe(sessionIdOf('u1', T));
  });

  it('session ids from the user id bytes equal sessionIdOf of its string: ASCII, other UTF-8, invalid UTF-8; after a start move and a restore', () => {
    const bytes = [Buffer.from('user-17'), Buffer.from('jürgen-日本'), Buffer.from([0x75, 0xff, 0x2d, 0xc3])]; // the last: not UTF-8
    const offsets = Int32Array.from([0, ...bytes.map((_, i) => bytes.slice(0, i + 1).reduce((n, b) => n + b.length, 0))]);
    const col = makeData({ type: new Utf8(), length: bytes.length, nullCount: 0, valueOffsets: offsets, data: Buffer.concat(bytes) });
    const names = bytes.map((b) => new TextDecoder().decode(b));
    const ev = utf8(['e0', 'e1', 'e2']);
    const fh = new Uint32Array(3);
    const fl = new Uint32Array(3);
    fingerprintUtf8(col, fh, fl);
    const s = new SessionTable(GAP);
    const idAt = (slot: number): string => {
      const out = new Uint8Array(16);
      s.writeId(slot, out, 0);
      return Buffer.from(out).toString('latin1');
    };
    for (let u = 0; u < 3; u++) {
      const k = fingerprintKey(fh[u]!, fl[u]!);
      expect(idAt(s.assign(k, col, ev, u, T, null, dims))).toBe(sessionIdOf(names[u]!, T));
      // An earlier event moves the start: the id follows it.
      expect(idAt(s.assign(k, col, ev, u, T - MIN, null, dims))).toBe(sessionIdOf(names[u]!, T - MIN));
    }
    const restored = new SessionTable(GAP);
    restored.restore(s.snapshot(), () => dims);
    const byUser = (a: string[], b: string[]): number => (a[0]! < b[0]! ? -1 : 1);
    expect(restored.snapshot().map((x) => [x.user, x.id]).sort(byUser)).toEqual(names.map((n) => [n, sessionIdOf(n, T - MIN)]).sort(byUser));
  });

  it('snapshots and restores open sessions (several per user, aliases, dimensions by value)', () => {
    const s = new SessionTable(GAP);
    put(s, 0, T + 10 * MIN);
    put(s, 0, T, 'Home'); // alias of T + 10 min
    put(s, 0, T + 60 * MIN, null, other);
    put(s, 0, T + 60 * MIN);
    const snap = JSON.parse(JSON.stringify(s.snapshot())) as ReturnType<SessionTable['snapshot']>;
    expect(snap.every((x) => !('next' in x) && !('prev' in x))).toBe(true);
    const r = new SessionTable(GAP);
    r.restore(snap, (d, v, c) => [dims, other].find((x) => x.d === d && x.v === v && x.c === c)!);
    expect(r.openCount).toBe(2);
    put(r, 0, T + 35 * MIN); // bridges the two restored sessions
    const [x] = r.close(Infinity);
    expect(x).toMatchObject({ start: T, end: T + 60 * MIN, count: 5, firstScreen: 'Home', dims });
    expect(x!.aliases).toEqual([sessionIdOf('u1', T + 10 * MIN), sessionIdOf('u1', T + 60 * MIN)]);
  });

  it('reports a changed user after any number of checkpoints (the one-byte change epochs wrap every 255)', () => {
    const s = new SessionTable(GAP);
    // User 0 changes every 255th checkpoint, exactly when the epoch has come round to the same value; user 1 every 7th.
    for (let i = 0; i < 800; i++) {
      const want: number[] = [];
      if (i % 255 === 0) {
        put(s, 0, T + i);
        want.push(key(0));
      }
      if (i % 7 === 3) {
        put(s, 1, T + i);
        want.push(key(1));
      }
      expect(s.changedUsers().sort()).toEqual(want.sort());
      s.clearChanged();
    }
  });

  it('keeps screen times exact in a session longer than 2^31 ms (24.8 days), through a start move, a snapshot and its close', () => {
    const DAY = 24 * HOUR;
    const s = new SessionTable(GAP);
    const n = (26 * DAY) / (20 * MIN); // an event every 20 minutes for 26 days: one session
    const rows = utf8(Array.from({ length: n + 1 }, () => 'u1'));
    const eventIds = utf8(Array.from({ length: n + 1 }, (_, i) => `e${i}`));
    // The last screen 2 146 800 000 ms after the start: just under 2^31 ms (2 147 483 648).
    const lastScreen = 1789;
    let slot = -1;
    for (let i = 0; i < n; i++) {
      const screen = i === 1 ? 'Onboarding' : i === lastScreen ? 'Goodbye' : i < lastScreen && i % 50 === 25 ? 'Feed' : null;
      slot = s.assign(key(0), rows, eventIds, i, T + i * 20 * MIN, screen, dims);
    }
    const end = T + (n - 1) * 20 * MIN;
    const screens = { firstScreen: 'Onboarding', firstScreenTime: T + 20 * MIN, lastScreen: 'Goodbye', lastScreenTime: T + lastScreen * 20 * MIN };
    expect(s.session(slot)).toMatchObject({ start: T, end, count: n, ...screens });
    // A late event 20 minutes before the start moves it: the last screen is now more than 2^31 ms after it.
    slot = s.assign(key(0), rows, eventIds, n, T - 20 * MIN, null, dims);
    const want = { start: T - 20 * MIN, end, count: n + 1, ...screens };
    expect(want.lastScreenTime - want.start).toBeGreaterThan(2 ** 31);
    expect(s.session(slot)).toMatchObject(want);
    const restored = new SessionTable(GAP);
    restored.restore(s.snapshot(), () => dims);
    expect(restored.snapshot()).toEqual(s.snapshot());
    expect(restored.close(end + GAP)).toMatchObject([want]);
    expect(s.close(end + GAP)).toMatchObject([want]);
  });

  it('keeps screen names beyond the interned ones per session, through merges, closes, slot reuse and restores', () => {
    // Differential: a table that interns only 2 names against one that interns them all; everything
    // else is the same code, so any difference is the path of the names beyond the interned ones.
    const names = ['Home', 'Cart', 'Feed', 'Profile', 'Search', 'Settings', 'Checkout', 'Video'];
    const event = fc.record({ user: fc.nat(1), minute: fc.nat(240), screen: fc.option(fc.constantFrom(...names), { freq: 3 }) });
    const step = fc.oneof({ weight: 8, arbitrary: event }, { weight: 1, arbitrary: fc.constant('close' as const) }, { weight: 1, arbitrary: fc.constant('restore' as const) });
    fc.assert(
      fc.property(fc.array(step, { minLength: 20, maxLength: 150 }), (steps) => {
        let few = new SessionTable(GAP, { screenInternMax: 2 });
        const all = new SessionTable(GAP);
        // Row i of these columns is step i's event.
        const rowUsers = utf8(steps.map((x) => (typeof x === 'object' && x.user === 1 ? 'u2' : 'u1')));
        const eventIds = utf8(steps.map((_, i) => `e${String(i).padStart(4, '0')}`));
        const intern = (d: string, v: string, c: string) => [dims, other].find((x) => x.d === d && x.v === v && x.c === c)!;
        let watermark = T - HOUR;
        steps.forEach((x, i) => {
          if (x === 'close') {
            watermark += 40 * MIN;
            expect(few.close(watermark)).toEqual(all.close(watermark));
          } else if (x === 'restore') {
            const snap = few.snapshot();
            few = new SessionTable(GAP, { screenInternMax: 2 });
            few.restore(snap, intern);
          } else {
            const t = Math.max(watermark, T + x.minute * MIN);
            const a = few.assign(key(x.user), rowUsers, eventIds, i, t, x.screen, dims);
            const b = all.assign(key(x.user), rowUsers, eventIds, i, t, x.screen, dims);
            expect(few.session(a)).toEqual(all.session(b));
          }
        });
        const order = (xs: ReturnType<SessionTable['snapshot']>) => [...xs].sort((p, q) => p.start - q.start || p.key - q.key);
        expect(order(few.snapshot())).toEqual(order(all.snapshot()));
        expect(few.close(Infinity)).toEqual(all.close(Infinity));
      }),
      { numRuns: 150, seed: 1205 },
    );
  });
});

describe('KeySet', () => {
  it('holds the same keys as a Set, through growth, with colliding low bits and key 0', () => {
    const key = fc.oneof(
      fc.integer({ min: 0, max: 2 ** 53 - 1 }),
      fc.integer({ min: 0, max: 15 }).map((lo) => lo + 2 ** 32 * 7), // same low 32 bits as others below
      fc.integer({ min: 0, max: 15 }),
    );
    fc.assert(
      fc.property(fc.array(key, { maxLength: 400, size: 'large' }), (keys) => {
        const set = new KeySet();
        const oracle = new Set<number>();
        for (const k of keys) expect(set.add(k)).toBe(!oracle.has(k) && oracle.add(k) !== undefined);
        expect(set.size).toBe(oracle.size);
        expect([...set].sort((a, b) => a - b)).toEqual([...oracle].sort((a, b) => a - b));
        expect([...set.toFloat64Array()].sort((a, b) => a - b)).toEqual([...oracle].sort((a, b) => a - b));
        for (const k of keys) expect(set.has(k)).toBe(true);
        expect(set.has(2 ** 53 - 3) && !oracle.has(2 ** 53 - 3)).toBe(false);
        const union = new KeySet();
        union.addAll(set);
        union.add(2 ** 40);
        expect(union.size).toBe(oracle.size + (oracle.has(2 ** 40) ? 0 : 1));
      }),
      { numRuns: 200, seed: 1203 },
    );
  });
});

describe('SlotIndex', () => {
  it('behaves as a Map from key to slot through sets, overwrites, deletes (backward shift), growth and shrinking', () => {
    const key = fc.oneof(
      fc.integer({ min: 0, max: 2 ** 53 - 1 }),
      fc.integer({ min: 0, max: 40 }).map((k) => (k % 8) + 2 ** 32 * (k >> 3)), // runs of equal low bits
      fc.integer({ min: 0, max: 40 }),
    );
    const op = fc.tuple(fc.constantFrom('set', 'set', 'delete'), key);
    fc.assert(
      fc.property(fc.array(op, { maxLength: 600, size: 'large' }), (ops) => {
        const index = new SlotIndex();
        const oracle = new Map<number, number>();
        // The owner's slot table: every set takes a fresh slot holding its key, as a session opening does.
        const keyOf = new Float64Array(ops.length);
        let slots = 0;
        for (const [kind, k] of ops) {
          if (kind === 'set') {
            const slot = slots++;
            keyOf[slot] = k;
            index.set(k, slot, keyOf);
            oracle.set(k, slot);
          } else expect(index.delete(k, keyOf)).toBe(oracle.delete(k));
          expect(index.get(k, keyOf)).toBe(oracle.get(k) ?? -1);
        }
        expect(index.size).toBe(oracle.size);
        for (const [k, v] of oracle) expect(index.get(k, keyOf)).toBe(v);
        for (const [, k] of ops) expect(index.get(k, keyOf)).toBe(oracle.get(k) ?? -1);
        expect([...index.slots()].sort((a, b) => a - b)).toEqual([...oracle.values()].sort((a, b) => a - b));
      }),
      { numRuns: 300, seed: 1204 },
    );
  });
});

describe('AggregateOperator', () => {
  it('interns combinations and rolls up all 8 grouping sets with distinct users', () => {
    const a = new AggregateOperator(30 * MIN);
    const ios = a.comboOf('ios', '4.0', 'DE');
    expect(a.comboOf('ios', '4.0', 'DE')).toBe(ios);
    const android = a.comboOf('android', '4.0', 'US');
    const day = T - (T % 86_400_000);
    a.addEvent(a.acc('hourly', T, ios), a.acc('daily', day, ios), 1, 0);
    a.addEvent(a.acc('hourly', T, ios), a.acc('daily', day, ios), 1, 0);
    a.addEvent(a.acc('hourly', T, android), a.acc('daily', day, android), 2, 0);
    expect(a.emit(T + HOUR - 1).hourly).toEqual([]);
    const [hour] = a.emit(T + HOUR).hourly;
    const rows = mergePartials('hourly', [hour!]);
    const byDims = new Map(rows.map((r) => [`${r.device_type}/${r.app_version}/${r.country}`, [r.events, r.active_users]]));
    expect(Object.fromEntries(byDims)).toEqual({
      'ALL/4.0/ALL': [3, 2],
      'ALL/4.0/DE': [2, 1],
      'ALL/4.0/US': [1, 1],
      'ALL/ALL/ALL': [3, 2],
      'ALL/ALL/DE': [2, 1],
      'ALL/ALL/US': [1, 1],
      'android/4.0/ALL': [1, 1],
      'android/4.0/US': [1, 1],
      'android/ALL/ALL': [1, 1],
      'android/ALL/US': [1, 1],
      'ios/4.0/ALL': [2, 1],
      'ios/4.0/DE': [2, 1],
      'ios/ALL/ALL': [2, 1],
      'ios/ALL/DE': [2, 1],
    });
  });

  it('maps a batch’s dictionary indices (nulls → unknown) to interned combinations', () => {
    const a = new AggregateOperator(30 * MIN);
    const dict = (values: Array<string | null>) => vectorFromArray(values).data[0]! as never;
    const combos = a.combosOf(dict(['ios', 'ios', null]), dict(['4.0', '4.0', '4.0']), dict(['DE', 'US', 'DE']), Int32Array.of(0, 1, 2, 0));
    expect(Array.from(combos)).toEqual([0, 1, 2, 0]);
    expect(a.combos.map((c) => `${c.d}/${c.v}/${c.c}`)).toEqual(['ios/4.0/DE', 'ios/4.0/US', 'unknown/4.0/DE']);
  });
});

describe('AggregateOperator incremental checkpoints', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-agg-state-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const day = T - (T % 86_400_000);

  it('writes only what changed, compacts user runs, deletes emitted windows, and loads back exactly', () => {
    const env = openLmdb({ path: join(dir, 'state.mdb'), maxDbs: 16 });
    const dbs = { accs: env.openDB({ name: 'accs', encoding: 'msgpack' }), users: env.openDB({ name: 'users', encoding: 'binary' }) };
    const a = new AggregateOperator(30 * MIN);
    const ios = a.comboOf('ios', '4.0', 'DE');
    const checkpoint = (): void => {
      env.transactionSync(() => a.checkpoint(dbs));
      a.afterCheckpoint();
    };
    // 100 checkpoints, each seeing one new user and one repeat: user runs reach MAX_RUNS (64) and are compacted.
    for (let k = 0; k < 100; k++) {
      a.addEvent(a.acc('hourly', T, ios), a.acc('daily', day, ios), 1000 + k, 0);
      a.addEvent(a.acc('hourly', T, ios), a.acc('daily', day, ios), 1000, 0);
      checkpoint();
    }
    const runs = [...dbs.users.getKeys()].length;
    expect(runs).toBeLessThanOrEqual(2 * 64);
    // Nothing changed: nothing is written.
    const before = env.getStats() as { entryCount?: number };
    const txnBefore = [...dbs.accs.getRange()].map((e) => JSON.stringify(e.value));
    checkpoint();
    expect([...dbs.accs.getRange()].map((e) => JSON.stringify(e.value))).toEqual(txnBefore);
    expect(env.getStats()).toEqual(before);
    const restored = new AggregateOperator(30 * MIN);
    restored.load(dbs);
    const rows = (op: AggregateOperator): unknown => mergePartials('hourly', op.openHourly());
    expect(rows(restored)).toEqual(rows(a));
    expect((restored.openHourly()[0]!.rows[0]!).active_users).toBe(100);
    // Emitting the hour deletes its accumulator and runs at the next checkpoint; the day stays.
    a.emit(T + HOUR);
    checkpoint();
    expect([...dbs.accs.getKeys()].map((k) => (k as unknown[])[0])).toEqual([1]);
    const again = new AggregateOperator(30 * MIN);
    again.load(dbs);
    expect(again.openHourly()).toEqual([]);
    expect(again.emit(Infinity).daily[0]!.rows.find((r) => r.device_type === 'ALL' && r.app_version === 'ALL' && r.country === 'ALL')!.active_users).toBe(100);
    env.close();
  });
});

describe('AggregateOperator live view of the hour', () => {
  it('counts the latest open hour as events arrive — the same figures as counting the events themselves, after a restore too', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-agg-live-'));
    const env = openLmdb({ path: join(dir, 'state.mdb'), maxDbs: 16 });
    try {
      const dbs = { accs: env.openDB({ name: 'accs', encoding: 'msgpack' }), users: env.openDB({ name: 'users', encoding: 'binary' }) };
      const a = new AggregateOperator(30 * MIN);
      const combos = [a.comboOf('ios', '4.0', 'DE'), a.comboOf('android', '5.0', 'US'), a.comboOf('ios', '4.1', 'FR')];
      const day = T - (T % 86_400_000);
      // Seeded: events over three hours, in no order, a user's events under several combinations.
      let seed = 7;
      const rand = (n: number): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
      const events = Array.from({ length: 3000 }, () => ({ hour: T + rand(3) * HOUR, user: 1 + rand(400), combo: combos[rand(3)]!, metrics: [0, M.notificationView, M.notificationOpen, M.screen][rand(4)]! }));
      const oracle = (): unknown => {
        const latest = events.filter((e) => e.hour === T + 2 * HOUR);
        return {
          windowStart: T + 2 * HOUR,
          events: latest.length,
          activeUsers: new Set(latest.map((e) => e.user)).size,
          sessions: 0,
          notificationViews: latest.filter((e) => e.metrics === M.notificationView).length,
          notificationOpens: latest.filter((e) => e.metrics === M.notificationOpen).length,
        };
      };
      events.slice(0, 1500).forEach((e) => a.addEvent(a.acc('hourly', e.hour, e.combo), a.acc('daily', day, e.combo), e.user, e.metrics));
      env.transactionSync(() => a.checkpoint(dbs));
      a.afterCheckpoint();
      // A restored operator goes on from the checkpoint with the rest of the events.
      const restored = new AggregateOperator(30 * MIN);
      restored.load(dbs);
      for (const op of [a, restored]) events.slice(1500).forEach((e) => op.addEvent(op.acc('hourly', e.hour, e.combo), op.acc('daily', day, e.combo), e.user, e.metrics));
      expect(a.liveHourly()).toEqual(oracle());
      expect(restored.liveHourly()).toEqual(oracle());
      // The roll-up that emits the window agrees.
      const total = a.openHourly().find((p) => p.windowStart === T + 2 * HOUR)!.rows[0]!;
      expect(total.active_users).toBe((oracle() as { activeUsers: number }).activeUsers);
      // Once the latest hour is emitted, no hour is open.
      a.emit(T + 3 * HOUR);
      expect(a.liveHourly()).toBeUndefined();
    } finally {
      env.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('AggregateOperator live view of the day', () => {
  it('reports the open daily windows’ closed sessions and bounces (the dashboard’s bounce rate today)', () => {
    const a = new AggregateOperator(30 * MIN);
    const ios = a.comboOf('ios', '4.0', 'DE');
    const android = a.comboOf('android', '5.0', 'US');
    const day = T - (T % 86_400_000);
    a.addClosedSession(T, ios, 0, true);
    a.addClosedSession(T + HOUR, android, 600, false);
    a.addClosedSession(T + 2 * HOUR, ios, 0, true);
    expect(a.openDailySessions()).toEqual([{ windowStart: day, sessionsClosed: 3, bounces: 2 }]);
    a.emit(day + 86_400_000 + 30 * MIN);
    expect(a.openDailySessions()).toEqual([]);
  });
});
