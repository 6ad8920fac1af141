/**
 * Reads a shard's segment log (segment-log.ts) from another process than the one appending to
 * it: the engine's. Read-only: it never recovers, truncates or writes a file.
 *
 * The writer tells the reader how far the log is durable (its durable mark, an offset); the reader
 * reads records below that mark only, so it never sees bytes that are not fsync'd yet (a torn
 * tail is only ever past the mark). Segments are listed anew on every read, so it follows rolls
 * and truncations; it keeps the position where its last read stopped, so a reader that follows
 * the log's head reads each byte once.
 *
 *   readRange(from, until) ──▶ segment holding `from` ──▶ frames (CRC, offset checked) ──▶ next segment …
 *                                                         stop at `until`, maxRecords or maxBytes
 */
import { open, readdir, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { internalError, userError } from '../common/errors.js';
import type { LogRecord } from './log.js';
import { checkFrame, FrameCursor, RECORD_HEADER_BYTES, SEGMENT_RE } from './segment-log.js';

/**
 * Bytes a read fetches at least. The active segment's file runs up to 1 MiB of preallocated zeros
 * past its last record (segment-log.ts), and a reader following the head reads from its last
 * record on: a small chunk keeps it from copying those zeros on every range.
 */
const READ_CHUNK_BYTES = 128 * 1024;

interface Open {
  first: number;
  path: string;
  fh: FileHandle;
  cur: FrameCursor;
  /** Where the last read stopped in this segment: the next record's offset and file position. */
  next: number;
  pos: number;
}

export class SegmentLogReader {
  private current: Open | undefined;

  /** `dir`: the shard's log directory (`<data>/log/shard-<n>`). */
  constructor(readonly dir: string) {}

  /**
   * Records with offsets in [from, until), in order, at most `maxRecords` and — past the first
   * record — `maxBytes` of payload. `until` must not exceed the writer's durable mark. Payloads
   * own their buffers (transferable). Throws `log_truncated` when `from` is below the oldest
   * segment, `log_corrupt` on a damaged record.
   */
  async readRange(from: number, until: number, maxRecords = Infinity, maxBytes = Infinity): Promise<LogRecord[]> {
    const out: LogRecord[] = [];
    let bytes = 0;
    let offset = from;
    // The segment's size, stat'ed once per read and segment (again only when a frame does not fit:
    // the file grew since): one fstat per record was a visible share of the engine's CPU.
    let sized: Open | undefined;
    let size = 0;
    while (offset < until && out.length < maxRecords && (out.length === 0 || bytes < maxBytes)) {
      const seg = await this.segmentFor(offset);
      if (sized !== seg) {
        size = (await seg.fh.stat()).size;
        sized = seg;
      }
      let check = await checkFrame(seg.cur, seg.pos, seg.next, size);
      if (!check.ok) {
        // What the cursor read past the writer's last record then (preallocated zeros, a record
        // being written) is stale now: read it again.
        seg.cur.invalidate();
        size = (await seg.fh.stat()).size;
        // The end of this segment: the record is in the next one (the writer rolled).
        if (seg.pos >= size) {
          await this.moveTo(offset, true);
          sized = undefined;
          continue;
        }
        check = await checkFrame(seg.cur, seg.pos, seg.next, size);
        if (!check.ok) throw internalError('log_corrupt', `${seg.path}: record ${seg.next} at byte ${seg.pos} below the durable mark ${until} is damaged (${check.reason})`);
      }
      if (seg.next >= from) {
        const start = seg.pos - seg.cur.start + RECORD_HEADER_BYTES;
        const payload = new Uint8Array(check.length);
        payload.set(seg.cur.buf.subarray(start, start + check.length));
        out.push({ offset: seg.next, payload });
        bytes += check.length;
      }
      seg.pos += RECORD_HEADER_BYTES + check.length;
      seg.next++;
      offset = seg.next;
    }
    return out;
  }

  async close(): Promise<void> {
    await this.current?.fh.close();
    this.current = undefined;
  }

  /** The open segment positioned at `offset` (continuing where the last read stopped when it can). */
  private async segmentFor(offset: number): Promise<Open> {
    const c = this.current;
    if (c !== undefined && c.next === offset) return c;
    return this.moveTo(offset, false);
  }

  /** Opens the segment holding `offset` and scans to it. `rolled`: the current segment ended before it. */
  private async moveTo(offset: number, rolled: boolean): Promise<Open> {
    const firsts = (await readdir(this.dir))
      .map((n) => SEGMENT_RE.exec(n))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[1]))
      .sort((a, b) => a - b);
    if (firsts.length === 0 || offset < firsts[0]!) {
      throw userError('log_truncated', `${this.dir}: offset ${offset} is below the oldest segment (${firsts[0] ?? 'none'}); it was truncated`);
    }
    let first = firsts[0]!;
    for (const f of firsts) if (f <= offset) first = f;
    if (rolled && first !== offset) {
      throw internalError('log_corrupt', `${this.dir}: segment ${this.current?.first} ends before offset ${offset}, but no segment starts there`);
    }
    if (this.current?.first !== first) {
      await this.current?.fh.close();
      const path = join(this.dir, `${String(first).padStart(20, '0')}.seg`);
      const fh = await open(path, 'r');
      this.current = { first, path, fh, cur: new FrameCursor(fh, READ_CHUNK_BYTES), next: first, pos: 0 };
    }
    const seg = this.current!;
    if (seg.next > offset) {
      seg.next = first;
      seg.pos = 0;
    }
    // Skip the records before `offset` (a fresh segment, or a reader moved backwards).
    while (seg.next < offset) {
      let check = await checkFrame(seg.cur, seg.pos, seg.next, (await seg.fh.stat()).size);
      if (!check.ok) {
        seg.cur.invalidate(); // stale bytes past the writer's record of then, as in readRange
        check = await checkFrame(seg.cur, seg.pos, seg.next, (await seg.fh.stat()).size);
      }
      if (!check.ok) throw internalError('log_corrupt', `${seg.path}: record ${seg.next} at byte ${seg.pos} is damaged (${check.reason}) before offset ${offset}`);
      seg.pos += RECORD_HEADER_BYTES + check.length;
      seg.next++;
    }
    return seg;
  }
}
