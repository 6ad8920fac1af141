/**
 * The local durable log: one directory per shard, fsync'd segment files, group commit.
 *
 * Directory layout (one per shard):
 *
 *   <dir>/00000000000000000000.seg   records 0 … 9 999        (sealed: complete, fsync'd)
 *   <dir>/00000000000000010000.seg   records 10 000 …         (active: appended to)
 *
 * A segment is named by the offset of its first record (20 digits, so name order = offset
 * order). The next segment always starts right after the previous one's last record, so a
 * sealed segment's last offset is `next.first - 1`. `truncateBefore` never deletes the active
 * (newest) segment, so its name keeps offsets monotonic even when every older segment is gone:
 * no separate low-water file is needed.
 *
 * Record framing (little-endian), back to back, no file header:
 *
 *    0        4        8                16
 *   ┌────────┬────────┬────────────────┬──────────────────────┐
 *   │ crc u32│ len u32│ offset u64     │ payload (len bytes)  │
 *   └────────┴────────┴────────────────┴──────────────────────┘
 *   crc = CRC-32 (IEEE, zlib) over bytes [4, 16) then the payload, so it covers the length, the
 *   offset and the payload. The offset must equal the segment's first offset + the record's
 *   index; a mismatch is corruption.
 *
 * Group commit (one pump per log, never two fsyncs in flight):
 *
 *   append() ──▶ queue (offset assigned, header built, crc computed)
 *                  │  pump: take the whole queue as one batch
 *                  ▼
 *   writev(batch at segment end; O_DSYNC: durable on return) ─▶ durable marks advance ─▶ resolve every append
 *                                       │ fails
 *                                       ▼
 *                     reject the batch and everything queued; the log is failed for good
 *
 * Appends that arrive while a batch is being written/fsync'd wait in the queue and share the
 * next fsync. Rolling: before a batch's record would push the active segment past
 * `segmentBytes`, what was written to it is fsync'd, it is sealed, and a new segment file is
 * created and its directory entry fsync'd before any of its records is acknowledged. `roll()`
 * asks for the same between two group commits (erasure: a segment holding an erased user's
 * records must become deletable by truncation without waiting for it to fill).
 *
 * Failure rule ("never acknowledge what could be lost"): a write or fsync error rejects every
 * append of the batch and of the queue with `log_fsync_failed`, and the log refuses all further
 * appends; readers never see those records (durable marks do not move). The bytes may still
 * have reached the disk: after a reopen, recovery keeps every fully framed, CRC-valid record,
 * so a record whose append was rejected may reappear. That is a duplicate at worst (the client
 * was told to retry and will resend it with the same event_id), which dedup downstream removes;
 * an acknowledged record is never lost.
 *
 * Preallocation: the active segment's file runs ahead of its records by up to
 * PREALLOCATE_BYTES of zeros, written (in the same writev) whenever a group commit would pass
 * its end. A commit then overwrites blocks the file already has, and its sync flushes data
 * only: appending instead changed the file's size on every commit, and each sync paid an
 * ext4 journal commit for it — twice the CPU and the latency (≈ 110 → 55 µs CPU, 290 → 140 µs
 * wall per 8 KB commit on this project's machines; bench/results/log-preallocate-2026-12-04.md).
 * Only the active segment has a zero tail: a segment is cut to its records before it is sealed,
 * and close() cuts the active one, so sealed segments still end at their last record.
 *
 * Recovery on open scans the newest segment only and truncates it at the first record that is
 * not fully framed or fails its CRC/offset check (a torn tail: only records never fsync'd can be
 * there, because a segment is fsync'd before the next one is created). A tail of zeros only is
 * the preallocated end, not a cut: it is kept, and not reported. A cut is reported in
 * `recovery` and to the logger. Older segments are checked when read: corruption inside a
 * sealed segment is an internal error naming the file and byte position, never skipped.
 */
import { constants as fsConstants } from 'node:fs';
import { mkdir, open, readdir, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import * as zlib from 'node:zlib';
import { externalError, internalError, userError, type SluiceError } from '../common/errors.js';
import type { LogRecord, ShardLog } from './log.js';

/** Bytes of framing before each payload. */
export const RECORD_HEADER_BYTES = 16;
/** Largest payload one record may carry (1 GiB); split bigger batches. */
export const MAX_RECORD_PAYLOAD_BYTES = 1 << 30;

/** Minimal structured logger (pino's `Logger` fits). */
export interface SegmentLogLogger {
  warn(obj: object, msg: string): void;
}

/** Options of one shard's log. Validated by {@link validateSegmentLogOptions}. */
export interface SegmentLogOptions {
  /** Directory of this log (one per shard); created if missing. Owned exclusively by this log. */
  dir: string;
  /** Shard number (>= 0), or -1 for a log that belongs to no shard (the DLQ). */
  shard: number;
  /** Roll to a new segment file before one would exceed this many bytes. Default 64 MiB. */
  segmentBytes?: number;
  /**
   * Extra time (ms) the committer waits before taking a batch, to gather more appends per
   * fsync. Default 0: the next fsync starts as soon as the previous one finished.
   */
  groupCommitMaxDelayMs?: number;
  /**
   * Called after each write of the active segment, which is already durable (the file is opened
   * O_DSYNC); for failure injection. Default: none.
   */
  fsync?: (fd: number) => Promise<void>;
  /**
   * Called after every group commit made durable with its duration (ms: the O_DSYNC write), the
   * records and bytes (framing included) it made durable. Must not throw (errors are ignored).
   * For metrics.
   */
  onFsync?: (durationMs: number, records: number, bytes: number) => void;
  /** Told about recovery cuts. Default: silent (the cut is still in `recovery`). */
  logger?: SegmentLogLogger;
}

/** {@link SegmentLogOptions} with defaults applied. */
export interface ResolvedSegmentLogOptions {
  readonly dir: string;
  readonly shard: number;
  readonly segmentBytes: number;
  readonly groupCommitMaxDelayMs: number;
  readonly fsync: ((fd: number) => Promise<void>) | undefined;
  readonly onFsync: ((durationMs: number, records: number, bytes: number) => void) | undefined;
  readonly logger: SegmentLogLogger | undefined;
}

export const SEGMENT_LOG_DEFAULTS = {
  segmentBytes: 64 * 1024 * 1024,
  groupCommitMaxDelayMs: 0,
} as const;

const MIN_SEGMENT_BYTES = 1024;
const MAX_SEGMENT_BYTES = 4 * 1024 * 1024 * 1024;

/**
 * Flags of the active segment's file: every write returns once its data is on disk (one syscall
 * and one trip through libuv's pool per commit where writev + fdatasync took two: ≈ 25 % less
 * CPU and wall time per commit, measured with preallocated files).
 */
const ACTIVE_FLAGS = fsConstants.O_RDWR | fsConstants.O_DSYNC;

/** Applies defaults and checks every option; throws a user error (`invalid_option`) naming it. */
export function validateSegmentLogOptions(options: SegmentLogOptions): ResolvedSegmentLogOptions {
  const bad = (message: string) => userError('invalid_option', message);
  if (typeof options !== 'object' || options === null) throw bad(`segment log options must be an object, got ${String(options)}`);
  const { dir, shard } = options;
  if (typeof dir !== 'string' || dir.length === 0) throw bad(`dir must be a non-empty directory path, got ${JSON.stringify(dir)}`);
  if (!Number.isSafeInteger(shard) || shard < -1) {
    throw bad(`shard must be an integer >= 0 (or -1 for a log of no shard, such as the DLQ), got ${String(shard)}`);
  }
  const segmentBytes = options.segmentBytes ?? SEGMENT_LOG_DEFAULTS.segmentBytes;
  if (!Number.isSafeInteger(segmentBytes) || segmentBytes < MIN_SEGMENT_BYTES || segmentBytes > MAX_SEGMENT_BYTES) {
    throw bad(`segmentBytes must be an integer from ${MIN_SEGMENT_BYTES} to ${MAX_SEGMENT_BYTES} (bytes; default 64 MiB), got ${String(segmentBytes)}`);
  }
  const groupCommitMaxDelayMs = options.groupCommitMaxDelayMs ?? SEGMENT_LOG_DEFAULTS.groupCommitMaxDelayMs;
  if (typeof groupCommitMaxDelayMs !== 'number' || !Number.isFinite(groupCommitMaxDelayMs) || groupCommitMaxDelayMs < 0) {
    throw bad(`groupCommitMaxDelayMs must be a finite number of ms >= 0 (default 0), got ${String(groupCommitMaxDelayMs)}`);
  }
  const fsync = options.fsync;
  if (fsync !== undefined && typeof fsync !== 'function') throw bad(`fsync must be a function (fd: number) => Promise<void>, got ${typeof fsync}`);
  if (options.onFsync !== undefined && typeof options.onFsync !== 'function') {
    throw bad(`onFsync must be a function (durationMs, records, bytes) => void, got ${typeof options.onFsync}`);
  }
  if (options.logger !== undefined && (typeof options.logger !== 'object' || typeof options.logger?.warn !== 'function')) {
    throw bad('logger must be an object with a warn(obj, msg) method (a pino Logger works)');
  }
  return { dir, shard, segmentBytes, groupCommitMaxDelayMs, fsync, onFsync: options.onFsync, logger: options.logger };
}

/** What recovery found in the newest segment when the log was opened. */
export interface SegmentLogRecovery {
  /** File name of the scanned (newest) segment. */
  readonly segment: string;
  /** Valid records kept in it. */
  readonly records: number;
  /** Bytes cut off its end (torn or corrupt tail); 0 when it was clean. */
  readonly truncatedBytes: number;
  /** Why the cut was made (`partial header`, `partial payload`, `crc mismatch`, …), if any. */
  readonly reason: string | undefined;
}

const crc32: (data: Uint8Array, value?: number) => number =
  typeof zlib.crc32 === 'function' ? zlib.crc32 : tableCrc32;

let CRC_TABLE: Uint32Array | undefined;
/** Fallback for Node builds without `zlib.crc32` (added in 20.15): same IEEE CRC-32. */
function tableCrc32(data: Uint8Array, value = 0): number {
  let table = CRC_TABLE;
  if (table === undefined) {
    table = CRC_TABLE = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
  }
  let crc = ~value;
  for (let i = 0; i < data.length; i++) crc = table[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return ~crc >>> 0;
}

export const SEGMENT_RE = /^(\d{20})\.seg$/;
const TWO_32 = 4294967296;
/** A sparse index entry is added every this many bytes of a segment (in-memory only). */
const INDEX_EVERY_BYTES = 1 << 20;
const READ_CHUNK_BYTES = 1 << 20;
/**
 * Zeros the active segment's file is extended by when a commit would pass its end (never past
 * segmentBytes). 1 MiB: one commit in ~125 (at 8 KB each) pays the size change; 4 MiB made that
 * commit's fsync take ~10 ms.
 */
const PREALLOCATE_BYTES = 1 << 20;
let ZEROS: Uint8Array | undefined;

/** True when the file bytes [from, to) are all zero (the preallocated end of an active segment). */
async function zerosOnly(fh: FileHandle, from: number, to: number): Promise<boolean> {
  const buf = Buffer.allocUnsafe(Math.min(READ_CHUNK_BYTES, to - from));
  for (let pos = from; pos < to; ) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, to - pos), pos);
    if (bytesRead === 0) return false;
    for (let i = 0; i < bytesRead; i++) if (buf[i] !== 0) return false;
    pos += bytesRead;
  }
  return true;
}

function segmentName(first: number): string {
  return `${String(first).padStart(20, '0')}.seg`;
}

interface Segment {
  readonly first: number;
  readonly path: string;
  /** Bytes written to the file (durable or not). */
  written: number;
  /** Bytes covered by a completed fsync; readers stop here. For sealed segments: the file size. */
  durableBytes: number;
  /** No more records will be added (not the newest segment). */
  sealed: boolean;
  /** Sparse index, flat `[offset, position, …]`, ascending; only for segments this process wrote or scanned. */
  readonly index: number[];
  lastIndexedPos: number;
}

async function fsyncDir(path: string): Promise<void> {
  const fh = await open(path, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function isErrno(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}

/** Buffered positional reader over one file, never reading past a caller-given limit. */
export class FrameCursor {
  buf: Buffer;
  /** File position of `buf[0]`. */
  start = 0;
  /** Valid bytes in `buf`. */
  len = 0;
  /** `chunkBytes`: how much a read fetches at least (the frame's size if more). */
  constructor(
    private readonly fh: FileHandle,
    private readonly chunkBytes = READ_CHUNK_BYTES,
  ) {
    this.buf = Buffer.allocUnsafe(chunkBytes);
  }

  /** Forgets what was read: bytes past a writer's last record may have changed since (preallocated zeros overwritten). */
  invalidate(): void {
    this.len = 0;
  }

  /** Makes file bytes `[pos, pos+n)` available in `buf`; false if they are not all below `limit` or in the file. */
  async ensure(pos: number, n: number, limit: number): Promise<boolean> {
    if (pos >= this.start && pos + n <= this.start + this.len) return true;
    if (pos + n > limit) return false;
    const want = Math.min(Math.max(this.chunkBytes, n), limit - pos);
    if (this.buf.length < want) this.buf = Buffer.allocUnsafe(want);
    let got = 0;
    while (got < want) {
      const { bytesRead } = await this.fh.read(this.buf, got, want - got, pos + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    this.start = pos;
    this.len = got;
    return got >= n;
  }
}

export type FrameCheck = { ok: true; length: number } | { ok: false; reason: string };

/** Validates the frame at `pos` (header and payload), reading through `cur`. */
export async function checkFrame(cur: FrameCursor, pos: number, expected: number, limit: number): Promise<FrameCheck> {
  if (!(await cur.ensure(pos, RECORD_HEADER_BYTES, limit))) return { ok: false, reason: 'partial header' };
  const b = cur.buf;
  const h = pos - cur.start;
  const crc = b.readUInt32LE(h);
  const length = b.readUInt32LE(h + 4);
  const offset = b.readUInt32LE(h + 12) * TWO_32 + b.readUInt32LE(h + 8);
  if (length > limit - pos - RECORD_HEADER_BYTES) return { ok: false, reason: 'partial payload' };
  if (!(await cur.ensure(pos, RECORD_HEADER_BYTES + length, limit))) return { ok: false, reason: 'partial payload' };
  const p = pos - cur.start;
  const buf = cur.buf;
  const actual = crc32(buf.subarray(p + RECORD_HEADER_BYTES, p + RECORD_HEADER_BYTES + length), crc32(buf.subarray(p + 4, p + RECORD_HEADER_BYTES)));
  if (actual !== crc) return { ok: false, reason: 'crc mismatch' };
  if (offset !== expected) return { ok: false, reason: `offset ${offset} where ${expected} was expected` };
  return { ok: true, length };
}

type Resolve = (offset: number) => void;
type Reject = (err: unknown) => void;

/**
 * A shard's durable log on local disk. Open with {@link SegmentLog.open}; one instance per
 * directory (no locking: two processes on one directory corrupt it).
 *
 * Buffer ownership: `append(payload)` keeps a reference to `payload` until its promise settles;
 * the caller must not mutate it before then. Records yielded by `read` own their payload (a
 * fresh `Uint8Array` over its own `ArrayBuffer`, byteOffset 0), so it may be transferred.
 */
export class SegmentLog implements ShardLog {
  readonly shard: number;
  /** Directory of this log. */
  readonly dir: string;
  /** What recovery did to the newest segment on open. */
  readonly recovery: SegmentLogRecovery;

  private readonly opts: ResolvedSegmentLogOptions;
  /** Ascending by first offset; the last one is active. */
  private readonly segments: Segment[];
  private active: Segment;
  private fh: FileHandle;
  private next: number;
  private durableNext: number;
  /** Size of the active segment's file: its records, then zeros (preallocated) up to here. */
  private allocated: number;
  private pending = 0;
  private failed: SluiceError | undefined;
  private closing = false;
  private closed: Promise<void> | undefined;
  private pumpRun: Promise<void> | undefined;
  /** Callers of `roll()` waiting for the pump to seal the active segment. */
  private rollWaiters: Array<{ resolve: Resolve; reject: Reject }> = [];

  // The queue of appends not yet taken by the pump, double-buffered to avoid reallocating.
  private qBufs: Uint8Array[] = [];
  private qResolves: Resolve[] = [];
  private qRejects: Reject[] = [];
  private qFirst = 0;
  private qBytes = 0;
  private spareBufs: Uint8Array[] = [];
  private spareResolves: Resolve[] = [];
  private spareRejects: Reject[] = [];

  private constructor(opts: ResolvedSegmentLogOptions, segments: Segment[], fh: FileHandle, next: number, allocated: number, recovery: SegmentLogRecovery) {
    this.opts = opts;
    this.shard = opts.shard;
    this.dir = opts.dir;
    this.segments = segments;
    this.active = segments[segments.length - 1]!;
    this.fh = fh;
    this.next = next;
    this.durableNext = next;
    this.allocated = allocated;
    this.recovery = recovery;
  }

  /**
   * Opens (creating if needed) the log in `options.dir`: recovers the newest segment (cutting a
   * torn tail) and continues offsets after its last good record.
   */
  static async open(options: SegmentLogOptions): Promise<SegmentLog> {
    const opts = validateSegmentLogOptions(options);
    const dir = opts.dir;
    const created = await mkdir(dir, { recursive: true });
    if (created !== undefined) {
      // Make the new directories' own entries durable, innermost first.
      for (let p = dir; ; p = dirname(p)) {
        await fsyncDir(dirname(p));
        if (p === created || dirname(p) === p) break;
      }
    }
    const names = (await readdir(dir)).filter((n) => SEGMENT_RE.test(n)).sort();
    const segments: Segment[] = [];
    for (const name of names) {
      const first = Number(SEGMENT_RE.exec(name)![1]);
      if (!Number.isSafeInteger(first)) throw internalError('log_corrupt', `${join(dir, name)}: segment name is not a safe integer offset; move the file away`);
      segments.push({ first, path: join(dir, name), written: 0, durableBytes: 0, sealed: true, index: [], lastIndexedPos: -INDEX_EVERY_BYTES });
    }
    if (segments.length === 0) {
      const path = join(dir, segmentName(0));
      const fh = await open(path, 'wx');
      await fh.close();
      await fsyncDir(dir);
      segments.push({ first: 0, path, written: 0, durableBytes: 0, sealed: true, index: [], lastIndexedPos: -INDEX_EVERY_BYTES });
    }
    for (let i = 0; i < segments.length - 1; i++) {
      const s = segments[i]!;
      s.written = s.durableBytes = (await stat(s.path)).size;
    }
    const last = segments[segments.length - 1]!;
    last.sealed = false;
    const fh = await open(last.path, ACTIVE_FLAGS);
    try {
      const size = (await fh.stat()).size;
      const cur = new FrameCursor(fh);
      let pos = 0;
      let expected = last.first;
      let reason: string | undefined;
      while (pos < size) {
        const check = await checkFrame(cur, pos, expected, size);
        if (!check.ok) {
          reason = check.reason;
          break;
        }
        if (pos - last.lastIndexedPos >= INDEX_EVERY_BYTES) {
          last.index.push(expected, pos);
          last.lastIndexedPos = pos;
        }
        pos += RECORD_HEADER_BYTES + check.length;
        expected++;
      }
      // Zeros only past the last record: the preallocated end (the process stopped without close()).
      const preallocated = pos < size && (await zerosOnly(fh, pos, size));
      const cut = pos < size && !preallocated ? size - pos : 0;
      if (cut > 0) {
        await fh.truncate(pos);
        await fh.sync();
        opts.logger?.warn(
          { shard: opts.shard, segment: last.path, truncatedBytes: cut, position: pos, reason },
          'log recovery cut a torn or corrupt tail (records never acknowledged)',
        );
      }
      last.written = last.durableBytes = pos;
      const recovery: SegmentLogRecovery = {
        segment: segmentName(last.first),
        records: expected - last.first,
        truncatedBytes: cut,
        reason: cut > 0 ? reason : undefined,
      };
      return new SegmentLog(opts, segments, fh, expected, preallocated ? size : pos, recovery);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** Offset the next appended record will get (appends in flight included). */
  get nextOffset(): number {
    return this.next;
  }

  /** Every record with a lower offset is durable (and readable). */
  get durableNextOffset(): number {
    return this.durableNext;
  }

  /** Lowest offset still stored (segments below it were truncated). */
  get firstOffset(): number {
    return this.segments[0]!.first;
  }

  /** Bytes (framing included) appended whose fsync has not completed yet. */
  get pendingBytes(): number {
    return this.pending;
  }

  /** Set once a write or fsync failed: every later append rejects; reopen the log to recover. */
  get failure(): SluiceError | undefined {
    return this.failed;
  }

  append(payload: Uint8Array): Promise<number> {
    if (this.closing) return Promise.reject(internalError('log_closed', `log of shard ${this.shard} in ${this.dir} is closed; append before close()`));
    if (this.failed !== undefined) return Promise.reject(this.failed);
    if (!(payload instanceof Uint8Array)) return Promise.reject(userError('invalid_record', 'log payload must be a Uint8Array'));
    const length = payload.length;
    if (length > MAX_RECORD_PAYLOAD_BYTES) {
      return Promise.reject(userError('log_record_too_large', `log payload must be at most ${MAX_RECORD_PAYLOAD_BYTES} bytes, got ${length}; split the batch`));
    }
    const offset = this.next++;
    const header = Buffer.allocUnsafe(RECORD_HEADER_BYTES);
    header.writeUInt32LE(length, 4);
    header.writeUInt32LE(offset >>> 0, 8);
    header.writeUInt32LE(Math.floor(offset / TWO_32), 12);
    header.writeUInt32LE(crc32(payload, crc32(header.subarray(4, RECORD_HEADER_BYTES))), 0);
    if (this.qResolves.length === 0) this.qFirst = offset;
    this.qBufs.push(header, payload);
    const bytes = RECORD_HEADER_BYTES + length;
    this.qBytes += bytes;
    this.pending += bytes;
    const promise = new Promise<number>((resolve, reject) => {
      this.qResolves.push(resolve);
      this.qRejects.push(reject);
    });
    this.schedule();
    return promise;
  }

  private schedule(): void {
    if (this.pumpRun !== undefined) return;
    // A microtask, so that appends made in the same tick share the first batch.
    this.pumpRun = Promise.resolve()
      .then(() => this.pump())
      .catch((err: unknown) => {
        // Only a bug gets here (commit errors are handled in pump); still never leave appends hanging.
        this.failed ??= internalError('log_pump_failed', `shard ${this.shard} log: group commit crashed; restart to recover`, err);
        this.rejectQueued(this.failed);
      })
      .finally(() => {
        this.pumpRun = undefined;
        if (this.qResolves.length > 0 || this.rollWaiters.length > 0) this.schedule();
      });
  }

  private async pump(): Promise<void> {
    for (;;) {
      if (this.rollWaiters.length > 0 && !(await this.rollAsked())) return;
      if (this.qResolves.length === 0) return;
      if (this.opts.groupCommitMaxDelayMs > 0) await new Promise((r) => setTimeout(r, this.opts.groupCommitMaxDelayMs));
      if (this.failed !== undefined) {
        this.rejectQueued(this.failed);
        return;
      }
      const bufs = this.qBufs;
      const resolves = this.qResolves;
      const rejects = this.qRejects;
      const first = this.qFirst;
      const bytes = this.qBytes;
      this.qBufs = this.spareBufs;
      this.qResolves = this.spareResolves;
      this.qRejects = this.spareRejects;
      this.qBytes = 0;
      const count = resolves.length;
      try {
        await this.commit(bufs, first, count);
      } catch (err) {
        this.failed = externalError(
          'log_fsync_failed',
          `shard ${this.shard} log: writing or fsyncing ${this.active.path} failed (${err instanceof Error ? err.message : String(err)}); ` +
            'those appends were not acknowledged and this log accepts no more: check the disk, then reopen the log (restart) to recover',
          err,
        );
        this.pending -= bytes;
        for (let i = 0; i < count; i++) rejects[i]!(this.failed);
        this.rejectQueued(this.failed);
        return;
      }
      this.pending -= bytes;
      for (let i = 0; i < count; i++) resolves[i]!(first + i);
      bufs.length = 0;
      resolves.length = 0;
      rejects.length = 0;
      this.spareBufs = bufs;
      this.spareResolves = resolves;
      this.spareRejects = rejects;
    }
  }

  private rejectQueued(err: SluiceError): void {
    const rejects = this.qRejects;
    this.pending -= this.qBytes;
    this.qBufs = [];
    this.qResolves = [];
    this.qRejects = [];
    this.qBytes = 0;
    for (const r of rejects) r(err);
  }

  /** Writes records `first … first+count-1` (`bufs` = header, payload pairs) and fsyncs them, rolling segments as needed. */
  private async commit(bufs: Uint8Array[], first: number, count: number): Promise<void> {
    const limit = this.opts.segmentBytes;
    let runStart = 0;
    let runBytes = 0;
    for (let i = 0; i < count; i++) {
      const recordBytes = bufs[2 * i]!.length + bufs[2 * i + 1]!.length;
      const seg = this.active;
      if (seg.written + runBytes > 0 && seg.written + runBytes + recordBytes > limit) {
        if (runBytes > 0) {
          await this.writeDurable(bufs, first, runStart, i, runBytes);
        }
        await this.rollAt(first + i);
        runStart = i;
        runBytes = 0;
      }
      runBytes += recordBytes;
    }
    await this.writeDurable(bufs, first, runStart, count, runBytes);
  }

  /** Writes records `[from, to)` of the batch at the end of the active segment. */
  private async writeRun(bufs: Uint8Array[], first: number, from: number, to: number, total: number): Promise<void> {
    const seg = this.active;
    let pos = seg.written;
    for (let i = from; i < to; i++) {
      if (pos - seg.lastIndexedPos >= INDEX_EVERY_BYTES) {
        seg.index.push(first + i, pos);
        seg.lastIndexedPos = pos;
      }
      pos += bufs[2 * i]!.length + bufs[2 * i + 1]!.length;
    }
    let iov = from === 0 && to * 2 === bufs.length ? bufs : bufs.slice(2 * from, 2 * to);
    // Past the preallocated end: extend the file by zeros in the same write (see PREALLOCATE_BYTES).
    const end = seg.written + total;
    const zeros = end > this.allocated ? Math.max(0, Math.min(PREALLOCATE_BYTES, this.opts.segmentBytes - end)) : 0;
    if (zeros > 0) {
      ZEROS ??= new Uint8Array(PREALLOCATE_BYTES);
      iov = [...iov, ZEROS.subarray(0, zeros)];
    }
    const writing = total + zeros;
    let written = 0;
    for (;;) {
      const { bytesWritten } = await this.fh.writev(iov, seg.written + written);
      written += bytesWritten;
      if (written >= writing) break;
      if (bytesWritten === 0) throw new Error(`short write to ${seg.path}`);
      // Partial write: continue with what is left.
      let skip = bytesWritten;
      let k = 0;
      while (skip >= iov[k]!.length) skip -= iov[k++]!.length;
      iov = [iov[k]!.subarray(skip), ...iov.slice(k + 1)];
    }
    seg.written = end;
    if (end + zeros > this.allocated) this.allocated = end + zeros;
  }

  /** Cuts the active segment's preallocated zeros (before it is sealed or closed) and syncs the new size. */
  private async trimActive(): Promise<void> {
    if (this.allocated <= this.active.written) return;
    await this.fh.truncate(this.active.written);
    await this.fh.sync();
    this.allocated = this.active.written;
  }

  /** Writes records `[from, to)` of the batch (durable on return: O_DSYNC) and moves the durable marks past them. */
  private async writeDurable(bufs: Uint8Array[], first: number, from: number, to: number, total: number): Promise<void> {
    const seg = this.active;
    const t0 = performance.now();
    await this.writeRun(bufs, first, from, to, total);
    if (this.opts.fsync !== undefined) await this.opts.fsync(this.fh.fd);
    const ms = performance.now() - t0;
    seg.durableBytes = seg.written;
    this.durableNext = first + to;
    if (this.opts.onFsync !== undefined) {
      try {
        this.opts.onFsync(ms, to - from, total);
      } catch {
        // A metrics hook must not break durability.
      }
    }
  }

  /**
   * Seals the active segment now, unless it holds no record, so that `truncateBefore` can delete
   * it once everything in it is consumed (erasure: engine/erasure-job.ts); later appends go to a
   * new segment. Runs in the pump between two group commits (never while one is written).
   * Resolves with the first offset of the active segment afterwards: every record below it is in
   * a sealed segment. A failure to create the new segment fails the log, as a failed roll during
   * appends does.
   */
  roll(): Promise<number> {
    if (this.closing) return Promise.reject(internalError('log_closed', `log of shard ${this.shard} in ${this.dir} is closed; roll before close()`));
    if (this.failed !== undefined) return Promise.reject(this.failed);
    const done = new Promise<number>((resolve, reject) => this.rollWaiters.push({ resolve, reject }));
    this.schedule();
    return done;
  }

  /** The pump's side of `roll()`: everything taken so far is written and fsync'd; false when the log failed. */
  private async rollAsked(): Promise<boolean> {
    const waiters = this.rollWaiters;
    this.rollWaiters = [];
    try {
      if (this.failed !== undefined) throw this.failed;
      if (this.active.written > 0) await this.rollAt(this.durableNext);
    } catch (err) {
      this.failed ??= externalError('log_fsync_failed', `shard ${this.shard} log: sealing ${this.active.path} failed (${err instanceof Error ? err.message : String(err)}); reopen the log (restart) to recover`, err);
      for (const w of waiters) w.reject(this.failed);
      this.rejectQueued(this.failed);
      return false;
    }
    for (const w of waiters) w.resolve(this.active.first);
    return true;
  }

  /** Seals the (fully fsync'd) active segment and starts a new one at `first`. */
  private async rollAt(first: number): Promise<void> {
    // Sealed segments end at their last record: readers take a sealed segment's size as its end.
    await this.trimActive();
    const path = join(this.dir, segmentName(first));
    const fh = await open(path, ACTIVE_FLAGS | fsConstants.O_CREAT | fsConstants.O_EXCL);
    try {
      await fsyncDir(this.dir);
    } catch (err) {
      await fh.close();
      throw err;
    }
    const old = this.fh;
    this.active.sealed = true;
    const seg: Segment = { first, path, written: 0, durableBytes: 0, sealed: false, index: [], lastIndexedPos: -INDEX_EVERY_BYTES };
    this.segments.push(seg);
    this.active = seg;
    this.fh = fh;
    this.allocated = 0;
    await old.close();
  }

  /** Index of the last segment whose first offset is <= `offset`, or 0. */
  private segmentIndexFor(offset: number): number {
    const segs = this.segments;
    let lo = 0;
    let hi = segs.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (segs[mid]!.first <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /**
   * Yields durable records with `offset >= fromOffset` in offset order, until it has caught up
   * with what is durable (records made durable while reading are included). Starts at the
   * lowest stored offset if `fromOffset` was truncated away. Throws `log_corrupt` (internal) on
   * a damaged record, naming the file and byte position.
   */
  async *read(fromOffset: number): AsyncGenerator<LogRecord, void, undefined> {
    if (!Number.isSafeInteger(fromOffset) || fromOffset < 0) {
      throw userError('invalid_offset', `read(fromOffset) needs an integer offset >= 0, got ${String(fromOffset)}`);
    }
    let seg: Segment | undefined = this.segments[this.segmentIndexFor(fromOffset)]!;
    let expected = seg.first;
    let pos = 0;
    const idx = seg.index;
    for (let i = idx.length - 2; i >= 0; i -= 2) {
      if (idx[i]! <= fromOffset) {
        expected = idx[i]!;
        pos = idx[i + 1]!;
        break;
      }
    }
    while (seg !== undefined) {
      let fh: FileHandle;
      try {
        fh = await open(seg.path, 'r');
      } catch (err) {
        if (isErrno(err, 'ENOENT')) {
          throw userError('log_truncated', `${seg.path} was deleted by truncateBefore while being read; read from an offset >= ${this.firstOffset}`, err);
        }
        throw err;
      }
      try {
        const cur = new FrameCursor(fh);
        for (;;) {
          const limit = seg.durableBytes;
          if (pos >= limit) {
            if (!seg.sealed) return;
            break;
          }
          const check = await checkFrame(cur, pos, expected, limit);
          if (!check.ok) {
            throw internalError(
              'log_corrupt',
              `${seg.path}: corrupt record at byte ${pos} (offset ${expected}): ${check.reason}; restore the segment from a backup or truncate the log past it`,
            );
          }
          if (expected >= fromOffset) {
            const start = pos - cur.start + RECORD_HEADER_BYTES;
            const payload = new Uint8Array(check.length);
            payload.set(cur.buf.subarray(start, start + check.length));
            yield { offset: expected, payload };
          }
          pos += RECORD_HEADER_BYTES + check.length;
          expected++;
        }
      } finally {
        await fh.close();
      }
      const i = this.segmentIndexFor(expected);
      const nextSeg: Segment = this.segments[i]!;
      if (nextSeg.first !== expected) {
        if (expected < this.firstOffset) {
          throw userError('log_truncated', `offset ${expected} was deleted by truncateBefore while being read; read from an offset >= ${this.firstOffset}`);
        }
        if (expected < this.durableNext) {
          throw internalError('log_corrupt', `${seg.path} ends before offset ${expected}, but no segment starts there; the log has a gap`);
        }
        return;
      }
      seg = nextSeg;
      pos = 0;
    }
  }

  /**
   * Deletes whole segments whose records are all below `offset`. The newest segment is always
   * kept (its name carries the offsets forward), so offsets stay monotonic across reopen.
   */
  async truncateBefore(offset: number): Promise<void> {
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw userError('invalid_offset', `truncateBefore(offset) needs an integer offset >= 0, got ${String(offset)}`);
    }
    const segs = this.segments;
    let n = 0;
    while (n < segs.length - 1 && segs[n + 1]!.first - 1 < offset) n++;
    if (n === 0) return;
    const doomed = segs.splice(0, n);
    for (const s of doomed) {
      try {
        await unlink(s.path);
      } catch (err) {
        if (!isErrno(err, 'ENOENT')) throw err;
      }
    }
    await fsyncDir(this.dir);
  }

  /** Waits for queued and in-flight appends to settle, then closes the segment file. Idempotent. */
  close(): Promise<void> {
    this.closing = true;
    return (this.closed ??= (async () => {
      while (this.pumpRun !== undefined) await this.pumpRun;
      try {
        // A failed log is left as it is: recovery on the next open decides what its tail holds.
        if (this.failed === undefined) await this.trimActive();
      } finally {
        await this.fh.close();
      }
    })());
  }
}

/** Opens `dir/shard-<n>/` for n = 0 … shards-1 (closing those opened if one fails). */
export async function openShardLogs(
  dir: string,
  shards: number,
  options: Omit<SegmentLogOptions, 'dir' | 'shard'> = {},
): Promise<SegmentLog[]> {
  if (!Number.isSafeInteger(shards) || shards < 1) throw userError('invalid_option', `shards must be an integer >= 1, got ${String(shards)}`);
  const logs: SegmentLog[] = [];
  try {
    for (let s = 0; s < shards; s++) logs.push(await SegmentLog.open({ ...options, dir: join(dir, `shard-${s}`), shard: s }));
  } catch (err) {
    await Promise.allSettled(logs.map((l) => l.close()));
    throw err;
  }
  return logs;
}
