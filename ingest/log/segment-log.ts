/**
 * A shard's durable log on local disk: append-only segment files with length + CRC framing and
 * group commit (one fsync covers every record written before it).
 *
 * Segment file `<firstOffset, 20 digits>.seg`, a sequence of records:
 *
 *   ┌────────────┬────────────┬──────────────────┬─────────────────┐
 *   │ u32 length │ u32 crc32  │ f64 offset       │ payload (length)│   little endian
 *   └────────────┴────────────┴──────────────────┴─────────────────┘
 *   crc32 covers the offset and the payload. A record is valid only if whole and its CRC matches.
 *
 * Recovery on open scans the last segment and cuts a torn tail (partial header, partial
 * payload or bad CRC) at the last valid record. A bad record in the middle of an older segment
 * is corruption and an error, never skipped. `meta.json` keeps the low-water offset so offsets
 * stay monotonic after truncation removes every segment.
 *
 * Failure rule: if a write or fsync fails, every append it covered rejects and the log turns
 * failed (all later appends reject) until reopened. Bytes of a failed fsync may still reach the
 * disk and be valid after reopen: they were never acknowledged, so at worst they duplicate a
 * client retry, which dedup removes downstream.
 */
import { closeSync, existsSync, fdatasyncSync, fstatSync, openSync, readdirSync, readSync, ftruncateSync } from 'node:fs';
import { mkdir, open, readFile, rename, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { externalError, internalError, userError } from '../../common/errors.js';
import type { LogRecord, ShardLog } from './log.js';

const HEADER = 16;

export interface SegmentLogOptions {
  /** Directory of this shard's log (created if missing). */
  dir: string;
  shard: number;
  /** Roll to a new segment once the current one exceeds this many bytes. Default 64 MiB. */
  segmentBytes?: number;
  /** Injectable fsync for failure tests. Default: fdatasync. */
  fsync?: (fd: number) => Promise<void>;
  /** Called after each group commit: duration, records and bytes it covered. */
  onFsync?: (durationMs: number, records: number, bytes: number) => void;
}

interface Segment {
  first: number;
  path: string;
  /** Offset after the last record (exclusive). */
  end: number;
  size: number;
}

interface Waiter {
  offset: number;
  resolve: (offset: number) => void;
  reject: (err: Error) => void;
}

const segName = (first: number): string => `${String(first).padStart(20, '0')}.seg`;

export function validateSegmentLogOptions(o: SegmentLogOptions): Required<Omit<SegmentLogOptions, 'onFsync'>> & Pick<SegmentLogOptions, 'onFsync'> {
  if (typeof o.dir !== 'string' || o.dir === '') throw userError('invalid_option', 'dir must be a non-empty directory path');
  const segmentBytes = o.segmentBytes ?? 64 * 1024 * 1024;
  if (!Number.isInteger(segmentBytes) || segmentBytes < 4096) throw userError('invalid_option', `segmentBytes must be an integer ≥ 4096, got ${segmentBytes}`);
  return {
    dir: o.dir,
    shard: o.shard,
    segmentBytes,
    fsync: o.fsync ?? ((fd: number) => new Promise<void>((res, rej) => { try { fdatasyncSync(fd); res(); } catch (e) { rej(e as Error); } })),
    onFsync: o.onFsync,
  };
}

export class SegmentLog implements ShardLog {
  readonly shard: number;
  /** Bytes cut from a torn tail when this log was opened. */
  readonly recovery: { truncatedBytes: number };
  private readonly options: ReturnType<typeof validateSegmentLogOptions>;
  private segments: Segment[];
  private fh: FileHandle;
  private next: number;
  /** Offset below which every record is durable. */
  private durableEnd: number;
  private writing: Promise<void> = Promise.resolve();
  private syncing = false;
  private syncRun: Promise<void> = Promise.resolve();
  private rolling = false;
  private waiters: Waiter[] = [];
  private unsyncedBytes = 0;
  private unsyncedRecords = 0;
  private failure: Error | undefined;
  private closed = false;

  private constructor(options: ReturnType<typeof validateSegmentLogOptions>, segments: Segment[], fh: FileHandle, truncatedBytes: number) {
    this.options = options;
    this.shard = options.shard;
    this.segments = segments;
    this.fh = fh;
    const last = segments[segments.length - 1]!;
    this.next = last.end;
    this.durableEnd = last.end;
    this.recovery = { truncatedBytes };
  }

  static async open(input: SegmentLogOptions): Promise<SegmentLog> {
    const options = validateSegmentLogOptions(input);
    await mkdir(options.dir, { recursive: true });
    const low = await readLowWater(options.dir);
    const files = readdirSync(options.dir).filter((f) => /^\d{20}\.seg$/.test(f)).sort();
    const segments: Segment[] = [];
    let truncatedBytes = 0;
    for (let i = 0; i < files.length; i++) {
      const path = join(options.dir, files[i]!);
      const first = Number(files[i]!.slice(0, 20));
      const isLast = i === files.length - 1;
      const scan = scanSegment(path, first, isLast);
      truncatedBytes += scan.truncatedBytes;
      segments.push({ first, path, end: scan.end, size: scan.validBytes });
    }
    if (segments.length === 0) {
      const first = low;
      const path = join(options.dir, segName(first));
      await writeFile(path, new Uint8Array(0));
      segments.push({ first, path, end: first, size: 0 });
    }
    const last = segments[segments.length - 1]!;
    const fh = await open(last.path, 'r+');
    return new SegmentLog(options, segments, fh, truncatedBytes);
  }

  get nextOffset(): number {
    return this.next;
  }

  get pendingBytes(): number {
    return this.unsyncedBytes;
  }

  append(payload: Uint8Array): Promise<number> {
    if (this.failure) return Promise.reject(externalError('log_failed', `log of shard ${this.shard} failed earlier; restart to recover`, this.failure));
    if (this.closed) return Promise.reject(internalError('log_closed', `log of shard ${this.shard} is closed`));
    const offset = this.next++;
    const frame = new Uint8Array(HEADER + payload.byteLength);
    const view = new DataView(frame.buffer);
    view.setUint32(0, payload.byteLength, true);
    view.setFloat64(8, offset, true);
    frame.set(payload, HEADER);
    view.setUint32(4, crc32(frame.subarray(8)), true);
    this.unsyncedBytes += frame.byteLength;
    this.unsyncedRecords++;
    const done = new Promise<number>((resolve, reject) => this.waiters.push({ offset, resolve, reject }));
    // Writes are serialized (positional appends in offset order); fsyncs are grouped.
    this.writing = this.writing.then(() => this.write(frame, offset));
    this.writing.then(
      () => this.scheduleSync(),
      (err: unknown) => this.fail(err),
    );
    return done;
  }

  private async write(frame: Uint8Array, offset: number): Promise<void> {
    if (this.failure) throw this.failure;
    let seg = this.segments[this.segments.length - 1]!;
    if (seg.size > 0 && seg.size + frame.byteLength > this.options.segmentBytes) {
      // Roll: no group fsync may run on the old handle while it is closed; the roll's own fsync
      // makes everything written so far durable, then waiters are released by the next sync.
      this.rolling = true;
      try {
        await this.syncRun;
        await this.options.fsync(this.fh.fd);
        await this.fh.close();
        const path = join(this.options.dir, segName(offset));
        this.fh = await open(path, 'w+');
        await syncDir(this.options.dir);
        this.durableEnd = seg.end;
        const ready = this.waiters.filter((w) => w.offset < seg.end);
        this.waiters = this.waiters.filter((w) => w.offset >= seg.end);
        for (const w of ready) w.resolve(w.offset);
        // Only the frame being written now is left unsynced.
        this.unsyncedRecords = 1;
        this.unsyncedBytes = frame.byteLength;
        seg = { first: offset, path, end: offset, size: 0 };
        this.segments.push(seg);
      } finally {
        this.rolling = false;
      }
    }
    let written = 0;
    while (written < frame.byteLength) {
      const { bytesWritten } = await this.fh.write(frame, written, frame.byteLength - written, seg.size + written);
      written += bytesWritten;
    }
    seg.size += frame.byteLength;
    seg.end = offset + 1;
  }

  private scheduleSync(): void {
    if (this.syncing || this.rolling || this.failure) return;
    this.syncing = true;
    this.syncRun = this.syncLoop();
  }

  /** One fsync at a time; each covers every record fully written when it started. */
  private async syncLoop(): Promise<void> {
    try {
      while (!this.failure) {
        const seg = this.segments[this.segments.length - 1]!;
        const coveredEnd = seg.end;
        if (coveredEnd <= this.durableEnd) break;
        const records = this.unsyncedRecords;
        const bytes = this.unsyncedBytes;
        const started = performance.now();
        await this.options.fsync(this.fh.fd);
        this.options.onFsync?.(performance.now() - started, records, bytes);
        this.durableEnd = coveredEnd;
        this.unsyncedRecords = Math.max(0, this.unsyncedRecords - records);
        this.unsyncedBytes = Math.max(0, this.unsyncedBytes - bytes);
        const ready = this.waiters.filter((w) => w.offset < coveredEnd);
        this.waiters = this.waiters.filter((w) => w.offset >= coveredEnd);
        for (const w of ready) w.resolve(w.offset);
      }
    } catch (err) {
      this.fail(err);
    } finally {
      this.syncing = false;
    }
    // Records written while the last fsync ran need another one.
    if (!this.failure && this.segments[this.segments.length - 1]!.end > this.durableEnd) this.scheduleSync();
  }

  private fail(err: unknown): void {
    if (!this.failure) {
      this.failure = externalError('log_fsync_failed', `log of shard ${this.shard}: write or fsync failed: ${(err as Error).message}`, err);
    }
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.reject(this.failure);
  }

  async *read(fromOffset: number): AsyncIterable<LogRecord> {
    const end = this.durableEnd;
    for (const seg of [...this.segments]) {
      if (seg.end <= fromOffset || seg.first >= end) continue;
      const data = await readFile(seg.path).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return undefined; // truncated meanwhile
        throw err;
      });
      if (!data) continue;
      const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
      let pos = 0;
      while (pos + HEADER <= data.byteLength) {
        const len = view.getUint32(pos, true);
        const offset = view.getFloat64(pos + 8, true);
        if (offset >= end || pos + HEADER + len > data.byteLength) break;
        if (offset >= fromOffset) {
          const frame = data.subarray(pos + 8, pos + HEADER + len);
          if (crc32(frame) !== view.getUint32(pos + 4, true)) {
            throw internalError('log_corrupt', `log ${seg.path}: bad CRC at byte ${pos} (offset ${offset})`);
          }
          yield { offset, payload: data.slice(pos + HEADER, pos + HEADER + len) };
        }
        pos += HEADER + len;
      }
    }
  }

  async truncateBefore(offset: number): Promise<void> {
    await writeLowWater(this.options.dir, Math.min(offset, this.next));
    while (this.segments.length > 1 && this.segments[0]!.end <= offset) {
      const seg = this.segments.shift()!;
      await rm(seg.path, { force: true });
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.writing.catch(() => undefined);
    while (this.syncing || (!this.failure && this.waiters.length > 0)) await new Promise((r) => setTimeout(r, 1));
    await this.fh.close();
  }
}

/** Validates a segment's records; cuts a torn tail of the last segment; throws on corruption elsewhere. */
function scanSegment(path: string, first: number, isLast: boolean): { end: number; validBytes: number; truncatedBytes: number } {
  const fd = openSync(path, 'r+');
  try {
    const size = fstatSync(fd).size;
    const data = new Uint8Array(size);
    let read = 0;
    while (read < size) read += readSync(fd, data, read, size - read, read);
    const view = new DataView(data.buffer);
    let pos = 0;
    let expected = first;
    while (pos < size) {
      const whole = pos + HEADER <= size && pos + HEADER + view.getUint32(pos, true) <= size;
      const valid =
        whole &&
        view.getFloat64(pos + 8, true) === expected &&
        crc32(data.subarray(pos + 8, pos + HEADER + view.getUint32(pos, true))) === view.getUint32(pos + 4, true);
      if (!valid) {
        if (!isLast) throw internalError('log_corrupt', `log segment ${path} is corrupt at byte ${pos} (expected offset ${expected})`);
        ftruncateSync(fd, pos);
        fdatasyncSync(fd);
        return { end: expected, validBytes: pos, truncatedBytes: size - pos };
      }
      pos += HEADER + view.getUint32(pos, true);
      expected++;
    }
    return { end: expected, validBytes: pos, truncatedBytes: 0 };
  } finally {
    closeSync(fd);
  }
}

async function readLowWater(dir: string): Promise<number> {
  const path = join(dir, 'meta.json');
  if (!existsSync(path)) return 0;
  return (JSON.parse(await readFile(path, 'utf8')) as { lowWater: number }).lowWater;
}

async function writeLowWater(dir: string, lowWater: number): Promise<void> {
  const tmp = join(dir, 'meta.json.tmp');
  const fh = await open(tmp, 'w');
  try {
    await fh.writeFile(JSON.stringify({ lowWater }));
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, join(dir, 'meta.json'));
  await syncDir(dir);
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Opens `dir/shard-<n>` logs for shards 0..shards−1. */
export async function openShardLogs(dir: string, shards: number, options: Omit<SegmentLogOptions, 'dir' | 'shard'> = {}): Promise<SegmentLog[]> {
  const logs: SegmentLog[] = [];
  for (let s = 0; s < shards; s++) logs.push(await SegmentLog.open({ ...options, dir: join(dir, `shard-${s}`), shard: s }));
  return logs;
}
