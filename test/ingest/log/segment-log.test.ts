import { appendFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { fdatasyncSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SegmentLog } from '../../../ingest/log/segment-log.js';

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'sluice-log-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const payload = (i: number, size = 32): Uint8Array => new Uint8Array(size).fill(i % 251);

async function readAll(log: SegmentLog, from = 0): Promise<Array<{ offset: number; payload: Uint8Array }>> {
  const out = [];
  for await (const r of log.read(from)) out.push(r);
  return out;
}

describe('SegmentLog', () => {
  it('appends, reads back and keeps offsets dense across reopen', async () => {
    const dir = tempDir();
    let log = await SegmentLog.open({ dir, shard: 0 });
    for (let i = 0; i < 5; i++) expect(await log.append(payload(i))).toBe(i);
    await log.close();
    log = await SegmentLog.open({ dir, shard: 0 });
    expect(log.nextOffset).toBe(5);
    expect(await log.append(payload(5))).toBe(5);
    const all = await readAll(log);
    expect(all.map((r) => r.offset)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(all.map((r) => r.payload[0])).toEqual([0, 1, 2, 3, 4, 5]);
    expect((await readAll(log, 3)).map((r) => r.offset)).toEqual([3, 4, 5]);
    await log.close();
  });

  it('group-commits concurrent appends: distinct dense offsets, fewer fsyncs than appends', async () => {
    let fsyncs = 0;
    const log = await SegmentLog.open({
      dir: tempDir(),
      shard: 0,
      fsync: async (fd) => {
        fsyncs++;
        fdatasyncSync(fd);
      },
    });
    const offsets = await Promise.all(Array.from({ length: 1000 }, (_, i) => log.append(payload(i))));
    expect([...offsets].sort((a, b) => a - b)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    expect(fsyncs).toBeGreaterThan(0);
    expect(fsyncs).toBeLessThan(1000);
    await log.close();
  });

  it('rolls segments, truncates whole segments below an offset, and stays monotonic after reopen', async () => {
    const dir = tempDir();
    let log = await SegmentLog.open({ dir, shard: 0, segmentBytes: 4096 });
    for (let i = 0; i < 40; i++) await log.append(payload(i, 1000));
    expect(readdirSync(dir).filter((f) => f.endsWith('.seg')).length).toBeGreaterThan(5);
    await log.truncateBefore(30);
    expect((await readAll(log, 0))[0]!.offset).toBeGreaterThan(20);
    expect((await readAll(log, 30)).map((r) => r.offset)).toEqual([30, 31, 32, 33, 34, 35, 36, 37, 38, 39]);
    await log.truncateBefore(40);
    await log.close();
    log = await SegmentLog.open({ dir, shard: 0, segmentBytes: 4096 });
    expect(log.nextOffset).toBe(40);
    expect(await log.append(payload(40))).toBe(40);
    await log.close();
  });

  const tears: Array<[string, (file: string, size: number) => void]> = [
    ['inside the length', (f, size) => truncateSync(f, size - 64 - 14)],
    ['inside the header', (f, size) => truncateSync(f, size - 64 - 6)],
    ['inside the payload', (f, size) => truncateSync(f, size - 10)],
    [
      'a flipped payload byte',
      (f) => {
        const b = readFileSync(f);
        b[b.length - 1] ^= 0xff;
        writeFileSync(f, b);
      },
    ],
    ['garbage appended', (f) => appendFileSync(f, Buffer.from([1, 2, 3, 4, 5, 6, 7]))],
  ];

  it.each(tears)('cuts a tail torn %s and continues after the good prefix', async (_name, tear) => {
    const dir = tempDir();
    let log = await SegmentLog.open({ dir, shard: 0 });
    for (let i = 0; i < 4; i++) await log.append(payload(i, 64));
    await log.close();
    const seg = join(dir, readdirSync(dir).find((f) => f.endsWith('.seg'))!);
    tear(seg, statSync(seg).size);
    log = await SegmentLog.open({ dir, shard: 0 });
    const good = _name === 'garbage appended' ? 4 : 3;
    expect(log.nextOffset).toBe(good);
    expect(log.recovery.truncatedBytes).toBeGreaterThan(0);
    expect((await readAll(log)).map((r) => r.offset)).toEqual(Array.from({ length: good }, (_, i) => i));
    expect(await log.append(payload(9, 64))).toBe(good);
    await log.close();
    log = await SegmentLog.open({ dir, shard: 0 });
    expect(log.recovery.truncatedBytes).toBe(0);
    expect((await readAll(log)).map((r) => r.payload[0])).toEqual([...Array.from({ length: good }, (_, i) => i), 9]);
    await log.close();
  });

  it('treats a bad record in an older segment as corruption, not a tail', async () => {
    const dir = tempDir();
    const log = await SegmentLog.open({ dir, shard: 0, segmentBytes: 4096 });
    for (let i = 0; i < 12; i++) await log.append(payload(i, 1000));
    await log.close();
    const first = join(dir, readdirSync(dir).filter((f) => f.endsWith('.seg')).sort()[0]!);
    const b = readFileSync(first);
    b[100] ^= 0xff;
    writeFileSync(first, b);
    await expect(SegmentLog.open({ dir, shard: 0, segmentBytes: 4096 })).rejects.toThrow(/is corrupt at byte 0/);
  });

  it('rejects the appends an fsync failure covered and every append after it', async () => {
    let fail = false;
    const log = await SegmentLog.open({
      dir: tempDir(),
      shard: 0,
      fsync: async (fd) => {
        if (fail) throw new Error('EIO');
        fdatasyncSync(fd);
      },
    });
    expect(await log.append(payload(0))).toBe(0);
    fail = true;
    await expect(log.append(payload(1))).rejects.toThrow(/write or fsync failed: EIO/);
    fail = false;
    await expect(log.append(payload(2))).rejects.toThrow(/failed earlier; restart to recover/);
    await log.close();
  });

  it('validates options with exact messages', async () => {
    await expect(SegmentLog.open({ dir: tempDir(), shard: 0, segmentBytes: 10 })).rejects.toThrow('segmentBytes must be an integer ≥ 4096, got 10');
  });
});
