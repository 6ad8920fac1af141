/** niceAtLeast (common/nice.ts) on the calling thread, read back from the OS. */
import { getPriority, setPriority } from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import { niceAtLeast } from '../../common/nice.js';

describe('niceAtLeast', () => {
  const own = getPriority();
  afterEach(() => {
    // Back to where the thread was (lowering niceness again needs privilege).
    try {
      setPriority(own);
    } catch {
      // unprivileged: the thread stays a little nicer
    }
  });

  it('makes a thread nicer when asked for more, and never less nice when asked for less', () => {
    expect(niceAtLeast(own + 2)).toBe(own + 2);
    expect(getPriority()).toBe(own + 2);
    expect(niceAtLeast(own + 1)).toBe(own + 2);
    expect(getPriority()).toBe(own + 2);
    expect(niceAtLeast(own + 2)).toBe(own + 2);
  });
});
