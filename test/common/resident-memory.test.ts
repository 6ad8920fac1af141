import { describe, expect, it } from 'vitest';
import { anonymousResidentBytes } from '../../common/resident-memory.js';

describe('anonymousResidentBytes', () => {
  it('counts heap and buffers, not the file pages that make up the rest of RSS', () => {
    const before = anonymousResidentBytes();
    expect(before).toBeGreaterThan(0);
    // Node's own executable is mapped from a file: part of RSS, not of the anonymous memory.
    expect(before).toBeLessThan(process.memoryUsage.rss());
    const held = Buffer.alloc(64 * 2 ** 20, 1); // touched pages: resident and anonymous
    const after = anonymousResidentBytes();
    expect(after - before).toBeGreaterThan(48 * 2 ** 20);
    expect(held[held.length - 1]).toBe(1);
  });
});
