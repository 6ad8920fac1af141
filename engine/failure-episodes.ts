/**
 * Failure episodes of retried engine work (a shard's checkpoint, the coordinator's store steps,
 * a log on a full disk): counts every failed attempt, backs off exponentially, and reports an
 * episode — not each retry — in the log, in /readyz and in /metrics.
 *
 *   ok ──failed()──▶ failing (log once: "… failing", /readyz names it, gauge = consecutive)
 *                      │  failed() again: counter +1, gauge +1, longer backoff, no log line
 *                      ▼ succeeded()
 *                    ok (log once: "… recovered after N failures", /readyz clear, gauge 0)
 *   stop(): a failure that cannot be retried — stays in /readyz and /metrics until restart.
 */
import type { Logger } from 'pino';
import { classifyError, isDiskFull, type SluiceError } from '../common/errors.js';
import { readiness } from '../ingest/metrics.js';

/** Wait before the attempt after the n-th consecutive failure (n ≥ 1): min(max, base × 2^(n−1)) ms. */
export function backoffMs(consecutive: number, baseMs: number, maxMs: number): number {
  if (consecutive <= 0) return 0;
  return Math.min(maxMs, baseMs * 2 ** Math.min(consecutive - 1, 30));
}

/** What an episode reports to; `readinessPrefix` makes readiness keys unique per owner (e.g. per coordinator). */
export interface FailureEpisodesDeps {
  log: Logger;
  /** e.g. 'checkpoint' or 'log': names the work in messages. */
  what: string;
  readinessPrefix: string;
  baseMs: number;
  maxMs: number;
  /** Metric hooks (labels are the target). */
  onAttemptFailed(target: string, code: string): void;
  onStateChanged(target: string, consecutive: number, stopped: boolean): void;
  now?: () => number;
}

interface Episode {
  consecutive: number;
  sinceMs: number;
  nextAttemptMs: number;
  error: SluiceError;
  stopped: boolean;
}

export class FailureEpisodes {
  private readonly episodes = new Map<string, Episode>();
  private readonly now: () => number;

  constructor(private readonly deps: FailureEpisodesDeps) {
    this.now = deps.now ?? Date.now;
  }

  /** Records a failed attempt of `target`; returns the delay before its next attempt (ms). */
  failed(target: string, err: unknown): number {
    const error = classifyError(err);
    const code = isDiskFull(err) ? 'disk_full' : error.code;
    const now = this.now();
    let e = this.episodes.get(target);
    if (!e) {
      e = { consecutive: 0, sinceMs: now, nextAttemptMs: now, error, stopped: false };
      this.episodes.set(target, e);
      this.deps.log.error({ target, code, domain: error.domain, err: error }, `${this.deps.what} of ${target} failing (${code}); retrying with backoff, nothing acknowledged is lost`);
    }
    e.consecutive++;
    e.error = error;
    const delay = backoffMs(e.consecutive, this.deps.baseMs, this.deps.maxMs);
    e.nextAttemptMs = now + delay;
    this.deps.onAttemptFailed(target, code);
    this.deps.onStateChanged(target, e.consecutive, false);
    readiness.set(this.key(target), `${this.deps.what} of ${target} failing since ${new Date(e.sinceMs).toISOString()} (${e.consecutive} attempts, ${code}): ${error.message}`);
    return delay;
  }

  /** Records a successful attempt; ends the target's episode (one log line) if it had one. */
  succeeded(target: string): void {
    const e = this.episodes.get(target);
    if (!e || e.stopped) return;
    this.episodes.delete(target);
    this.deps.log.warn({ target, failures: e.consecutive, durationMs: this.now() - e.sinceMs }, `${this.deps.what} of ${target} recovered after ${e.consecutive} failed attempt(s)`);
    this.deps.onStateChanged(target, 0, false);
    readiness.clear(this.key(target));
  }

  /** A failure that cannot be retried: `target` stays stopped (and reported) until a restart. */
  stop(target: string, err: unknown): void {
    const error = classifyError(err);
    const e = this.episodes.get(target);
    if (e?.stopped) return;
    this.episodes.set(target, { consecutive: (e?.consecutive ?? 0) + 1, sinceMs: this.now(), nextAttemptMs: Number.POSITIVE_INFINITY, error, stopped: true });
    this.deps.log.error({ target, code: error.code, domain: error.domain, err: error }, `${target} stopped by a failure that cannot be retried (${error.code}); the rest goes on — restart Sluice to recover it from its last checkpoint`);
    this.deps.onAttemptFailed(target, error.code);
    this.deps.onStateChanged(target, (e?.consecutive ?? 0) + 1, true);
    readiness.set(this.key(target), `${target} stopped (${error.code}): ${error.message}; restart to recover`);
  }

  isFailing(target: string): boolean {
    return this.episodes.has(target);
  }

  isStopped(target: string): boolean {
    return this.episodes.get(target)?.stopped === true;
  }

  /** True while `target` is failing and its backoff has not elapsed. */
  waiting(target: string): boolean {
    const e = this.episodes.get(target);
    return e !== undefined && !e.stopped && this.now() < e.nextAttemptMs;
  }

  /** Milliseconds until `target`'s next attempt is due (0 when it is not failing or is due). */
  delayOf(target: string): number {
    const e = this.episodes.get(target);
    return e === undefined || e.stopped ? 0 : Math.max(0, e.nextAttemptMs - this.now());
  }

  /** Earliest next attempt over the failing (not stopped) targets, epoch ms; undefined when none. */
  nextAttemptMs(): number | undefined {
    let next: number | undefined;
    for (const e of this.episodes.values()) if (!e.stopped && (next === undefined || e.nextAttemptMs < next)) next = e.nextAttemptMs;
    return next;
  }

  /** Failing or stopped targets. */
  get size(): number {
    return this.episodes.size;
  }

  /** Targets currently failing (not stopped), for the failing gauge. */
  failingCount(): number {
    let n = 0;
    for (const e of this.episodes.values()) if (!e.stopped) n++;
    return n;
  }

  /** One line per failing or stopped target, e.g. `checkpoint of shard-3: disk_full (4 attempts)`. */
  describe(): string[] {
    return [...this.episodes].map(([t, e]) => `${this.deps.what} of ${t}: ${e.stopped ? 'stopped' : 'failing'} (${e.error.code}, ${e.consecutive} attempts)`);
  }

  /** Forgets every episode and its readiness conditions (owner closing). */
  clear(): void {
    this.episodes.clear();
    readiness.clearPrefix(this.deps.readinessPrefix);
  }

  /** Prefix of this owner's readiness keys (another owner's episodes can nest under it). */
  get prefix(): string {
    return this.deps.readinessPrefix;
  }

  private key(target: string): string {
    return `${this.deps.readinessPrefix}${this.deps.what}:${target}`;
  }
}
