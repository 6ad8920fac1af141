/**
 * RemoteLog, the engine process's view of a shard log, over a real SegmentLog writing the files:
 * a range that stops mid-chunk leaves the rest of the chunk for the next range, which starts there
 * (no second read of the same records), and any other start is served from the files as before.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { RemoteLog } from '../../engine/remote-log.js';
import { SegmentLog } from '../../log/segment-log.js';
import { SegmentLogReader } from '../../log/segment-reader.js';

const root = mkdtempSync(join(tmpdir(), 'sluice-remote-log-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Record k: 300 + k bytes, each byte (k + i) mod 251. */
const payloadOf = (k: number): Uint8Array => Uint8Array.from({ length: 300 + k }, (_, i) => (k + i) % 251);

/** The first `n` records a read from `from` yields (then the consumer stops, as a range does). */
async function take(log: RemoteLog, from: number, n: number): Promise<number[]> {
  const got: number[] = [];
  if (n === 0) return got;
  for await (const r of log.read(from)) {
    expect(r.payload).toEqual(payloadOf(r.offset));
    got.push(r.offset);
    if (got.length === n) break;
  }
  return got;
}

describe('RemoteLog', () => {
  it('serves consecutive ranges from one read of the files, and any other start from the files again', async () => {
    const writer = await SegmentLog.open({ dir: join(root, 'shard'), shard: 0, segmentBytes: 8 * 1024 });
    for (let k = 0; k < 40; k++) await writer.append(payloadOf(k));
    const log = new RemoteLog(writer.dir, writer.durableNextOffset, () => undefined);
    const reads = vi.spyOn(SegmentLogReader.prototype, 'readRange');
    try {
      expect(await take(log, 0, 3)).toEqual([0, 1, 2]);
      expect(reads).toHaveBeenCalledTimes(1);
      // Ranges that follow on: the records the first read fetched beyond the range, not the files.
      expect(await take(log, 3, 4)).toEqual([3, 4, 5, 6]);
      expect(await take(log, 7, 5)).toEqual([7, 8, 9, 10, 11]);
      expect(reads).toHaveBeenCalledTimes(1);
      // A start further on skips what lies before it; one back (a replay) reads the files again.
      expect(await take(log, 15, 2)).toEqual([15, 16]);
      expect(reads).toHaveBeenCalledTimes(1);
      expect(await take(log, 5, 3)).toEqual([5, 6, 7]);
      expect(reads).toHaveBeenCalledTimes(2);
      // To the end: everything below the durable mark once, then nothing more.
      const rest: number[] = [];
      for await (const r of log.read(8)) rest.push(r.offset);
      expect(rest).toEqual(Array.from({ length: 32 }, (_, i) => 8 + i));
      expect(await take(log, 40, 1)).toEqual([]);
      // Records made durable later are read from the files once the mark moves.
      for (let k = 40; k < 45; k++) await writer.append(payloadOf(k));
      log.durableNextOffset = writer.durableNextOffset;
      expect(await take(log, 40, 5)).toEqual([40, 41, 42, 43, 44]);
    } finally {
      reads.mockRestore();
      await log.close();
      await writer.close();
    }
  });

  it('ends a read that a newer read took over: the older one yields nothing of the newer one', async () => {
    const writer = await SegmentLog.open({ dir: join(root, 'two'), shard: 0, segmentBytes: 8 * 1024 });
    for (let k = 0; k < 10; k++) await writer.append(payloadOf(k));
    const log = new RemoteLog(writer.dir, writer.durableNextOffset, () => undefined);
    try {
      const old = log.read(0);
      expect((await old.next()).value?.offset).toBe(0);
      expect(await take(log, 1, 2)).toEqual([1, 2]);
      expect((await old.next()).done).toBe(true);
      expect(await take(log, 3, 2)).toEqual([3, 4]);
    } finally {
      await log.close();
      await writer.close();
    }
  });
});
