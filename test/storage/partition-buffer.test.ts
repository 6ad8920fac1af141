/**
 * The rolling policy, table-driven over an injected clock: a group is due by size or by the age
 * of its first row, never per row; rows are split by their partition; nothing is lost.
 */
import { describe, expect, it } from 'vitest';
import { Table } from 'apache-arrow';
import { arrowBytes, PartitionBuffer, validatePartitionBufferOptions, type PartitionBufferOptions } from '../../storage/partition-buffer.js';
import { silverRows } from './silver-rows.js';

const H = 3_600_000;
const T0 = Date.UTC(2026, 4, 10, 9);
/** One batch of `rows` rows, all inside the hour starting at `hourStart`. */
const batch = (rows: number, hourStart = T0, seed = 1) => silverRows({ rows, seed, startMs: hourStart, spanMs: H / 2, batchRows: rows })[0]!;

describe('PartitionBuffer', () => {
  it('pins option validation messages', () => {
    const cases: Array<[PartitionBufferOptions, string]> = [
      [{ targetBytes: 0 }, 'partition buffer targetBytes must be a positive number of bytes, got 0'],
      [{ flushIntervalMs: -1 }, 'partition buffer flushIntervalMs must be a non-negative number of ms, got -1'],
      [{ encodedRatio: Number.NaN }, 'partition buffer encodedRatio must be a positive number, got NaN'],
    ];
    for (const [o, message] of cases) expect(() => validatePartitionBufferOptions(o)).toThrow(message);
    expect(validatePartitionBufferOptions()).toEqual({ targetBytes: 128 * 1024 * 1024, flushIntervalMs: 10_000, encodedRatio: 0.2 });
  });

  // Each case: adds (at time t, rows into hour h), then takeDue at `at` → which hours come out.
  const cases: Array<{ name: string; options: PartitionBufferOptions; adds: Array<[t: number, rows: number, hour: number]>; at: number; force?: boolean; due: number[] }> = [
    { name: 'nothing is due before the interval', options: { flushIntervalMs: 10_000 }, adds: [[0, 10, T0]], at: 9_999, due: [] },
    { name: 'a group is due when its FIRST row has waited the interval', options: { flushIntervalMs: 10_000 }, adds: [[0, 10, T0], [9_000, 10, T0]], at: 10_000, due: [T0] },
    { name: 'groups age independently', options: { flushIntervalMs: 10_000 }, adds: [[0, 10, T0], [5_000, 10, T0 - H]], at: 12_000, due: [T0] },
    { name: 'size makes a group due at once', options: { flushIntervalMs: 60_000, targetBytes: 1_000, encodedRatio: 1 }, adds: [[0, 50, T0], [0, 1, T0 - H]], at: 1, due: [T0] },
    { name: 'force takes everything, ordered by partition', options: {}, adds: [[0, 1, T0], [0, 1, T0 - 2 * H]], at: 0, force: true, due: [T0 - 2 * H, T0] },
  ];
  it.each(cases)('$name', ({ options, adds, at, force, due }) => {
    const buffer = new PartitionBuffer(options);
    adds.forEach(([t, rows, hour], i) => buffer.add('events', hour, batch(rows, hour, i + 1), t, i));
    expect(buffer.takeDue(at, { force }).map((g) => g.partitionStartMs)).toEqual(due);
  });

  it('splits a batch by the partition of its time column, keeping every row once', () => {
    const rows = silverRows({ rows: 5_000, seed: 4, startMs: T0, spanMs: 3 * H, batchRows: 5_000 })[0]!;
    const buffer = new PartitionBuffer();
    buffer.addByTime('events', rows, 'event_time', 0, 7);
    const groups = buffer.takeDue(0, { force: true });
    expect(groups.map((g) => g.partitionStartMs)).toEqual([T0, T0 + H, T0 + 2 * H]);
    expect(groups.reduce((n, g) => n + g.rows, 0)).toBe(5_000);
    for (const g of groups) {
      const t = new Table(g.batches);
      const times = t.getChild('event_time')!.toArray() as BigInt64Array;
      for (const ms of times) expect(Math.floor(Number(ms) / H) * H).toBe(g.partitionStartMs);
      expect([g.minOffset, g.maxOffset]).toEqual([7, 7]);
    }
    const ids = new Set(groups.flatMap((g) => new Table(g.batches).getChild('event_id')!.toArray() as string[]));
    expect(ids.size).toBe(5_000);
    expect(buffer.stats()).toEqual({ groups: 0, rows: 0, arrowBytes: 0, estimatedBytes: 0 });
  });

  it('adds a batch within one partition without copying it', () => {
    const b = batch(100);
    const buffer = new PartitionBuffer();
    buffer.addByTime('events', b, 'event_time', 0);
    expect(buffer.takeDue(0, { force: true })[0]!.batches[0]).toBe(b);
  });

  it('reports totals, the next due time and the smallest buffered offset', () => {
    const buffer = new PartitionBuffer({ flushIntervalMs: 10_000 });
    expect(buffer.nextDueMs()).toBeUndefined();
    const a = batch(10, T0, 1);
    const b = batch(20, T0 - H, 2);
    buffer.add('events', T0, a, 1_000, 5);
    buffer.add('bronze_events', T0 - H, b, 3_000, 3);
    expect(buffer.nextDueMs()).toBe(11_000);
    expect(buffer.minBufferedOffset()).toBe(3);
    expect(buffer.stats()).toMatchObject({ groups: 2, rows: 30, arrowBytes: arrowBytes(a.data) + arrowBytes(b.data) });
    const [due] = buffer.takeDue(12_000);
    expect(due!.table).toBe('events');
    expect(buffer.minBufferedOffset()).toBe(3);
    expect(buffer.stats().rows).toBe(20);
  });
});
