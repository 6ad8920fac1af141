/**
 * SegmentLog over real files in temp dirs: round trips, dense offsets across reopen, rolling,
 * reads from the middle, truncation, group commit, torn tails, corruption, fsync failures.
 */
import { fdatasyncSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SluiceError } from '../../common/errors.js';
import { openShardLogs, RECORD_HEADER_BYTES, SegmentLog, validateSegmentLogOptions, type SegmentLogOptions } from '../../log/segment-log.js';
import { describeLogConformance, type LogPlace } from './log-conformance.js';

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'sluice-log-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** Deterministic payload for record `i`: byte k = (i * 31 + k) mod 251, first 4 bytes = i. */
function payload(i: number, size = 32): Uint8Array {
  const p = new Uint8Array(size);
  for (let k = 0; k < size; k++) p[k] = (i * 31 + k) % 251;
  if (size >= 4) new DataView(p.buffer).setUint32(0, i, true);
  return p;
}

async function readAll(log: SegmentLog, from = 0): Promise<Array<{ offset: number; payload: Uint8Array }>> {
  const out = [];
  for await (const r of log.read(from)) out.push(r);
  return out;
}

/** Yields to the event loop until `cond()` holds (bounded: at most 5000 turns). */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 5000 && !cond(); i++) await new Promise((r) => setTimeout(r, 1));
  expect(cond()).toBe(true);
}

const segFiles = (dir: string): string[] => readdirSync(dir).filter((f) => f.endsWith('.seg')).sort();

/** A real fdatasync that counts calls and can be made to fail or to wait on a gate. */
function controlledFsync() {
  const c = {
    calls: 0,
    fail: false,
    gate: undefined as Promise<void> | undefined,
    fsync: async (fd: number): Promise<void> => {
      c.calls++;
      if (c.gate) await c.gate;
      if (c.fail) throw Object.assign(new Error('EIO: injected fsync failure'), { code: 'EIO' });
      fdatasyncSync(fd);
    },
  };
  return c;
}

describe('SegmentLog basics', () => {
  it('appends, reads back byte-exact and keeps offsets dense across reopen', async () => {
    const dir = tempDir();
    let log = await SegmentLog.open({ dir, shard: 0 });
    expect(log.nextOffset).toBe(0);
    for (let i = 0; i < 5; i++) expect(await log.append(payload(i, 10 + i))).toBe(i);
    expect(log.pendingBytes).toBe(0);
    await log.close();
    log = await SegmentLog.open({ dir, shard: 0 });
    expect(log.recovery).toEqual({ segment: '00000000000000000000.seg', records: 5, truncatedBytes: 0, reason: undefined });
    expect(log.nextOffset).toBe(5);
    expect(await log.append(payload(5, 15))).toBe(5);
    const all = await readAll(log);
    expect(all.map((r) => r.offset)).toEqual([0, 1, 2, 3, 4, 5]);
    all.forEach((r, i) => expect(r.payload).toEqual(payload(i, 10 + i)));
    expect((await readAll(log, 3)).map((r) => r.offset)).toEqual([3, 4, 5]);
    expect(await readAll(log, 6)).toEqual([]);
    expect(await readAll(log, 100)).toEqual([]);
    await log.close();
  });

  it('yields payloads that own their ArrayBuffer (transferable alone)', async () => {
    const log = await SegmentLog.open({ dir: tempDir(), shard: 0 });
    for (let i = 0; i < 3; i++) await log.append(payload(i, 100));
    for (const r of await readAll(log)) {
      expect(r.payload.byteOffset).toBe(0);
      expect(r.payload.buffer.byteLength).toBe(100);
    }
    await log.close();
  });

  it('accepts empty payloads', async () => {
    const dir = tempDir();
    let log = await SegmentLog.open({ dir, shard: 0 });
    expect(await log.append(new Uint8Array(0))).toBe(0);
    expect(await log.append(payload(1))).toBe(1);
    await log.close();
    log = await SegmentLog.open({ dir, shard: 0 });
    expect((await readAll(log)).map((r) => r.payload.length)).toEqual([0, 32]);
    await log.close();
  });

  it('rolls segments named by first offset, reads across them and from the middle of one', async () => {
    const dir = tempDir();
    let log = await SegmentLog.open({ dir, shard: 3, segmentBytes: 4096 });
    for (let i = 0; i < 40; i++) expect(await log.append(payload(i, 1000))).toBe(i);
    // 4 records of 1016 bytes fit in 4096; the 5th rolls.
    expect(segFiles(dir)).toEqual(Array.from({ length: 10 }, (_, k) => `${String(k * 4).padStart(20, '0')}.seg`));
    // Sealed segments end at their last record; the active one is preallocated (zeros) to 4096.
    for (const f of segFiles(dir).slice(0, -1)) expect(statSync(join(dir, f)).size).toBe(4 * 1016);
    expect(statSync(join(dir, segFiles(dir).at(-1)!)).size).toBe(4096);
    const mid = await readAll(log, 13);
    expect(mid.map((r) => r.offset)).toEqual(Array.from({ length: 27 }, (_, k) => 13 + k));
    mid.forEach((r) => expect(r.payload).toEqual(payload(r.offset, 1000)));
    await log.close();
    // close() cuts the active segment's zeros.
    for (const f of segFiles(dir)) expect(statSync(join(dir, f)).size).toBe(4 * 1016);
    log = await SegmentLog.open({ dir, shard: 3, segmentBytes: 4096 });
    expect(log.nextOffset).toBe(40);
    expect((await readAll(log, 17)).map((r) => r.offset)).toEqual(Array.from({ length: 23 }, (_, k) => 17 + k));
    await log.close();
  });

  it('writes a record bigger than segmentBytes into a segment of its own', async () => {
    const dir = tempDir();
    const log = await SegmentLog.open({ dir, shard: 0, segmentBytes: 1024 });
    await log.append(payload(0, 100));
    await log.append(payload(1, 5000));
    await log.append(payload(2, 100));
    expect(segFiles(dir)).toEqual(['00000000000000000000.seg', '00000000000000000001.seg', '00000000000000000002.seg']);
    expect((await readAll(log)).map((r) => r.payload.length)).toEqual([100, 5000, 100]);
    await log.close();
  });

  it('seeks via the sparse index and by scanning in big segments', async () => {
    const dir = tempDir();
    let log = await SegmentLog.open({ dir, shard: 0 });
    const n = 300;
    const size = 20_000; // ~6 MB in one segment: several sparse-index entries
    for (let i = 0; i < n; i += 50) await Promise.all(Array.from({ length: 50 }, (_, k) => log.append(payload(i + k, size))));
    for (const from of [0, 1, 52, 149, 250, 299]) {
      const got = await readAll(log, from);
      expect(got.map((r) => r.offset)).toEqual(Array.from({ length: n - from }, (_, k) => from + k));
      expect(got[0]!.payload).toEqual(payload(from, size));
    }
    await log.close();
    // After reopen the newest segment's index is rebuilt by the recovery scan.
    log = await SegmentLog.open({ dir, shard: 0 });
    expect((await readAll(log, 201)).map((r) => r.offset)[0]).toBe(201);
    await log.close();
  });

  it('truncateBefore deletes whole segments below the offset, keeps the newest, stays monotonic after reopen', async () => {
    const dir = tempDir();
    let log = await SegmentLog.open({ dir, shard: 0, segmentBytes: 4096 });
    for (let i = 0; i < 40; i++) await log.append(payload(i, 1000));
    await log.truncateBefore(30); // segments 0..27 hold only offsets < 28 <= 30; 28..31 holds 30
    expect(segFiles(dir)[0]).toBe('00000000000000000028.seg');
    expect(log.firstOffset).toBe(28);
    expect((await readAll(log, 0)).map((r) => r.offset)).toEqual(Array.from({ length: 12 }, (_, k) => 28 + k));
    expect((await readAll(log, 30)).map((r) => r.offset)).toEqual([30, 31, 32, 33, 34, 35, 36, 37, 38, 39]);
    await log.truncateBefore(1000); // everything is below, but the newest segment stays
    expect(segFiles(dir)).toEqual(['00000000000000000036.seg']);
    await log.close();
    log = await SegmentLog.open({ dir, shard: 0, segmentBytes: 4096 });
    expect(log.nextOffset).toBe(40);
    expect(await log.append(payload(40))).toBe(40);
    expect((await readAll(log, 0)).map((r) => r.offset)).toEqual([36, 37, 38, 39, 40]);
    await log.close();
  });

  it('truncateBefore right after a roll keeps the empty newest segment, so offsets survive reopen', async () => {
    const dir = tempDir();
    let log = await SegmentLog.open({ dir, shard: 0, segmentBytes: 1024 });
    for (let i = 0; i < 3; i++) await log.append(payload(i, 2000));
    await log.truncateBefore(3);
    expect(segFiles(dir)).toEqual(['00000000000000000002.seg']);
    await log.close();
    log = await SegmentLog.open({ dir, shard: 0, segmentBytes: 1024 });
    expect(log.nextOffset).toBe(3);
    expect(await log.append(payload(3))).toBe(3);
    await log.close();
  });

  it('frames offsets past 2^32 (u64 on disk) and recovers them', async () => {
    const dir = tempDir();
    const start = 2 ** 32 - 3;
    writeFileSync(join(dir, `${String(start).padStart(20, '0')}.seg`), new Uint8Array(0));
    let log = await SegmentLog.open({ dir, shard: 0 });
    expect(log.nextOffset).toBe(start);
    for (let i = 0; i < 6; i++) expect(await log.append(payload(i))).toBe(start + i);
    await log.close();
    log = await SegmentLog.open({ dir, shard: 0 });
    expect(log.recovery).toMatchObject({ records: 6, truncatedBytes: 0 });
    expect(log.nextOffset).toBe(start + 6);
    expect((await readAll(log, 2 ** 32)).map((r) => r.offset)).toEqual([2 ** 32, 2 ** 32 + 1, 2 ** 32 + 2]);
    await log.close();
  });

  it('opens dir/shard-<n> logs with openShardLogs', async () => {
    const dir = tempDir();
    const logs = await openShardLogs(dir, 3, { segmentBytes: 4096 });
    expect(logs.map((l) => l.shard)).toEqual([0, 1, 2]);
    await Promise.all(logs.map((l, s) => l.append(payload(s))));
    await Promise.all(logs.map((l) => l.close()));
    expect(readdirSync(dir).sort()).toEqual(['shard-0', 'shard-1', 'shard-2']);
    expect(segFiles(join(dir, 'shard-2'))).toEqual(['00000000000000000000.seg']);
  });

  it('reports every fsync to onFsync with the records and bytes it covered', async () => {
    const seen: Array<[number, number]> = [];
    const log = await SegmentLog.open({ dir: tempDir(), shard: 0, onFsync: (ms, records, bytes) => {
      expect(ms).toBeGreaterThanOrEqual(0);
      seen.push([records, bytes]);
    } });
    await Promise.all([log.append(payload(0, 10)), log.append(payload(1, 20))]);
    await log.append(payload(2, 30));
    expect(seen).toEqual([
      [2, 2 * RECORD_HEADER_BYTES + 30],
      [1, RECORD_HEADER_BYTES + 30],
    ]);
    await log.close();
  });

  it('rejects appends after close, and close waits for appends in flight', async () => {
    const log = await SegmentLog.open({ dir: tempDir(), shard: 0 });
    const inFlight = Promise.all(Array.from({ length: 20 }, (_, i) => log.append(payload(i))));
    await log.close();
    expect(await inFlight).toEqual(Array.from({ length: 20 }, (_, i) => i));
    await expect(log.append(payload(99))).rejects.toMatchObject({ code: 'log_closed' });
    await log.close(); // idempotent
  });
});

describe('SegmentLog group commit', () => {
  it('1000 concurrent appends get offsets 0..999 with fewer fsyncs than appends', async () => {
    const f = controlledFsync();
    const dir = tempDir();
    let log = await SegmentLog.open({ dir, shard: 0, fsync: f.fsync });
    const offsets = await Promise.all(Array.from({ length: 1000 }, (_, i) => log.append(payload(i))));
    expect([...offsets].sort((a, b) => a - b)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    expect(new Set(offsets).size).toBe(1000);
    expect(f.calls).toBeGreaterThan(0);
    expect(f.calls).toBeLessThan(1000);
    await log.close();
    log = await SegmentLog.open({ dir, shard: 0 });
    const all = await readAll(log);
    expect(all.length).toBe(1000);
    all.forEach((r, i) => expect(r.payload).toEqual(payload(i)));
    await log.close();
  });

  it('appends arriving during an fsync share the next one, even across a segment roll', async () => {
    const f = controlledFsync();
    const log = await SegmentLog.open({ dir: tempDir(), shard: 0, segmentBytes: 4096, fsync: f.fsync });
    let release!: () => void;
    f.gate = new Promise((r) => (release = r));
    const first = log.append(payload(0, 1000));
    await until(() => f.calls === 1);
    const rest = Array.from({ length: 9 }, (_, i) => log.append(payload(i + 1, 1000)));
    f.gate = undefined;
    release();
    expect(await first).toBe(0);
    expect(await Promise.all(rest)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    // 1 for the first record, then one batch of 9 over 3 segments: one fsync per segment touched.
    expect(f.calls).toBe(4);
    await log.close();
  });

  it('waits groupCommitMaxDelayMs to gather appends when asked to', async () => {
    const f = controlledFsync();
    const log = await SegmentLog.open({ dir: tempDir(), shard: 0, groupCommitMaxDelayMs: 5, fsync: f.fsync });
    const a = log.append(payload(0));
    await Promise.resolve();
    const b = log.append(payload(1));
    expect(await Promise.all([a, b])).toEqual([0, 1]);
    expect(f.calls).toBe(1);
    await log.close();
  });

  it('never yields records whose fsync is pending, and counts them in pendingBytes', async () => {
    const f = controlledFsync();
    const log = await SegmentLog.open({ dir: tempDir(), shard: 0, fsync: f.fsync });
    expect(await log.append(payload(0, 50))).toBe(0);
    let release!: () => void;
    f.gate = new Promise((r) => (release = r));
    const pending = log.append(payload(1, 50));
    await until(() => f.calls === 2);
    expect(log.pendingBytes).toBe(RECORD_HEADER_BYTES + 50);
    expect(log.nextOffset).toBe(2);
    expect(log.durableNextOffset).toBe(1);
    expect((await readAll(log)).map((r) => r.offset)).toEqual([0]);
    expect(await readAll(log, 1)).toEqual([]);
    f.gate = undefined;
    release();
    expect(await pending).toBe(1);
    expect(log.pendingBytes).toBe(0);
    expect((await readAll(log)).map((r) => r.offset)).toEqual([0, 1]);
    await log.close();
  });

  it('a reader started earlier also yields records made durable while it reads', async () => {
    const log = await SegmentLog.open({ dir: tempDir(), shard: 0, segmentBytes: 2048 });
    await log.append(payload(0, 900));
    const seen: number[] = [];
    for await (const r of log.read(0)) {
      seen.push(r.offset);
      if (r.offset < 5) await log.append(payload(r.offset + 1, 900)); // rolls every 2 records
    }
    expect(seen).toEqual([0, 1, 2, 3, 4, 5]);
    await log.close();
  });
});

describe('SegmentLog recovery', () => {
  // Four good 64-byte records (80 bytes framed each), then the fifth torn in one of these ways.
  const GOOD = 4;
  const FRAMED = RECORD_HEADER_BYTES + 64;
  const tears: Array<[string, (file: string) => void, string]> = [
    ['inside the length', (f) => truncateSync(f, GOOD * FRAMED + 2), 'partial header'],
    ['inside the header', (f) => truncateSync(f, GOOD * FRAMED + 10), 'partial header'],
    ['inside the payload', (f) => truncateSync(f, GOOD * FRAMED + RECORD_HEADER_BYTES + 30), 'partial payload'],
    ['by a flipped byte in the last payload', (f) => flipByte(f, (GOOD + 1) * FRAMED - 1), 'crc mismatch'],
    ['by a flipped byte in the last header', (f) => flipByte(f, GOOD * FRAMED + 9), 'crc mismatch'],
    ['by zeroes inside the last record', (f) => { truncateSync(f, GOOD * FRAMED + 20); appendFileSync(f, Buffer.alloc(4096)); }, 'crc mismatch'],
  ];

  function flipByte(file: string, at: number): void {
    const b = readFileSync(file);
    b[at] ^= 0x01;
    writeFileSync(file, b);
  }

  it.each(tears)('cuts a tail torn %s at the last good record and continues after it', async (_name, tear, reason) => {
    const dir = tempDir();
    let log = await SegmentLog.open({ dir, shard: 0 });
    for (let i = 0; i <= GOOD; i++) await log.append(payload(i, 64));
    await log.close();
    const seg = join(dir, segFiles(dir)[0]!);
    tear(seg);
    const tornSize = statSync(seg).size;
    log = await SegmentLog.open({ dir, shard: 0 });
    expect(log.recovery).toEqual({ segment: '00000000000000000000.seg', records: GOOD, truncatedBytes: tornSize - GOOD * FRAMED, reason });
    expect(statSync(seg).size).toBe(GOOD * FRAMED);
    expect(log.nextOffset).toBe(GOOD);
    const good = await readAll(log);
    expect(good.map((r) => r.offset)).toEqual([0, 1, 2, 3]);
    good.forEach((r) => expect(r.payload).toEqual(payload(r.offset, 64)));
    expect(await log.append(payload(9, 64))).toBe(GOOD);
    await log.close();
    log = await SegmentLog.open({ dir, shard: 0 });
    expect(log.recovery.truncatedBytes).toBe(0);
    expect((await readAll(log)).map((r) => new DataView(r.payload.buffer).getUint32(0, true))).toEqual([0, 1, 2, 3, 9]);
    await log.close();
  });

  it('keeps a tail of zeros only (the preallocated end a stop without close() leaves) and appends over it', async () => {
    const dir = tempDir();
    let log = await SegmentLog.open({ dir, shard: 0 });
    for (let i = 0; i < GOOD; i++) await log.append(payload(i, 64));
    await log.close();
    const seg = join(dir, segFiles(dir)[0]!);
    appendFileSync(seg, Buffer.alloc(100_000)); // as a kill -9 leaves it: records, then preallocated zeros
    const warnings: unknown[] = [];
    log = await SegmentLog.open({ dir, shard: 0, logger: { warn: (o) => warnings.push(o) } });
    expect(log.recovery).toEqual({ segment: '00000000000000000000.seg', records: GOOD, truncatedBytes: 0, reason: undefined });
    expect(warnings).toEqual([]);
    expect(statSync(seg).size).toBe(GOOD * FRAMED + 100_000);
    expect(await log.append(payload(9, 64))).toBe(GOOD);
    // Written over the zeros, inside the file: the size does not move until close() cuts the rest.
    expect(statSync(seg).size).toBe(GOOD * FRAMED + 100_000);
    await log.close();
    expect(statSync(seg).size).toBe((GOOD + 1) * FRAMED);
    log = await SegmentLog.open({ dir, shard: 0 });
    expect((await readAll(log)).map((r) => new DataView(r.payload.buffer).getUint32(0, true))).toEqual([0, 1, 2, 3, 9]);
    await log.close();
  });

  it('cuts a torn tail of the newest segment only, leaving sealed segments whole', async () => {
    const dir = tempDir();
    let log = await SegmentLog.open({ dir, shard: 0, segmentBytes: 2048 });
    for (let i = 0; i < 5; i++) await log.append(payload(i, 900)); // segments at 0, 2, 4
    await log.close();
    const newest = join(dir, '00000000000000000004.seg');
    truncateSync(newest, 100);
    log = await SegmentLog.open({ dir, shard: 0, segmentBytes: 2048 });
    expect(log.recovery).toMatchObject({ segment: '00000000000000000004.seg', records: 0, truncatedBytes: 100 });
    expect(log.nextOffset).toBe(4);
    expect((await readAll(log)).map((r) => r.offset)).toEqual([0, 1, 2, 3]);
    expect(await log.append(payload(4, 900))).toBe(4);
    await log.close();
  });

  it('treats a bad record inside a sealed segment as corruption naming file and byte position', async () => {
    const dir = tempDir();
    const log = await SegmentLog.open({ dir, shard: 0, segmentBytes: 4096 });
    for (let i = 0; i < 12; i++) await log.append(payload(i, 1000));
    await log.close();
    const first = join(dir, segFiles(dir)[0]!);
    const b = readFileSync(first);
    b[1016 + 100] ^= 0xff; // inside record 1's payload
    writeFileSync(first, b);
    const reopened = await SegmentLog.open({ dir, shard: 0, segmentBytes: 4096 });
    expect(reopened.nextOffset).toBe(12);
    const err = await readAll(reopened).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SluiceError);
    expect(err).toMatchObject({ code: 'log_corrupt', domain: 'internal' });
    expect((err as Error).message).toContain(`${first}: corrupt record at byte 1016 (offset 1): crc mismatch`);
    // Reading past the damaged segment still works.
    expect((await readAll(reopened, 4)).map((r) => r.offset)[0]).toBe(4);
    await reopened.close();
  });

  it('treats a sealed segment that ends early as a gap, not as the end of the log', async () => {
    const dir = tempDir();
    const log = await SegmentLog.open({ dir, shard: 0, segmentBytes: 4096 });
    for (let i = 0; i < 12; i++) await log.append(payload(i, 1000));
    await log.close();
    truncateSync(join(dir, segFiles(dir)[1]!), 1016 * 3); // offsets 4..6 left, 7 missing
    const reopened = await SegmentLog.open({ dir, shard: 0, segmentBytes: 4096 });
    await expect(readAll(reopened)).rejects.toMatchObject({ code: 'log_corrupt', message: expect.stringContaining('ends before offset 7') });
    await reopened.close();
  });
});

describe('SegmentLog fsync failures', () => {
  it('rejects every append the failed fsync covered, refuses later ones, and hides them from readers', async () => {
    const f = controlledFsync();
    const dir = tempDir();
    const log = await SegmentLog.open({ dir, shard: 0, fsync: f.fsync });
    expect(await log.append(payload(0))).toBe(0);
    f.fail = true;
    const results = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => log.append(payload(i + 1))));
    for (const r of results) {
      expect(r.status).toBe('rejected');
      expect((r as PromiseRejectedResult).reason).toMatchObject({ code: 'log_fsync_failed', domain: 'external', retry: 'backoff' });
      expect(((r as PromiseRejectedResult).reason as Error).message).toContain('EIO: injected fsync failure');
    }
    expect(log.failure).toMatchObject({ code: 'log_fsync_failed' });
    expect(log.pendingBytes).toBe(0);
    expect(log.durableNextOffset).toBe(1);
    f.fail = false;
    await expect(log.append(payload(11))).rejects.toMatchObject({ code: 'log_fsync_failed' });
    expect((await readAll(log)).map((r) => r.offset)).toEqual([0]);
    await log.close();

    // Reopen: the acknowledged record is intact. The rejected records' bytes did reach the page
    // cache (only the fsync "failed"), so they may come back as valid records: duplicates at
    // worst of what the client was told to retry, never a lost acknowledgement.
    const reopened = await SegmentLog.open({ dir, shard: 0 });
    const all = await readAll(reopened);
    expect(all[0]!.payload).toEqual(payload(0));
    expect(all.map((r) => r.offset)).toEqual(Array.from({ length: reopened.nextOffset }, (_, i) => i));
    expect(reopened.nextOffset).toBeGreaterThanOrEqual(1);
    expect(reopened.nextOffset).toBeLessThanOrEqual(11);
    const next = reopened.nextOffset;
    expect(await reopened.append(payload(12))).toBe(next);
    await reopened.close();
  });

  it('also rejects appends queued behind the failing fsync', async () => {
    const f = controlledFsync();
    const log = await SegmentLog.open({ dir: tempDir(), shard: 0, fsync: f.fsync });
    let release!: () => void;
    f.gate = new Promise((r) => (release = r));
    f.fail = true;
    const covered = log.append(payload(0));
    await until(() => f.calls === 1);
    const queued = [log.append(payload(1)), log.append(payload(2))];
    expect(log.pendingBytes).toBe(3 * (RECORD_HEADER_BYTES + 32));
    release();
    await expect(covered).rejects.toMatchObject({ code: 'log_fsync_failed' });
    for (const q of queued) await expect(q).rejects.toMatchObject({ code: 'log_fsync_failed' });
    expect(f.calls).toBe(1);
    expect(log.pendingBytes).toBe(0);
    await log.close();
  });

  it('fails the same way when the fsync sealing a segment before a roll fails', async () => {
    const f = controlledFsync();
    const dir = tempDir();
    const log = await SegmentLog.open({ dir, shard: 0, segmentBytes: 2048, fsync: f.fsync });
    await log.append(payload(0, 900));
    f.fail = true;
    const r = await Promise.allSettled([log.append(payload(1, 900)), log.append(payload(2, 900)), log.append(payload(3, 900))]);
    expect(r.map((x) => x.status)).toEqual(['rejected', 'rejected', 'rejected']);
    expect(segFiles(dir)).toEqual(['00000000000000000000.seg']); // never rolled past the failure
    await log.close();
  });
});

describe('SegmentLog options', () => {
  const base: SegmentLogOptions = { dir: '/tmp/x', shard: 0 };
  const cases: Array<[string, Partial<SegmentLogOptions> & Record<string, unknown>, string]> = [
    ['empty dir', { dir: '' }, 'dir must be a non-empty directory path, got ""'],
    ['shard below -1', { shard: -2 }, 'shard must be an integer >= 0 (or -1 for a log of no shard, such as the DLQ), got -2'],
    ['fractional shard', { shard: 1.5 }, 'shard must be an integer >= 0 (or -1 for a log of no shard, such as the DLQ), got 1.5'],
    ['tiny segmentBytes', { segmentBytes: 10 }, 'segmentBytes must be an integer from 1024 to 4294967296 (bytes; default 64 MiB), got 10'],
    ['fractional segmentBytes', { segmentBytes: 4096.5 }, 'segmentBytes must be an integer from 1024 to 4294967296 (bytes; default 64 MiB), got 4096.5'],
    ['negative delay', { groupCommitMaxDelayMs: -1 }, 'groupCommitMaxDelayMs must be a finite number of ms >= 0 (default 0), got -1'],
    ['infinite delay', { groupCommitMaxDelayMs: Infinity }, 'groupCommitMaxDelayMs must be a finite number of ms >= 0 (default 0), got Infinity'],
    ['fsync not a function', { fsync: 1 as never }, 'fsync must be a function (fd: number) => Promise<void>, got number'],
    ['onFsync not a function', { onFsync: 'x' as never }, 'onFsync must be a function (durationMs, records, bytes) => void, got string'],
    ['logger without warn', { logger: {} as never }, 'logger must be an object with a warn(obj, msg) method (a pino Logger works)'],
  ];
  it.each(cases)('rejects %s with an exact message', (_name, patch, message) => {
    expect(() => validateSegmentLogOptions({ ...base, ...patch })).toThrow(message);
    try {
      validateSegmentLogOptions({ ...base, ...patch });
    } catch (err) {
      expect(err).toMatchObject({ code: 'invalid_option', domain: 'user' });
    }
  });

  it('fills defaults and accepts the DLQ shard -1', () => {
    const o = validateSegmentLogOptions({ dir: '/tmp/x', shard: -1 });
    expect(o).toMatchObject({ dir: '/tmp/x', shard: -1, segmentBytes: 64 * 1024 * 1024, groupCommitMaxDelayMs: 0 });
    expect(o.fsync).toBeUndefined(); // writes are durable on return (O_DSYNC); a given fsync only injects failures
  });

  it('open rejects bad options before touching the disk', async () => {
    const dir = join(tempDir(), 'never');
    await expect(SegmentLog.open({ dir, shard: 0, segmentBytes: 10 })).rejects.toMatchObject({ code: 'invalid_option' });
    expect(() => statSync(dir)).toThrow();
  });

  it('rejects bad read and truncate offsets', async () => {
    const log = await SegmentLog.open({ dir: tempDir(), shard: 0 });
    await expect(readAll(log, -1)).rejects.toMatchObject({ code: 'invalid_offset' });
    await expect(log.truncateBefore(0.5)).rejects.toMatchObject({ code: 'invalid_offset' });
    await log.close();
  });

  it('warns the logger about a recovery cut', async () => {
    const dir = tempDir();
    let log = await SegmentLog.open({ dir, shard: 7 });
    await log.append(payload(0));
    await log.close();
    appendFileSync(join(dir, segFiles(dir)[0]!), Buffer.from([1, 2, 3]));
    const warnings: Array<[object, string]> = [];
    log = await SegmentLog.open({ dir, shard: 7, logger: { warn: (obj, msg) => warnings.push([obj, msg]) } });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]![0]).toMatchObject({ shard: 7, truncatedBytes: 3, position: RECORD_HEADER_BYTES + 32, reason: 'partial header' });
    await log.close();
  });
});

describeLogConformance({
  name: 'SegmentLog',
  async place(): Promise<LogPlace> {
    const dir = tempDir();
    return { open: () => SegmentLog.open({ dir, shard: 0, segmentBytes: 4096 }), cleanup: async () => undefined };
  },
});
