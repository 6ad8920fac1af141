/**
 * Draws an index with probability proportional to 1/(rank+1)^s among the indices currently
 * enabled — a Fenwick tree over zipf weights, so enabling, disabling and drawing are O(log n).
 * The generator disables a user while it is in a session or resting between sessions, so heavy
 * users are picked as often as their schedule allows without a scan over dormant ones.
 */
export class ZipfPicker {
  private readonly tree: Float64Array;
  private readonly weight: Float64Array;
  private readonly on: Uint8Array;
  private total = 0;
  /** How many indices are enabled. */
  enabled = 0;

  /** `n` indices, all enabled (or none), rank i weighted 1/(i+1)^exponent. */
  constructor(
    readonly n: number,
    exponent: number,
    enabled = true,
  ) {
    this.tree = new Float64Array(n + 1);
    this.weight = new Float64Array(n);
    this.on = new Uint8Array(n);
    for (let i = 0; i < n; i++) this.weight[i] = 1 / Math.pow(i + 1, exponent);
    // O(n) Fenwick construction.
    for (let i = 1; i <= n; i++) {
      this.tree[i]! += this.weight[i - 1]!;
      const j = i + (i & -i);
      if (j <= n) this.tree[j]! += this.tree[i]!;
    }
    this.on.fill(1);
    this.enabled = n;
    for (let i = 0; i < n; i++) this.total += this.weight[i]!;
    if (!enabled) for (let i = 0; i < n; i++) this.set(i, false);
  }

  isEnabled(i: number): boolean {
    return this.on[i] === 1;
  }

  set(i: number, enabled: boolean): void {
    const v = enabled ? 1 : 0;
    if (this.on[i] === v) return;
    this.on[i] = v;
    this.enabled += enabled ? 1 : -1;
    const delta = enabled ? this.weight[i]! : -this.weight[i]!;
    this.total += delta;
    for (let j = i + 1; j <= this.n; j += j & -j) this.tree[j]! += delta;
  }

  /** An enabled index for a uniform draw `x` in [0, 1); -1 when none is enabled. */
  pick(x: number): number {
    if (this.enabled === 0) return -1;
    let target = x * this.total;
    let pos = 0;
    let step = 1;
    while (step * 2 <= this.n) step *= 2;
    for (; step > 0; step >>= 1) {
      const next = pos + step;
      if (next <= this.n && this.tree[next]! <= target) {
        pos = next;
        target -= this.tree[next]!;
      }
    }
    // Floating-point drift can land on a disabled index: take the next enabled one.
    for (let k = 0; k < this.n; k++) {
      const i = (pos + k) % this.n;
      if (this.on[i] === 1) return i;
    }
    return -1;
  }
}
