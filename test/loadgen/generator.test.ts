import { describe, expect, it } from 'vitest';
import { FUTURE_MS, TrafficGenerator, generateEvents, type GeneratedEvent, type GeneratorOptions } from '../../loadgen/generator.js';
import { MinHeap } from '../../loadgen/min-heap.js';
import { Random } from '../../loadgen/random.js';
import { ZipfPicker } from '../../loadgen/zipf-picker.js';

const MIN = 60_000;
const HOUR = 60 * MIN;
const base: GeneratorOptions = { seed: 42, users: 2000, startTime: Date.UTC(2026, 2, 1), stepMs: 250 };
const knobs = { duplicateRate: 0.05, invalidRate: 0.02, lateRate: 0.03, tooLateRate: 0.01, jitterMs: 20_000 };

/** Valid events per user, in event time. */
function timelines(events: GeneratedEvent[]): Map<string, GeneratedEvent[]> {
  const byUser = new Map<string, GeneratedEvent[]>();
  for (const e of events) {
    if (e.kind !== 'valid') continue;
    const list = byUser.get(e.userId) ?? [];
    list.push(e);
    byUser.set(e.userId, list);
  }
  for (const list of byUser.values()) list.sort((a, b) => a.eventTime - b.eventTime || a.sessionNo - b.sessionNo);
  return byUser;
}

/**
 * Checks, per user in event time: same session ⇒ < gap apart; another session ⇒ > gap apart;
 * a session's events are contiguous in time (its number never comes back later).
 */
function expectSessionInvariants(events: GeneratedEvent[], gapMs: number): { inSessionGaps: number[]; sessions: number } {
  const inSessionGaps: number[] = [];
  let sessions = 0;
  for (const list of timelines(events).values()) {
    sessions++;
    const done = new Set<number>();
    for (let i = 1; i < list.length; i++) {
      const a = list[i - 1]!;
      const b = list[i]!;
      const d = b.eventTime - a.eventTime;
      if (b.sessionNo === a.sessionNo) {
        expect(d).toBeLessThan(gapMs);
        inSessionGaps.push(d);
      } else {
        done.add(a.sessionNo);
        expect(done.has(b.sessionNo)).toBe(false);
        expect(d).toBeGreaterThan(gapMs);
        sessions++;
      }
    }
  }
  return { inSessionGaps, sessions };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

describe('traffic generator', () => {
  it('is reproducible: same seed, same events; another seed, other events', () => {
    const opts = { ...base, ...knobs };
    expect(JSON.stringify(generateEvents(opts, 5000))).toBe(JSON.stringify(generateEvents(opts, 5000)));
    expect(JSON.stringify(generateEvents({ ...opts, seed: 43 }, 50))).not.toBe(JSON.stringify(generateEvents(opts, 50)));
  });

  it('partitions own users u ≡ k (mod W) and a user looks the same in any partitioning', () => {
    const whole = generateEvents({ ...base, users: 100 }, 4000);
    const traits = (e: GeneratedEvent): string => JSON.stringify([e.message.context.device, e.message.context.os, e.message.context.app, e.message.context.location, e.message.context.locale]);
    const byUser = new Map(whole.filter((e) => e.kind === 'valid').map((e) => [e.userId, traits(e)]));
    for (const k of [0, 1, 2]) {
      const part = generateEvents({ ...base, users: 100, partition: k, partitions: 3 }, 2000);
      for (const e of part) {
        expect(Number(/\d+$/.exec(e.userId)![0]) % 3).toBe(k);
        if (byUser.has(e.userId)) expect(traits(e)).toBe(byUser.get(e.userId));
      }
    }
    const ids = [0, 1].flatMap((k) => generateEvents({ ...base, partition: k, partitions: 2 }, 1000).map((e) => e.message.messageId));
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('skews activity towards a few users (zipf)', () => {
    const events = generateEvents({ ...base, users: 5000, stepMs: 1000 }, 40_000);
    const counts = new Map<string, number>();
    for (const e of events) counts.set(e.userId, (counts.get(e.userId) ?? 0) + 1);
    const sorted = [...counts.values()].sort((a, b) => b - a);
    const top = sorted.slice(0, 500).reduce((a, b) => a + b, 0);
    // The top 10 % of the users (500 of 5000) send far more than 10 % of the events.
    expect(top / events.length).toBeGreaterThan(0.3);
    // And the heaviest users come back for several sessions.
    const sessions = new Map<string, number>();
    for (const e of events) sessions.set(e.userId, Math.max(sessions.get(e.userId) ?? 0, e.sessionNo));
    expect(Math.max(...sessions.values())).toBeGreaterThan(3);
  });

  it('keeps every user’s sessions > gap apart and events within a session seconds–minutes apart, with every knob on', () => {
    for (const gap of [30 * MIN, 10 * MIN]) {
      const events = generateEvents({ ...base, ...knobs, sessionGapMs: gap }, 30_000);
      const { inSessionGaps, sessions } = expectSessionInvariants(events, gap);
      expect(sessions).toBeGreaterThan(1000);
      const m = median(inSessionGaps);
      expect(m).toBeGreaterThanOrEqual(1000);
      expect(m).toBeLessThanOrEqual(5 * MIN);
    }
  });

  it('keeps the session invariants when the users are far too few for the rate (gaps shrink instead)', () => {
    const g = new TrafficGenerator({ ...base, ...knobs, users: 20, stepMs: 5 });
    const events = Array.from({ length: 20_000 }, () => g.next());
    expectSessionInvariants(events, 30 * MIN);
    expect(g.stats.compressed + g.stats.extended).toBeGreaterThan(0);
    // Event time still follows the stepped clock (no runaway into the future).
    const last = Math.max(...events.map((e) => e.eventTime));
    expect(last).toBeLessThanOrEqual(base.startTime + 20_000 * 5);
  });

  it('starts new users with an install and sizes events like real SDK payloads (300–600 B)', () => {
    const events = generateEvents({ ...base, ...knobs }, 20_000);
    let bytes = 0;
    for (const e of events) bytes += Buffer.byteLength(JSON.stringify(e.message));
    const avg = bytes / events.length;
    expect(avg).toBeGreaterThan(300);
    expect(avg).toBeLessThan(600);
    const types = new Set(events.map((e) => e.eventType));
    for (const t of ['Application Installed', 'Application Opened', 'screen', 'Button Clicked', 'Swipe', 'Push Notification Received', 'Push Notification Tapped', 'Order Completed']) expect(types).toContain(t);
    for (const e of events) if (e.eventType === 'screen' && e.kind !== 'invalid') expect(typeof e.message.name).toBe('string');
    // An install is the first event of a user's first session, once.
    for (const list of timelines(events).values()) {
      const installs = list.filter((e) => e.eventType === 'Application Installed');
      expect(installs.length).toBeLessThanOrEqual(1);
      if (installs.length === 1) {
        expect(installs[0]!.sessionNo).toBe(1);
        expect(list[0]).toBe(installs[0]);
      }
    }
    const devices = new Set(events.map((e) => e.message.context.device.type));
    expect(devices).toEqual(new Set(['ios', 'android', 'web']));
  });

  it('honours the duplicate, invalid, late, too-late and out-of-order knobs', () => {
    const n = 40_000;
    const events = generateEvents({ ...base, ...knobs }, n);
    const share = (f: (e: GeneratedEvent) => boolean): number => events.filter(f).length / n;
    const within = (x: number, want: number): void => {
      expect(x).toBeGreaterThan(want * 0.75);
      expect(x).toBeLessThan(want * 1.25);
    };
    within(share((e) => e.kind === 'duplicate'), knobs.duplicateRate);
    within(share((e) => e.kind === 'invalid'), knobs.invalidRate);
    within(share((e) => e.kind === 'valid' && e.lateness === 'late'), knobs.lateRate);
    within(share((e) => e.kind === 'valid' && e.lateness === 'too_late'), knobs.tooLateRate);
    // Duplicates repeat, unchanged, a message sent before.
    const seen = new Map<string, GeneratedEvent>();
    for (const e of events) {
      if (e.kind === 'duplicate') expect(seen.get(e.message.messageId)!.message).toBe(e.message);
      else expect(seen.has(e.message.messageId)).toBe(false);
      seen.set(e.message.messageId, e);
    }
    // Lateness relative to the send position (the stepped clock of the call).
    events.forEach((e, i) => {
      const behind = base.startTime + i * base.stepMs - e.eventTime;
      if (e.kind !== 'valid') return;
      if (e.lateness === 'late') {
        expect(behind).toBeGreaterThanOrEqual(10 * MIN);
        expect(behind).toBeLessThan(2 * HOUR);
      } else if (e.lateness === 'too_late') expect(behind).toBeGreaterThan(3 * HOUR - MIN);
      else expect(behind).toBeLessThan(10 * MIN);
    });
    // Out of order: some on-time events arrive after a later one of the same stream.
    let inversions = 0;
    let maxSoFar = -Infinity;
    for (const e of events) {
      if (e.kind !== 'valid' || e.lateness !== 'on_time') continue;
      if (e.eventTime < maxSoFar) inversions++;
      maxSoFar = Math.max(maxSoFar, e.eventTime);
    }
    expect(inversions).toBeGreaterThan(0);
    // Each invalid event breaks the rule it says it breaks.
    const invalid = events.filter((e) => e.kind === 'invalid');
    expect(new Set(invalid.map((e) => e.invalid))).toEqual(new Set(['missing_user', 'bad_timestamp', 'future_timestamp', 'missing_event']));
    for (const e of invalid) {
      const m = e.message;
      if (e.invalid === 'missing_user') expect(m.userId ?? m.anonymousId).toBeUndefined();
      if (e.invalid === 'bad_timestamp') expect(Number.isNaN(Date.parse(m.timestamp))).toBe(true);
      if (e.invalid === 'future_timestamp') expect(Date.parse(m.timestamp) - e.eventTime).toBe(FUTURE_MS);
      if (e.invalid === 'missing_event') expect(m.event).toBeUndefined();
    }
  });

  it('clock skew moves timestamps by the skew and leaves the true event time alone', () => {
    const a = generateEvents({ ...base, clockSkewMs: 90_000 }, 500);
    const b = generateEvents(base, 500);
    a.forEach((e, i) => {
      expect(e.eventTime).toBe(b[i]!.eventTime);
      expect(Date.parse(e.message.timestamp) - e.eventTime).toBe(90_000);
    });
  });

  it('rejects bad options with messages that name them', () => {
    expect(() => new TrafficGenerator({ ...base, users: 1, partitions: 2 })).toThrow(/users must be an integer ≥ partitions/);
    expect(() => new TrafficGenerator({ ...base, duplicateRate: 1 })).toThrow(/duplicateRate must be in \[0, 1\)/);
    expect(() => new TrafficGenerator({ ...base, sessionGapMs: 1000 })).toThrow(/sessionGapMs must be ≥ 60000/);
  });
});

describe('generator building blocks', () => {
  it('MinHeap pops in key order', () => {
    const r = new Random(7);
    const h = new MinHeap(2);
    const keys = Array.from({ length: 1000 }, () => r.next());
    keys.forEach((k, i) => h.push(k, i));
    const out: number[] = [];
    while (h.size > 0) out.push(keys[h.pop()]!);
    expect(out).toEqual([...keys].sort((a, b) => a - b));
  });

  it('ZipfPicker draws enabled indices in proportion to 1/(rank+1)^s', () => {
    const z = new ZipfPicker(100, 1);
    const r = new Random(3);
    z.set(0, false);
    const counts = new Array<number>(100).fill(0);
    for (let i = 0; i < 200_000; i++) counts[z.pick(r.next())]!++;
    expect(counts[0]).toBe(0);
    // rank 1 (weight 1/2) vs rank 3 (weight 1/4): about twice as often.
    expect(counts[1]! / counts[3]!).toBeGreaterThan(1.8);
    expect(counts[1]! / counts[3]!).toBeLessThan(2.2);
    for (let i = 0; i < 100; i++) z.set(i, false);
    expect(z.pick(0.5)).toBe(-1);
    z.set(42, true);
    expect(z.pick(0.99)).toBe(42);
  });
});
