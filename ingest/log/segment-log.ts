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
import { closeSync, existsSync, fdatasync, fdatasyncSync, fstatSync, openSync, readdirSync, readSync, ftruncateSync, writevSync } from 'node:fs';
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
    // fdatasync on libuv's thread pool: the event loop keeps accepting while the disk syncs.
    fsync: o.fsync ?? ((fd: number) => new Promise<void>((res, rej) => fdatasync(fd, (err) => (err ? rej(err) : res())))),
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
  /** Frames appended but not yet written, in offset order. */
  private queue: Uint8Array[] = [];
  private pumping = false;
  private pumpRun: Promise<void> = Promise.resolve();
  /** Waiters in offset order (a group resolves a prefix). */
  private waiters: Waiter[] = [];
  private unsyncedBytes = 0;
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
    const done = new Promise<number>((resolve, reject) => this.waiters.push({ offset, resolve, reject }));
    this.queue.push(frame);
    if (!this.pumping) {
      this.pumping = true;
      this.pumpRun = this.pump();
    }
    return done;
  }

  /**
   * The group-commit loop: takes every frame queued so far, writes them with one writev, fsyncs
   * once, releases their waiters, and repeats while more arrived meanwhile.
   */
  private async pump(): Promise<void> {
    try {
      while (this.queue.length > 0 && !this.failure) {
        const frames = this.queue;
        this.queue = [];
        let bytes = 0;
        for (const f of frames) bytes += f.byteLength;
        const firstOffset = this.durableEnd;
        let seg = this.segments[this.segments.length - 1]!;
        if (seg.size > 0 && seg.size + bytes > this.options.segmentBytes) seg = await this.roll(firstOffset);
        // The write is a memcpy into the page cache: done synchronously, it saves a thread-pool
        // round trip per group; only the fdatasync waits on the disk (off the event loop).
        let written = 0;
        let position = seg.size;
        let pending: Uint8Array[] = frames;
        while (written < bytes) {
          const n = writevSync(this.fh.fd, pending, position);
          written += n;
          position += n;
          if (written < bytes) pending = remainder(frames, written);
        }
        const started = performance.now();
        await this.options.fsync(this.fh.fd);
        this.options.onFsync?.(performance.now() - started, frames.length, bytes);
        seg.size += bytes;
        seg.end = firstOffset + frames.length;
        this.durableEnd = seg.end;
        this.unsyncedBytes -= bytes;
        const ready = this.waiters.splice(0, frames.length);
        for (const w of ready) w.resolve(w.offset);
      }
    } catch (err) {
      this.fail(err);
    } finally {
      this.pumping = false;
    }
  }

  /** Starts a new segment at `offset` (the previous one is fully fsync'd already). */
  private async roll(offset: number): Promise<Segment> {
    await this.fh.close();
    const path = join(this.options.dir, segName(offset));
    this.fh = await open(path, 'w+');
    await syncDir(this.options.dir);
    const seg: Segment = { first: offset, path, end: offset, size: 0 };
    this.segments.push(seg);
    return seg;
  }

  private fail(err: unknown): void {
    if (!this.failure) {
      this.failure = externalError('log_fsync_failed', `log of shard ${this.shard}: write or fsync failed: ${(err as Error).message}`, err);
    }
    const waiters = this.waiters;
    this.waiters = [];
    this.queue = [];
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
          // A copy (Buffer#slice would be a view of the whole file), so the payload can be transferred alone.
          yield { offset, payload: new Uint8Array(data.subarray(pos + HEADER, pos + HEADER + len)) };
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
    while (this.pumping) await this.pumpRun;
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

/** The frames' bytes after the first `skip` bytes (for a short writev). */
function remainder(frames: Uint8Array[], skip: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const f of frames) {
    if (skip >= f.byteLength) {
      skip -= f.byteLength;
      continue;
    }
    out.push(skip > 0 ? f.subarray(skip) : f);
    skip = 0;
  }
  return out;
}
