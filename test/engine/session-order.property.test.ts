/**
 * Property tests of invariant 6 (results do not depend on arrival order) for sessions, with an
 * oracle that shares nothing with the engine: its own event generator, its own sessionizer (sort
 * per user, cut at gaps ≥ 30 min), its own first/last rules.
 *
 * 1. Any arrival order within the allowed lateness (each event delayed by less than the
 *    lateness), cut into random batches with random duplicates, gives the same gold sessions
 *    (ids included), the same silver → session assignment (silver's stamped ids resolved through
 *    the aliases, as the `events` view does) and the same hourly/daily session counts as the
 *    events in time order, and the sessions are the oracle's.
 * 2. A crash at a random point (checkpoint, keep going, kill: the uncheckpointed work is lost,
 *    restore, replay from the checkpoint) gives the same result as no crash.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { open as openLmdb } from 'lmdb';
import { afterAll, describe, expect, it } from 'vitest';
import { ShardPipeline, type WatermarkOutput } from '../../engine/operators/shard-pipeline.js';
import { IngestBatchBuilder } from '../../ingest/batch-builder.js';

const MIN = 60_000;
const HOUR = 60 * MIN;
const GAP = 30 * MIN;
const LATENESS = 2 * HOUR;
const T0 = Date.UTC(2026, 2, 1, 21, 0, 0); // sessions cross midnight too
const DIMS = [
  ['ios', '4.0', 'DE'],
  ['android', '5.1', 'US'],
  ['web', '1.0', 'FR'],
] as const;
const SCREENS = ['Home', 'Feed', 'Cart', 'Profile'];

interface Ev {
  id: string;
  user: string;
  t: number;
  dims: number;
  /** Screen name for screen events, null for others. */
  screen: string | null;
}

// ---- the generator: per user, a walk in time whose steps are short, near the gap, or long ----
const step = fc.oneof(
  fc.integer({ min: 0, max: 20 * MIN }),
  fc.integer({ min: GAP - 3 * MIN, max: GAP + 3 * MIN }),
  fc.integer({ min: GAP + 1, max: 3 * HOUR }),
  fc.constant(0), // the same instant: ties
);
const userEvents = fc.array(fc.tuple(step, fc.nat(DIMS.length - 1), fc.option(fc.constantFrom(...SCREENS), { nil: null })), { minLength: 1, maxLength: 10 });
const scenario = fc.record({
  users: fc.array(fc.tuple(fc.integer({ min: 0, max: 4 * HOUR }), userEvents), { minLength: 1, maxLength: 5 }),
  /** Delivery delays (< lateness), used round-robin. */
  delays: fc.array(fc.integer({ min: 0, max: LATENESS - 1 }), { minLength: 1, maxLength: 40 }),
  /** Batch sizes, used round-robin. */
  batchSizes: fc.array(fc.integer({ min: 1, max: 7 }), { minLength: 1, maxLength: 10 }),
  /** Every k-th arrival is also re-sent (a client retry) a few positions later; 0 = none. */
  dupEvery: fc.nat(5),
});
type Scenario = typeof scenario extends fc.Arbitrary<infer S> ? S : never;

function eventsOf(s: Scenario): Ev[] {
  const out: Ev[] = [];
  s.users.forEach(([offset, steps], u) => {
    let t = T0 + offset;
    steps.forEach(([dt, dims, screen], k) => {
      t += dt;
      // Ids are not in time order, so the tie rule (smallest event id) is exercised.
      out.push({ id: `e${(k * 7919 + u * 104729) % 1000003}-u${u}-${k}`, user: `user-${u}`, t, dims, screen });
    });
  });
  return out;
}

/** Arrival order: each event delayed by less than the allowed lateness; duplicates re-sent later. */
function arrivals(events: Ev[], s: Scenario): Ev[] {
  const keyed = events.map((e, k) => ({ e, at: e.t + s.delays[k % s.delays.length]!, k }));
  keyed.sort((a, b) => a.at - b.at || a.k - b.k);
  const order = keyed.map((x) => x.e);
  if (s.dupEvery > 0) {
    for (let k = order.length - 1; k >= 0; k -= s.dupEvery) order.splice(Math.min(order.length, k + 3), 0, order[k]!);
  }
  return order;
}

// ---- the oracle ----
interface OracleSession {
  user: string;
  start: number;
  end: number;
  count: number;
  firstScreen: string | null;
  lastScreen: string | null;
  dims: string;
  members: string[];
}

function oracle(events: Ev[]): OracleSession[] {
  const byUser = new Map<string, Ev[]>();
  for (const e of events) byUser.set(e.user, [...(byUser.get(e.user) ?? []), e]);
  const out: OracleSession[] = [];
  for (const evs of byUser.values()) {
    evs.sort((a, b) => a.t - b.t || (a.id < b.id ? -1 : 1));
    let cur: Ev[] = [];
    const close = (): void => {
      const screens = cur.filter((e) => e.screen !== null);
      const minT = Math.min(...screens.map((e) => e.t));
      const maxT = Math.max(...screens.map((e) => e.t));
      const names = (t: number): string[] => screens.filter((e) => e.t === t).map((e) => e.screen!).sort();
      out.push({
        user: cur[0]!.user,
        start: cur[0]!.t,
        end: cur[cur.length - 1]!.t,
        count: cur.length,
        firstScreen: screens.length ? names(minT)[0]! : null,
        lastScreen: screens.length ? names(maxT).at(-1)! : null,
        dims: DIMS[cur[0]!.dims]!.join('/'),
        members: cur.map((e) => e.id).sort(),
      });
      cur = [];
    };
    for (const e of evs) {
      if (cur.length > 0 && e.t - cur[cur.length - 1]!.t >= GAP) close();
      cur.push(e);
    }
    close();
  }
  return out.sort((a, b) => a.start - b.start || (a.user < b.user ? -1 : 1));
}

// ---- the engine, driven as the shard runtime drives it ----
interface Result {
  sessions: Array<Record<string, unknown>>;
  /** event_id → resolved session id. */
  assignment: Record<string, string | null>;
  /** `granularity@window@dims` → session count. */
  sessionCounts: Record<string, number>;
  duplicates: number;
  tooLate: number;
}

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/**
 * Runs `order` in batches; with `crashAt`, takes a checkpoint after that many batches, processes
 * `lostBatches` more whose effects are then lost (kill), restores and replays from the checkpoint.
 */
function runEngine(order: Ev[], batchSizes: number[], crash?: { at: number; lostBatches: number }): Result {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-session-prop-'));
  dirs.push(dir);
  const env = openLmdb({ path: join(dir, 'state.mdb'), maxDbs: 256, compression: false });
  const options = { shard: 0, db: env, allowedLatenessMs: LATENESS, sessionGapMs: GAP, dedupTtlMs: 24 * HOUR };
  const batches: Ev[][] = [];
  for (let at = 0, k = 0; at < order.length; k++) {
    const n = batchSizes[k % batchSizes.length]!;
    batches.push(order.slice(at, at + n));
    at += n;
  }
  const builder = new IngestBatchBuilder(64);
  const stamped = new Map<string, string | null>();
  const aliases = new Map<string, string>();
  const sessions: Array<Record<string, unknown>> = [];
  const counts = new Map<string, number>();
  let duplicates = 0;
  let tooLate = 0;
  const collect = (o: WatermarkOutput): void => {
    for (const a of o.aliases?.toArray() ?? []) aliases.set(a.alias_id as string, a.session_id as string);
    for (const r of o.sessions?.toArray() ?? []) {
      const x = r.toJSON() as Record<string, unknown>;
      sessions.push({ ...x, session_start: Number(x.session_start), session_end: Number(x.session_end), event_count: Number(x.event_count) });
    }
    for (const p of [...o.hourly, ...o.daily]) {
      for (const row of p.rows) {
        if (row.device_type === 'ALL' || row.app_version === 'ALL' || row.country === 'ALL') continue;
        const key = `${p.granularity}@${p.windowStart}@${row.device_type}/${row.app_version}/${row.country}`;
        counts.set(key, (counts.get(key) ?? 0) + row.sessions);
      }
    }
  };
  /** Effects since the last checkpoint, dropped on a crash. */
  let uncommitted: Array<() => void> = [];
  const commit = (): void => {
    for (const f of uncommitted) f();
    uncommitted = [];
  };
  let pipeline = new ShardPipeline(options);
  const process = (batch: Ev[]): void => {
    builder.reset();
    for (const e of batch) {
      const [device, version, country] = DIMS[e.dims]!;
      builder.push({
        event_id: e.id,
        user_id: e.user,
        anonymous_id: null,
        event_type: e.screen !== null ? 'screen' : 'Product Clicked',
        event_time: e.t,
        received_at: e.t,
        device_type: device,
        os: null,
        app_version: version,
        country,
        source: 'property',
        properties: e.screen !== null ? JSON.stringify({ name: e.screen }) : null,
        raw: null,
      });
    }
    const out = pipeline.processBatch(builder.build());
    const ids = out.silver.getChild('event_id')!.toArray() as string[];
    const sids = out.silver.getChild('session_id')!.toArray() as Array<string | null>;
    const late = out.tooLate.reduce((a, b) => a + b, 0);
    const wm = pipeline.localWatermark();
    const emitted = wm.kind === 'event-time' ? pipeline.advanceWatermark(wm.timeMs) : undefined;
    uncommitted.push(() => {
      ids.forEach((id, j) => stamped.set(id, sids[j]!));
      duplicates += out.duplicates;
      tooLate += late;
      if (emitted) collect(emitted);
    });
  };
  const checkpoint = (): Uint8Array => {
    const state = pipeline.checkpoint();
    env.transactionSync(() => pipeline.onCheckpointTxn());
    pipeline.afterCheckpoint();
    commit();
    return state;
  };
  try {
    let state: Uint8Array | undefined;
    for (let b = 0; b < batches.length; b++) {
      if (crash && b === crash.at) {
        state = checkpoint();
        for (let k = b; k < Math.min(batches.length, b + crash.lostBatches); k++) process(batches[k]!);
        uncommitted = []; // kill -9: nothing after the checkpoint survives
        pipeline = new ShardPipeline(options);
        pipeline.restore(state);
      }
      process(batches[b]!);
    }
    collect(pipeline.advanceWatermark(Number.MAX_SAFE_INTEGER));
    commit();
  } finally {
    env.close();
  }
  const assignment: Record<string, string | null> = {};
  for (const [id, sid] of [...stamped].sort((a, b) => (a[0] < b[0] ? -1 : 1))) assignment[id] = sid === null ? null : (aliases.get(sid) ?? sid);
  sessions.sort((a, b) => (a.session_start as number) - (b.session_start as number) || ((a.user_id as string) < (b.user_id as string) ? -1 : 1));
  const sessionCounts = Object.fromEntries([...counts].filter(([, n]) => n !== 0).sort((a, b) => (a[0] < b[0] ? -1 : 1)));
  return { sessions, assignment, sessionCounts, duplicates, tooLate };
}

function checkAgainstOracle(events: Ev[], r: Result): void {
  expect(r.tooLate).toBe(0);
  const truth = oracle(events);
  expect(
    r.sessions.map((s) => ({
      user: s.user_id,
      start: s.session_start,
      end: s.session_end,
      count: s.event_count,
      firstScreen: s.first_screen,
      lastScreen: s.last_screen,
      dims: [s.device_type, s.app_version, s.country].join('/'),
    })),
  ).toEqual(truth.map(({ members: _, ...s }) => s));
  // Every event carries its session's id, and the session row names it.
  truth.forEach((t, k) => {
    for (const id of t.members) expect(r.assignment[id]).toBe(r.sessions[k]!.session_id);
  });
  // Hourly and daily session counts: one per session, in the window of its start, under its dimensions.
  const expected = new Map<string, number>();
  for (const t of truth) {
    for (const [g, size] of [
      ['hourly', HOUR],
      ['daily', 24 * HOUR],
    ] as const) {
      const key = `${g}@${t.start - (t.start % size)}@${t.dims}`;
      expected.set(key, (expected.get(key) ?? 0) + 1);
    }
  }
  expect(r.sessionCounts).toEqual(Object.fromEntries([...expected].sort((a, b) => (a[0] < b[0] ? -1 : 1))));
}

describe('sessions do not depend on arrival order (invariant 6)', () => {
  it('any order within the allowed lateness, in any batches, with retries: same sessions, ids, assignment and counts as time order and as the oracle', () => {
    fc.assert(
      fc.property(scenario, (s) => {
        const events = eventsOf(s);
        const inOrder = runEngine([...events].sort((a, b) => a.t - b.t), [1_000]);
        checkAgainstOracle(events, inOrder);
        const shuffled = runEngine(arrivals(events, s), s.batchSizes);
        expect(shuffled.duplicates).toBe(s.dupEvery > 0 ? arrivals(events, s).length - events.length : 0);
        expect({ ...shuffled, duplicates: 0 }).toEqual({ ...inOrder, duplicates: 0 });
      }),
      { numRuns: 60, seed: 20261202 },
    );
  });

  it('a crash at a random point (checkpoint, lost work, restore, replay) gives the same result as none', () => {
    fc.assert(
      fc.property(scenario, fc.nat(20), fc.integer({ min: 0, max: 4 }), (s, at, lost) => {
        const events = eventsOf(s);
        const order = arrivals(events, s);
        const clean = runEngine(order, s.batchSizes);
        const crashed = runEngine(order, s.batchSizes, { at, lostBatches: lost });
        expect(crashed).toEqual(clean);
        checkAgainstOracle(events, crashed);
      }),
      { numRuns: 40, seed: 1202 },
    );
  });
});
