/**
 * Per-key token buckets: `rate` tokens (events) per second, up to `burst`. Time is passed in,
 * so tests are deterministic.
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
    if (b.tokens >= n) {
      b.tokens -= n;
      return 0;
    }
    return Math.max(1, Math.ceil(((n - b.tokens) * 1000) / this.rate));
  }
}
