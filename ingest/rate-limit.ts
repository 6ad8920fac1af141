/**
 * Per-key token buckets: `rate` tokens (events) per second, up to `burst`. Time is passed in,
 * so tests are deterministic.
 *
 * A request of more events than the burst is let through once the bucket is full and leaves it
 * in debt (negative), so the key's average rate still holds: refusing it would refuse it for ever,
 * and its Retry-After would promise a success that never comes.
 */
export class TokenBuckets {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly rate: number,
    private readonly burst: number,
  ) {}

  /** Takes `n` tokens for `key`; returns 0 on success, else ms until they would be available (nothing taken). */
  take(key: string, n: number, nowMs: number): number {
    let b = this.buckets.get(key);
    if (!b) this.buckets.set(key, (b = { tokens: this.burst, at: nowMs }));
    b.tokens = Math.min(this.burst, b.tokens + ((nowMs - b.at) * this.rate) / 1000);
    b.at = nowMs;
    const needed = Math.min(n, this.burst);
    if (b.tokens >= needed) {
      b.tokens -= n;
      return 0;
    }
    return Math.max(1, Math.ceil(((needed - b.tokens) * 1000) / this.rate));
  }
}
