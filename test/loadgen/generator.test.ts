import { describe, expect, it } from 'vitest';
import { generateEvents } from '../../loadgen/generator.js';

const base = { seed: 42, users: 500, startTime: Date.UTC(2026, 2, 1), stepMs: 250 };

describe('traffic generator', () => {
  it('is reproducible: same seed, same events', () => {
    expect(JSON.stringify(generateEvents(base, 2000))).toBe(JSON.stringify(generateEvents(base, 2000)));
    expect(JSON.stringify(generateEvents({ ...base, seed: 43 }, 50))).not.toBe(JSON.stringify(generateEvents(base, 50)));
  });

  it('skews activity towards a few users (zipf)', () => {
    const counts = new Map<string, number>();
    for (const e of generateEvents(base, 20_000)) counts.set(e.message.userId!, (counts.get(e.message.userId!) ?? 0) + 1);
    const sorted = [...counts.values()].sort((a, b) => b - a);
    const top10 = sorted.slice(0, Math.ceil(sorted.length / 10)).reduce((a, b) => a + b, 0);
    expect(top10 / 20_000).toBeGreaterThan(0.3);
  });

  it('separates a user’s sessions by more than the session gap and sizes events realistically', () => {
    const events = generateEvents(base, 20_000);
    const byUser = new Map<string, Array<{ t: number; s: number }>>();
    let bytes = 0;
    for (const e of events) {
      bytes += JSON.stringify(e.message).length;
      const list = byUser.get(e.message.userId!) ?? [];
      list.push({ t: e.eventTime, s: e.sessionNo });
      byUser.set(e.message.userId!, list);
    }
    const avg = bytes / events.length;
    expect(avg).toBeGreaterThan(300);
    expect(avg).toBeLessThan(600);
    for (const list of byUser.values()) {
      for (let i = 1; i < list.length; i++) {
        if (list[i]!.s !== list[i - 1]!.s) expect(list[i]!.t - list[i - 1]!.t).toBeGreaterThanOrEqual(45 * 60_000);
        else expect(list[i]!.t - list[i - 1]!.t).toBeLessThan(45 * 60_000);
      }
    }
    expect(events.some((e) => e.message.event === 'Application Installed')).toBe(true);
    expect(events.some((e) => e.message.type === 'screen' && typeof e.message.name === 'string')).toBe(true);
  });

  it('honours the duplicate, invalid, late and too-late knobs', () => {
    const n = 20_000;
    const events = generateEvents({ ...base, duplicateRate: 0.05, invalidRate: 0.02, lateRate: 0.03, tooLateRate: 0.01 }, n);
    const dup = events.filter((e) => e.kind === 'duplicate').length / n;
    const bad = events.filter((e) => e.kind === 'invalid').length / n;
    expect(dup).toBeGreaterThan(0.04);
    expect(dup).toBeLessThan(0.06);
    expect(bad).toBeGreaterThan(0.015);
    expect(bad).toBeLessThan(0.025);
    const now = (i: number): number => base.startTime + i * base.stepMs;
    const valid = events.map((e, i) => ({ e, i })).filter(({ e }) => e.kind === 'valid');
    const tooLate = valid.filter(({ e, i }) => now(i) - e.eventTime > 3 * 3_600_000).length / valid.length;
    const late = valid.filter(({ e, i }) => now(i) - e.eventTime >= 10 * 60_000 && now(i) - e.eventTime < 2 * 3_600_000).length / valid.length;
    expect(tooLate).toBeGreaterThan(0.005);
    expect(tooLate).toBeLessThan(0.015);
    expect(late).toBeGreaterThan(0.02);
    expect(late).toBeLessThan(0.04);
    // Duplicates repeat a message id that was sent before.
    const seen = new Set<string>();
    for (const e of events) {
      if (e.kind === 'duplicate') expect(seen.has(e.message.messageId)).toBe(true);
      seen.add(e.message.messageId);
    }
  });
});
