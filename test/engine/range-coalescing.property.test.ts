/**
 * The engine processes a range of log records as ONE concatenated batch (ShardRuntime
 * processRecords → processGroup), where it used to process them one record at a time, advancing
 * the watermark after each. The results must not depend on how the log was cut into ranges:
 *
 *   one record at a time:  processBatch(r1) → advance(wm) → processBatch(r2) → advance(wm) → …
 *   a range at a time:     processBatch(concat(r1 … rk), record ends) → advance(wm) → …
 *
 * For random traffic — users whose events come in random disorder, part of it beyond the allowed
 * lateness (too late: the frontier each record sees decides), client retries (duplicates across
 * and within records), screen events — cut into random records and the records into random
 * ranges, both give the same silver rows in the same order (session id stamped, too-late flag),
 * the same closed sessions, the same hourly and daily window partials, the same counts, and the
 * same state afterwards. The reference is the engine's previous processing, so this checks the
 * coalescing, not the operators (their own oracles are in session-order.property.test.ts).
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { open as openLmdb } from 'lmdb';
import { afterAll, describe, expect, it } from 'vitest';
import type { RecordBatch } from 'apache-arrow';
import { concatBatches } from '../../common/arrow-concat.js';
import { readFlatIpc } from '../../common/ipc-read.js';
import { markTooLate, markTooLateByRecord } from '../../engine/kernels/event-time.js';
import { ShardPipeline, type WatermarkOutput } from '../../engine/operators/shard-pipeline.js';
import { IngestBatchBuilder } from '../../ingest/batch-builder.js';
import { ShardRuntime } from '../../engine/shard-runtime.js';
import { openLakeReader } from '../helpers/lake.js';
import { testRuntimeOptions } from '../helpers/shard-runtime.js';

const MIN = 60_000;
const HOUR = 60 * MIN;
const GAP = 30 * MIN;
const LATENESS = 20 * MIN;
const T0 = Date.UTC(2026, 2, 1, 22, 30, 0); // windows and sessions cross midnight
const DEVICES = ['ios', 'android'];
const SCREENS = ['Home', 'Feed', 'Cart'];

interface Ev {
  id: string;
  user: string;
  t: number;
  device: number;
  screen: string | null;
}

const scenario = fc.record({
  /** Per user: start offset, then steps (short, around the gap, long). */
  users: fc.array(
    fc.tuple(
      fc.integer({ min: 0, max: 3 * HOUR }),
      fc.array(fc.tuple(fc.oneof(fc.integer({ min: 0, max: 10 * MIN }), fc.integer({ min: GAP - MIN, max: GAP + MIN }), fc.integer({ min: GAP, max: 2 * HOUR })), fc.nat(1), fc.option(fc.constantFrom(...SCREENS), { nil: null })), {
        minLength: 1,
        maxLength: 12,
      }),
    ),
    { minLength: 1, maxLength: 6 },
  ),
  /** Delivery delays, round-robin: up to 3 × the lateness, so some events are too late. */
  delays: fc.array(fc.oneof(fc.integer({ min: 0, max: LATENESS }), fc.integer({ min: 0, max: 3 * LATENESS })), { minLength: 1, maxLength: 30 }),
  /** Record sizes (events), round-robin. */
  recordSizes: fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 8 }),
  /** Range sizes (records), round-robin. */
  rangeSizes: fc.array(fc.integer({ min: 1, max: 9 }), { minLength: 1, maxLength: 8 }),
  /** Every k-th arrival is re-sent a little later (0: never). */
  dupEvery: fc.nat(4),
});
type Scenario = typeof scenario extends fc.Arbitrary<infer S> ? S : never;

function arrivals(s: Scenario): Ev[] {
  const events: Ev[] = [];
  s.users.forEach(([offset, steps], u) => {
    let t = T0 + offset;
    steps.forEach(([dt, device, screen], k) => {
      t += dt;
      events.push({ id: `e${(k * 7919 + u * 104729) % 1000003}-u${u}-${k}`, user: `user-${u}`, t, device, screen });
    });
  });
  const keyed = events.map((e, k) => ({ e, at: e.t + s.delays[k % s.delays.length]!, k }));
  keyed.sort((a, b) => a.at - b.at || a.k - b.k);
  const order = keyed.map((x) => x.e);
  if (s.dupEvery > 0) for (let k = order.length - 1; k >= 0; k -= s.dupEvery) order.splice(Math.min(order.length, k + 2), 0, order[k]!);
  return order;
}

/** The arrivals as log records: each one IPC stream written by ingest's builder and read back as the engine reads it. */
function records(order: Ev[], sizes: number[]): RecordBatch[] {
  const builder = new IngestBatchBuilder(16);
  const out: RecordBatch[] = [];
  for (let at = 0, k = 0; at < order.length; k++) {
    const n = sizes[k % sizes.length]!;
    builder.reset();
    for (const e of order.slice(at, at + n)) {
      builder.push({
        event_id: e.id,
        user_id: e.user,
        anonymous_id: null,
        event_type: e.screen !== null ? 'screen' : 'Product Clicked',
        event_time: e.t,
        received_at: e.t,
        device_type: DEVICES[e.device]!,
        os: null,
        app_version: '1.0',
        country: 'DE',
        source: 'property',
        properties: e.screen !== null ? JSON.stringify({ name: e.screen }) : null,
        raw: null,
      });
    }
    out.push(...readFlatIpc(builder.toIPC())!.batches);
    at += n;
  }
  return out;
}

interface Outcome {
  silver: string[];
  sessions: string[];
  partials: string[];
  duplicates: number;
  tooLate: number;
  state: string;
  live: string;
}

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Runs the records in ranges of `rangeSizes` records (all 1: the record-at-a-time reference). */
function run(recs: RecordBatch[], rangeSizes: number[]): Outcome {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-coalesce-prop-'));
  dirs.push(dir);
  const env = openLmdb({ path: join(dir, 'state.mdb'), maxDbs: 64, compression: false });
  try {
    const pipeline = new ShardPipeline({ shard: 0, db: env, allowedLatenessMs: LATENESS, sessionGapMs: GAP, dedupTtlMs: 24 * HOUR });
    const o: Outcome = { silver: [], sessions: [], partials: [], duplicates: 0, tooLate: 0, state: '', live: '' };
    const collect = (w: WatermarkOutput): void => {
      for (const r of w.sessions?.toArray() ?? []) o.sessions.push(JSON.stringify(r.toJSON(), (_, v: unknown) => (typeof v === 'bigint' ? Number(v) : v)));
      // Closed sessions' seconds are summed in the order sessions close, which the cut into ranges
      // may change: equal up to float rounding (12 significant digits).
      for (const p of [...w.hourly, ...w.daily]) o.partials.push(JSON.stringify(p, (_, v: unknown) => (typeof v === 'number' && !Number.isInteger(v) ? Number(v.toPrecision(12)) : v)));
    };
    for (let at = 0, k = 0; at < recs.length; k++) {
      const range = recs.slice(at, at + rangeSizes[k % rangeSizes.length]!);
      at += range.length;
      const ends = Int32Array.from(range.map((_, i) => range.slice(0, i + 1).reduce((n, b) => n + b.numRows, 0)));
      const out = range.length === 1 ? pipeline.processBatch(range[0]!) : pipeline.processBatch(concatBatches(range), ends);
      const ids = out.silver.getChild('event_id')!.toArray() as string[];
      const sids = out.silver.getChild('session_id')!.toArray() as Array<string | null>;
      ids.forEach((id, j) => o.silver.push(`${id} ${sids[j]} ${out.tooLate[j]}`));
      o.duplicates += out.duplicates;
      o.tooLate += out.tooLate.reduce((a, b) => a + b, 0);
      const wm = pipeline.localWatermark();
      if (wm.kind === 'event-time') collect(pipeline.advanceWatermark(wm.timeMs));
    }
    o.state = new TextDecoder().decode(pipeline.checkpoint());
    o.live = JSON.stringify(pipeline.live());
    collect(pipeline.advanceWatermark(Number.MAX_SAFE_INTEGER));
    // Rows of one emission come sorted; across emissions the order may differ, so compare as sets.
    o.sessions.sort();
    o.partials.sort();
    return o;
  } finally {
    env.close();
  }
}

describe('a range processed as one batch gives what its records give one at a time', () => {
  it('markTooLateByRecord marks each record against the frontier after the ones before it', () => {
    fc.assert(
      fc.property(fc.array(fc.array(fc.integer({ min: 0, max: 100 }), { maxLength: 5 }), { minLength: 1, maxLength: 6 }), fc.integer({ min: -10, max: 60 }), fc.nat(30), (recs, frontier0, lateness) => {
        // Reference: one record at a time, the frontier raised to max − lateness after each.
        const want: number[] = [];
        let frontier = frontier0;
        let max = -Infinity;
        for (const r of recs) {
          const marks = new Uint8Array(r.length);
          max = Math.max(max, markTooLate(Float64Array.from(r), Int32Array.from(r.keys()), frontier, marks));
          want.push(...marks);
          if (max - lateness > frontier) frontier = max - lateness;
        }
        const all = recs.flat();
        const ends = Int32Array.from(recs.map((_, i) => recs.slice(0, i + 1).reduce((n, r) => n + r.length, 0)));
        const got = new Uint8Array(all.length);
        const r = markTooLateByRecord(Float64Array.from(all), Int32Array.from(all.keys()), ends, frontier0, -Infinity, lateness, got);
        expect([...got]).toEqual(want);
        expect(r).toEqual({ maxEventTimeMs: max, frontierMs: frontier });
      }),
      { numRuns: 300, seed: 41204 },
    );
  });

  it('random disorder (part of it too late), retries and screens, cut into random records and ranges: same silver, sessions, partials and state', () => {
    let sawTooLate = 0;
    let sawRanges = 0;
    fc.assert(
      fc.property(scenario, (s) => {
        const recs = records(arrivals(s), s.recordSizes);
        const reference = run(recs, [1]);
        const ranged = run(recs, s.rangeSizes);
        // Field by field, so a difference is reported short (a deep diff of the whole outcome is huge).
        for (const k of Object.keys(reference) as Array<keyof Outcome>) {
          const [a, b] = [JSON.stringify(ranged[k]), JSON.stringify(reference[k])];
          if (a !== b) {
            let i = 0;
            while (a[i] === b[i]) i++;
            throw new Error(`${k} differs at char ${i}: ranged …${a.slice(Math.max(0, i - 80), i + 80)}… reference …${b.slice(Math.max(0, i - 80), i + 80)}…`);
          }
        }
        if (reference.tooLate > 0) sawTooLate++;
        if (s.rangeSizes.some((n) => n > 1) && recs.length > 1) sawRanges++;
      }),
      { numRuns: 150, seed: 20261204, endOnFailure: true },
    );
    // The generator reaches the cases the coalescing could get wrong.
    expect(sawTooLate).toBeGreaterThan(30);
    expect(sawRanges).toBeGreaterThan(100);
  });
});

describe('ShardRuntime.processRecords coalescing a range, as the lake shows it (DuckDB)', () => {
  /** The same 8 records (one of them not Arrow) through a runtime in ranges of `range` records, then one checkpoint; the lake's rows. */
  async function lakeOf(range: number): Promise<{ bronze: string[]; silver: string[]; dlq: string[] }> {
    const root = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'sluice-coalesce-rt-'));
    dirs.push(root);
    const lake = join(root, 'lake');
    const rt = await ShardRuntime.open(0, testRuntimeOptions(join(root, 'data'), lake, { allowedLatenessMs: LATENESS, sessionGapMs: GAP, dedupTtlMs: 24 * HOUR }));
    const builder = new IngestBatchBuilder(16);
    const payloads: ArrayBuffer[] = [];
    for (let r = 0; r < 8; r++) {
      if (r === 5) {
        payloads.push(new TextEncoder().encode('not an Arrow IPC stream').buffer as ArrayBuffer);
        continue;
      }
      builder.reset();
      for (let i = 0; i < 4; i++) {
        // Record 6 repeats an event of record 1 (a retry); record 7 holds one event far too late.
        const id = r === 6 && i === 0 ? 'e1-0' : `e${r}-${i}`;
        const t = r === 7 && i === 3 ? T0 : T0 + 3 * HOUR + (r * 4 + i) * MIN;
        builder.push({ event_id: id, user_id: `user-${i % 3}`, anonymous_id: null, event_type: 'Product Clicked', event_time: t, received_at: T0 + 3 * HOUR + r * MIN, device_type: DEVICES[i % 2]!, os: null, app_version: '1.0', country: 'DE', source: 'test', properties: null, raw: null });
      }
      payloads.push(builder.toIPC().slice().buffer);
    }
    const offsets = payloads.map((_, k) => k);
    let quarantined = 0;
    for (let at = 0; at < offsets.length; at += range) quarantined += rt.processRecords(offsets.slice(at, at + range), payloads.slice(at, at + range)).quarantined.length;
    expect(quarantined).toBe(1);
    await rt.close();
    const reader = await openLakeReader(lake);
    try {
      const rows = async (sql: string): Promise<string[]> => (await reader.rows<Record<string, unknown>>(sql)).map((x) => JSON.stringify(x, (_, v: unknown) => (typeof v === 'bigint' ? Number(v) : v))).sort();
      return {
        bronze: await rows(`SELECT event_id, log_offset, shard FROM ${reader.rel('bronze_events')}`),
        silver: await rows(`SELECT event_id, session_id FROM ${reader.rel('events')}`),
        dlq: await rows(`SELECT code, source FROM ${reader.rel('dlq')}`),
      };
    } finally {
      reader.close();
    }
  }

  it('every row keeps its own record\'s log offset in bronze; silver, dedup, the late event and the quarantined record are as one record at a time gives them', async () => {
    const one = await lakeOf(1);
    const ranged = await lakeOf(8);
    expect(ranged).toEqual(one);
    // Bronze: 7 records × 4 events, each with the offset of the record that carried it.
    expect(one.bronze).toHaveLength(28);
    for (const row of one.bronze) {
      const { event_id, log_offset } = JSON.parse(row) as { event_id: string; log_offset: number };
      const r = Number(/^e(\d+)-/.exec(event_id)![1]);
      expect([r, 6]).toContain(log_offset); // the retried e1-0 also came in record 6
    }
    expect(one.silver).toHaveLength(27); // the retry dropped
    expect(one.dlq).toEqual([JSON.stringify({ code: 'undecodable_record', source: 'engine' })]);
  }, 60_000);
});
