/**
 * SegmentLogReader: another process's view of a segment log (the engine's), checked against a
 * real SegmentLog writing to the same directory: ranges, segment rolls, the durable bound,
 * truncation, following the head.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SegmentLog } from '../../log/segment-log.js';
import { SegmentLogReader } from '../../log/segment-reader.js';

const root = mkdtempSync(join(tmpdir(), 'sluice-reader-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Record k: 700 + k bytes, each byte (k + i) mod 251. */
const payloadOf = (k: number): Uint8Array => Uint8Array.from({ length: 700 + k }, (_, i) => (k + i) % 251);

async function writer(name: string, records: number): Promise<SegmentLog> {
  const log = await SegmentLog.open({ dir: join(root, name), shard: 0, segmentBytes: 16 * 1024 });
  for (let k = 0; k < records; k++) await log.append(payloadOf(k));
  return log;
}

describe('SegmentLogReader', () => {
  it('reads any range below the durable mark, across segment rolls, in bounded pieces', async () => {
    const log = await writer('ranges', 60);
    const reader = new SegmentLogReader(log.dir);
    const all = await reader.readRange(0, log.durableNextOffset);
    expect(all.map((r) => r.offset)).toEqual(Array.from({ length: 60 }, (_, k) => k));
    all.forEach((r) => expect(r.payload).toEqual(payloadOf(r.offset)));
    // In pieces of at most 7 records, following on.
    const seen: number[] = [];
    for (let from = 0; from < 60; ) {
      const piece = await reader.readRange(from, 60, 7);
      expect(piece.length).toBeGreaterThan(0);
      expect(piece.length).toBeLessThanOrEqual(7);
      seen.push(...piece.map((r) => r.offset));
      from = piece[piece.length - 1]!.offset + 1;
    }
    expect(seen).toEqual(all.map((r) => r.offset));
    // A byte bound stops after the record that reaches it (always at least one record).
    expect((await reader.readRange(10, 60, Infinity, 1)).map((r) => r.offset)).toEqual([10]);
    expect((await reader.readRange(10, 60, Infinity, 1500)).map((r) => r.offset)).toEqual([10, 11, 12]);
    // Backwards, and the `until` bound.
    expect((await reader.readRange(3, 5)).map((r) => r.offset)).toEqual([3, 4]);
    expect(await reader.readRange(5, 5)).toEqual([]);
    await reader.close();
    await log.close();
  });

  it('follows the head while the writer appends, and refuses truncated offsets', async () => {
    const log = await writer('follow', 5);
    const reader = new SegmentLogReader(log.dir);
    let next = 0;
    const got: number[] = [];
    for (let round = 0; round < 10; round++) {
      for (let k = 0; k < 7; k++) await log.append(payloadOf(log.nextOffset));
      const piece = await reader.readRange(next, log.durableNextOffset);
      got.push(...piece.map((r) => r.offset));
      piece.forEach((r) => expect(r.payload).toEqual(payloadOf(r.offset)));
      next = log.durableNextOffset;
    }
    expect(got).toEqual(Array.from({ length: 75 }, (_, k) => k));
    await log.truncateBefore(40);
    await expect(reader.readRange(0, 10)).rejects.toMatchObject({ code: 'log_truncated' });
    expect((await reader.readRange(70, 75)).map((r) => r.offset)).toEqual([70, 71, 72, 73, 74]);
    await reader.close();
    await log.close();
  });
});
