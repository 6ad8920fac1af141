import { describe, expect, it } from 'vitest';
import { formatDuration, parseBytes, parseDuration } from '../../common/duration.js';
import { murmur3String, shardOfUser } from '../../common/hash.js';
import { partKey, partitionOf, partitionTimeOfKey, partName } from '../../common/lake-layout.js';

describe('parseDuration', () => {
  it.each([
    ['250ms', 250],
    ['10s', 10_000],
    ['30m', 1_800_000],
    ['2h', 7_200_000],
    ['7d', 604_800_000],
    ['1h30m', 5_400_000],
    ['1500', 1500],
  ])('%s → %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
    expect(parseDuration(formatDuration(ms))).toBe(ms);
  });

  it.each(['', '10x', 'h', '10s junk', '-5s'])('rejects %j with a message saying what is expected', (text) => {
    expect(() => parseDuration(text, '--flush-interval')).toThrow(/--flush-interval must look like 500ms, 10s, 30m, 2h or 7d/);
  });
});

describe('parseBytes', () => {
  it.each([
    ['128MiB', 128 * 1024 * 1024],
    ['512KiB', 512 * 1024],
    ['1GB', 1e9],
    ['42', 42],
  ])('%s → %d', (text, n) => expect(parseBytes(text)).toBe(n));
  it('rejects garbage', () => expect(() => parseBytes('lots')).toThrow(/must look like/));
});

describe('murmur3', () => {
  it('matches the reference MurmurHash3_x86_32 vectors', () => {
    expect(murmur3String('')).toBe(0);
    expect(murmur3String('hello')).toBe(0x248bfa47);
    expect(murmur3String('', 1)).toBe(0x514e28b7);
    expect(murmur3String('The quick brown fox jumps over the lazy dog')).toBe(0x2e4ff723);
  });
  it('spreads users over shards', () => {
    const counts = new Array(8).fill(0);
    for (let i = 0; i < 8000; i++) counts[shardOfUser(`user-${i}`, 8)]++;
    for (const c of counts) expect(c).toBeGreaterThan(800);
  });
});

describe('lake layout', () => {
  const t = Date.UTC(2026, 2, 7, 5, 30);
  it('builds Hive partitions in UTC', () => {
    expect(partitionOf(t, 'hour')).toBe('year=2026/month=03/day=07/hour=05');
    expect(partitionOf(t, 'day')).toBe('year=2026/month=03/day=07');
    expect(partKey('events', t, partName(3, 10, 12))).toBe('silver/events/year=2026/month=03/day=07/hour=05/part-s3-10-12.parquet');
    expect(partKey('sessions', t, partName(0, 1, 1))).toBe('gold/sessions/year=2026/month=03/day=07/part-s0-1-1.parquet');
  });
  it('parses partitions back', () => {
    expect(partitionTimeOfKey('silver/events/year=2026/month=03/day=07/hour=05/x.parquet')).toBe(Date.UTC(2026, 2, 7, 5));
    expect(partitionTimeOfKey('gold/sessions/year=2026/month=03/day=07/x.parquet')).toBe(Date.UTC(2026, 2, 7));
    expect(partitionTimeOfKey('nothing')).toBeUndefined();
  });
});
