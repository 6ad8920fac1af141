/**
 * FailureEpisodes and error classification: exponential backoff, one log line per episode (not
 * per retry), readiness set while failing and cleared on recovery, stop is sticky; ENOSPC and
 * LMDB's errno 28 are `disk_full`, other I/O is retryable, a bug is not.
 */
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { classifyError, externalError, isDiskFull, userError } from '../../common/errors.js';
import { backoffMs, FailureEpisodes } from '../../engine/failure-episodes.js';
import { readiness } from '../../ingest/metrics.js';

describe('backoffMs', () => {
  const cases: Array<[n: number, ms: number]> = [[0, 0], [1, 100], [2, 200], [3, 400], [6, 3_200], [7, 5_000], [60, 5_000]];
  for (const [n, ms] of cases) it(`failure ${n} → ${ms} ms`, () => expect(backoffMs(n, 100, 5_000)).toBe(ms));
});

describe('classifyError', () => {
  const errno = (code: string | number, message = 'x'): Error => Object.assign(new Error(message), { code });
  const cases: Array<[string, unknown, string, string]> = [
    ['ENOSPC', errno('ENOSPC', 'ENOSPC: no space left on device, write'), 'disk_full', 'backoff'],
    ['LMDB errno 28', errno(28, 'No space left on device: Attempting to write page'), 'disk_full', 'backoff'],
    ['EIO', errno('EIO', 'EIO: i/o error'), 'io_failed', 'backoff'],
    ['LMDB commit', new Error('Commit failed (see commitError for details)'), 'io_failed', 'backoff'],
    ['a bug', new TypeError('x is undefined'), 'unexpected_error', 'none'],
    ['a SluiceError as is', userError('unexpected_schema', 'y'), 'unexpected_schema', 'none'],
  ];
  for (const [name, err, code, retry] of cases) {
    it(name, () => {
      const e = classifyError(err);
      expect([e.code, e.retry]).toEqual([code, retry]);
    });
  }
  it('isDiskFull looks through the cause chain', () => {
    expect(isDiskFull(externalError('log_fsync_failed', 'write failed', errno('ENOSPC')))).toBe(true);
    expect(isDiskFull(externalError('log_fsync_failed', 'write failed', errno('EIO')))).toBe(false);
  });
});

describe('FailureEpisodes', () => {
  it('backs off, logs once per episode, reports readiness until it recovers; stop is sticky', () => {
    const lines: Array<{ msg: string }> = [];
    const log = pino({ level: 'info' }, new Writable({ write: (c: Buffer, _e, done) => (lines.push(JSON.parse(c.toString()) as { msg: string }), done()) }));
    let now = 1_000;
    const failedCodes: string[] = [];
    const states: number[] = [];
    const ep = new FailureEpisodes({ log, what: 'checkpoint', readinessPrefix: 'unit#1:', baseMs: 100, maxMs: 1_000, now: () => now, onAttemptFailed: (_t, c) => failedCodes.push(c), onStateChanged: (_t, n) => states.push(n) });
    const enospc = Object.assign(new Error('no space'), { code: 'ENOSPC' });
    expect([ep.failed('shard-1', enospc), ep.failed('shard-1', enospc), ep.failed('shard-1', enospc)]).toEqual([100, 200, 400]);
    expect(ep.waiting('shard-1')).toBe(true);
    now += 400;
    expect(ep.waiting('shard-1')).toBe(false);
    expect(failedCodes).toEqual(['disk_full', 'disk_full', 'disk_full']);
    expect(lines.filter((l) => l.msg.includes('failing'))).toHaveLength(1);
    expect(readiness.reasons().some((r) => r.includes('checkpoint of shard-1 failing') && r.includes('3 attempts'))).toBe(true);
    ep.succeeded('shard-1');
    expect(lines.filter((l) => l.msg.includes('recovered after 3'))).toHaveLength(1);
    expect(readiness.reasons().some((r) => r.includes('shard-1'))).toBe(false);
    expect(states).toEqual([1, 2, 3, 0]);

    ep.stop('shard-2', new TypeError('bug'));
    ep.succeeded('shard-2');
    expect(ep.isStopped('shard-2')).toBe(true);
    expect(readiness.reasons().some((r) => r.includes('shard-2 stopped'))).toBe(true);
    ep.clear();
    expect(readiness.reasons().some((r) => r.startsWith('shard-2'))).toBe(false);
  });
});
