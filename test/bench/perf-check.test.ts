/**
 * The perf check's pure comparison logic (bench/perf-check.ts): medians, paired ratios, the
 * 25 % verdict and baseline validation. No benchmark runs here.
 */
import { describe, expect, it } from 'vitest';
import { formatTable, judge, MAX_SLOWDOWN, median, parseBaseline, summarize, type CaseSummary, type RoundSample, type VerdictStatus } from '../../bench/perf-check.js';
import { SluiceError } from '../../common/errors.js';

const summary = (ratio: number): CaseSummary => ({ name: 'k', rowsPerS: 1e6, refRowsPerS: 1e6 / ratio, ratio, spread: 0, rounds: 5 });

describe('median', () => {
  it.each<[number[], number]>([
    [[3], 3],
    [[5, 1, 3], 3],
    [[4, 1, 3, 2], 2.5],
    [[2, 2, 9, 2, 1], 2],
    [[1e6, 1, 2], 2],
  ])('median(%j) = %d', (xs, want) => {
    expect(median(xs)).toBe(want);
  });

  it('is NaN for no values and does not reorder its input', () => {
    expect(median([])).toBeNaN();
    const xs = [3, 1, 2];
    median(xs);
    expect(xs).toEqual([3, 1, 2]);
  });
});

describe('summarize', () => {
  const r = (caseRowsPerS: number, refRowsPerS: number): RoundSample => ({ caseRowsPerS, refRowsPerS });

  it.each<[string, RoundSample[], { rowsPerS: number; refRowsPerS: number; ratio: number; spread: number }]>([
    ['one round', [r(200, 100)], { rowsPerS: 200, refRowsPerS: 100, ratio: 2, spread: 0 }],
    // The machine slows down by half in round 2: the paired ratio does not move.
    ['machine speed cancels out', [r(200, 100), r(100, 50), r(400, 200)], { rowsPerS: 200, refRowsPerS: 100, ratio: 2, spread: 0 }],
    // One disturbed round (case measured while the machine was busy) does not move the median.
    ['an outlier round is ignored', [r(200, 100), r(50, 100), r(210, 100), r(190, 100), r(200, 100)], { rowsPerS: 200, refRowsPerS: 100, ratio: 2, spread: (2.1 - 0.5) / 2 }],
    // Ratios are paired per round, not median(case) / median(reference).
    ['ratios are paired per round', [r(300, 100), r(300, 300), r(100, 100)], { rowsPerS: 300, refRowsPerS: 100, ratio: 1, spread: 2 }],
  ])('%s', (_, rounds, want) => {
    const s = summarize('k', rounds);
    expect(s.name).toBe('k');
    expect(s.rounds).toBe(rounds.length);
    expect(s.rowsPerS).toBe(want.rowsPerS);
    expect(s.refRowsPerS).toBe(want.refRowsPerS);
    expect(s.ratio).toBeCloseTo(want.ratio, 12);
    expect(s.spread).toBeCloseTo(want.spread, 12);
  });

  it('refuses an empty measurement', () => {
    expect(() => summarize('k', [])).toThrow(/no rounds measured for k/);
  });
});

describe('judge', () => {
  it('fails beyond 25 %', () => expect(MAX_SLOWDOWN).toBe(0.25));

  it.each<[string, number, number | undefined, VerdictStatus, number | null]>([
    ['equal', 2, 2, 'ok', 0],
    ['10 % slower', 1.8, 2, 'ok', -0.1],
    ['exactly 25 % slower passes', 1.5, 2, 'ok', -0.25],
    ['just over 25 % slower fails', 1.4999, 2, 'slower', -0.25005],
    ['half the speed fails', 1, 2, 'slower', -0.5],
    ['20 % faster', 2.4, 2, 'ok', 0.2],
    ['exactly 25 % faster is ok', 2.5, 2, 'ok', 0.25],
    ['more than 25 % faster: suggest --update', 3, 2, 'faster', 0.5],
    ['no baseline entry', 2, undefined, 'new', null],
    ['small ratios (slow case, fast reference)', 0.0074, 0.01, 'slower', -0.26],
  ])('%s', (_, ratio, base, status, change) => {
    const v = judge(summary(ratio), base === undefined ? undefined : { ratio: base, rowsPerS: 1 });
    expect(v.status).toBe(status);
    if (change === null) expect(v.change).toBeNull();
    else expect(v.change).toBeCloseTo(change, 9);
    expect(v.baselineRatio).toBe(base ?? null);
    expect(v.retried).toBe(false);
    expect(v.ratio).toBe(ratio);
  });

  it('takes another threshold and marks re-measured verdicts', () => {
    const v = judge(summary(1.7), { ratio: 2, rowsPerS: 1 }, 0.1, true);
    expect(v.status).toBe('slower');
    expect(v.retried).toBe(true);
  });
});

describe('parseBaseline', () => {
  const good = { version: 1, referenceId: 'ref/v1', referenceRowsPerS: 4e5, machine: 'm', node: 'v20', createdAt: '2026-05-10T00:00:00Z', rounds: 5, timeMs: 500, cases: { a: { ratio: 2, rowsPerS: 8e5 } } };

  it('accepts a valid baseline', () => {
    expect(parseBaseline(JSON.stringify(good), 'ref/v1').cases.a!.ratio).toBe(2);
  });

  it.each<[string, string, RegExp]>([
    ['not JSON', '{', /not valid JSON.*--update/],
    ['wrong version', JSON.stringify({ ...good, version: 2 }), /unknown layout.*--update/],
    ['no cases', JSON.stringify({ ...good, cases: undefined }), /unknown layout/],
    ['a non-positive ratio', JSON.stringify({ ...good, cases: { a: { ratio: 0, rowsPerS: 1 } } }), /entry "a" needs a positive "ratio"/],
    ['a missing ratio', JSON.stringify({ ...good, cases: { a: { rowsPerS: 1 } } }), /entry "a" needs a positive "ratio"/],
    ['another reference', JSON.stringify({ ...good, referenceId: 'ref/v0' }), /reference "ref\/v0".*defines "ref\/v1".*--update/],
  ])('refuses %s with a user error that says what to do', (_, text, message) => {
    let err: unknown;
    try {
      parseBaseline(text, 'ref/v1');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SluiceError);
    expect((err as SluiceError).domain).toBe('user');
    expect((err as SluiceError).message).toMatch(message);
  });
});

describe('formatTable', () => {
  it('prints one aligned line per case with its verdict', () => {
    const text = formatTable([
      judge(summary(2), { ratio: 2, rowsPerS: 1 }),
      judge({ ...summary(1), name: 'storage.parquet-encode', rowsPerS: 812_345 }, { ratio: 2, rowsPerS: 1 }, 0.25, true),
      judge(summary(3), undefined),
    ]);
    const lines = text.split('\n');
    expect(lines).toHaveLength(5);
    expect(lines[0]).toMatch(/^case\s+rows\/s\s+ratio\s+baseline\s+change\s+spread\s+verdict$/);
    expect(lines[2]).toMatch(/^k\s+1\.00 M\s+2\.000\s+2\.000\s+\+0\.0 %\s+±0 %\s+ok$/);
    expect(lines[3]).toMatch(/^storage\.parquet-encode\s+812\.3 k\s+1\.000\s+2\.000\s+-50\.0 %\s+±0 %\s+FAIL: slower \(re-measured\)$/);
    expect(lines[4]).toMatch(/NEW: no baseline$/);
  });
});
