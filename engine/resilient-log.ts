/**
 * A shard log that comes back by itself after a failed write (a full disk): the SegmentLog it
 * wraps refuses every append after one failed (never acknowledge what could be lost), so this
 * wrapper closes it and opens the same directory again — recovery keeps every fully framed
 * record — once the disk has room, without a restart.
 *
 *   append ok ───────────────────────────────────────────────────────────▶ offset
 *   append fails ─▶ 503 to the client (ingest) ─▶ episode: /readyz, /metrics, one log line
 *        └─▶ backoff ─▶ room on the disk (statfs)? ─no─▶ backoff again
 *                                  │ yes
 *                          close ─▶ open (torn tail cut) ─▶ onReopened(fresh) ─▶ swap ─▶ appends resume
 *
 * Records the failed write left fully framed on disk reappear after the reopen (their appends
 * were rejected, never acknowledged): `onReopened` runs before any new append reaches the fresh
 * log, so the engine submits them in offset order first (duplicates of what clients resend at
 * worst, which dedup removes).
 */
import { statfs } from 'node:fs/promises';
import type { LogRecord, ShardLog } from '../log/log.js';
import type { SegmentLog } from '../log/segment-log.js';
import { externalError } from '../common/errors.js';
import type { FailureEpisodes } from './failure-episodes.js';

export interface ResilientLogDeps {
  /** Opens the underlying log (same directory and options each time). */
  open(): Promise<SegmentLog>;
  /** Directory checked for free space before a reopen. */
  dir: string;
  /** Free bytes the disk must have before a reopen is tried. Default 1 MiB. */
  minFreeBytes?: number;
  /** Target name in episodes and metrics, e.g. `log-shard-3`. */
  target: string;
  episodes: FailureEpisodes;
  /** After a reopen, before appends resume: e.g. submit records that reappeared. */
  onReopened?(fresh: SegmentLog): Promise<void>;
  onReopen?(): void;
}

export class ResilientLog implements ShardLog {
  private current: SegmentLog;
  private reopening: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    log: SegmentLog,
    private readonly deps: ResilientLogDeps,
  ) {
    this.current = log;
  }

  get shard(): number {
    return this.current.shard;
  }

  get nextOffset(): number {
    return this.current.nextOffset;
  }

  get pendingBytes(): number {
    return this.current.pendingBytes;
  }

  /** Every record with a lower offset is durable (and readable). */
  get durableNextOffset(): number {
    return this.current.durableNextOffset;
  }

  /** The log underneath now (changes after a reopen). */
  get segmentLog(): SegmentLog {
    return this.current;
  }

  /** True while appends are refused (failed, waiting to reopen). */
  get failed(): boolean {
    return this.current.failure !== undefined || this.reopening !== undefined || this.timer !== undefined;
  }

  append(payload: Uint8Array): Promise<number> {
    const log = this.current;
    if (this.reopening !== undefined || (log.failure !== undefined && !this.closed)) {
      this.scheduleReopen();
      return Promise.reject(log.failure ?? externalError('log_reopening', `log of shard ${log.shard} is being reopened after a failed write; retry`));
    }
    return log.append(payload).then(
      (offset) => offset,
      (err: unknown) => {
        if (log.failure !== undefined && !this.closed) {
          if (!this.deps.episodes.isFailing(this.deps.target)) this.deps.episodes.failed(this.deps.target, log.failure);
          this.scheduleReopen();
        }
        throw err;
      },
    );
  }

  read(fromOffset: number): AsyncIterable<LogRecord> {
    return this.current.read(fromOffset);
  }

  truncateBefore(offset: number): Promise<void> {
    return this.current.truncateBefore(offset);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.reopening) await this.reopening.catch(() => undefined);
    await this.current.close();
  }

  private scheduleReopen(): void {
    if (this.closed || this.timer !== undefined || this.reopening !== undefined) return;
    const delay = Math.max(1, this.deps.episodes.delayOf(this.deps.target));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.reopening = this.reopen().finally(() => {
        this.reopening = undefined;
      });
    }, delay);
    this.timer.unref();
  }

  private async reopen(): Promise<void> {
    if (this.closed) return;
    try {
      const fs = await statfs(this.deps.dir);
      const free = fs.bavail * fs.bsize;
      const need = this.deps.minFreeBytes ?? 1 << 20;
      if (free < need) throw externalError('disk_full', `the disk of ${this.deps.dir} has ${free} bytes free, less than the ${need} a reopen waits for`);
      const old = this.current;
      await old.close().catch(() => undefined);
      const fresh = await this.deps.open();
      await this.deps.onReopened?.(fresh);
      this.current = fresh;
      this.deps.onReopen?.();
      this.deps.episodes.succeeded(this.deps.target);
    } catch (err) {
      this.deps.episodes.failed(this.deps.target, err);
      this.reopening = undefined;
      this.scheduleReopen();
    }
  }
}
