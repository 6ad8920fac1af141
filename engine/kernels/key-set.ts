/**
 * A set of user fingerprint keys (non-negative integers below 2^53: kernels/fingerprint
 * `fingerprintKey`) in one Float64Array, open addressing with linear probing. The keys are
 * hashes already, so their low 32 bits pick the slot.
 *
 * Memory: 8 B a slot at a load of 0.35–0.7, so 11–23 B a key, where a `Set<number>` of such
 * keys (each a heap number) takes 25–40 B. Distinct users per window are most of the aggregate's
 * state (bench/state-per-user.ts). Keys are never removed (a window's set only grows, and is
 * dropped whole when the window is emitted).
 */
const EMPTY = -1;
const MIN_SLOTS = 8;

export class KeySet implements Iterable<number> {
  private slots: Float64Array;
  private mask: number;
  private count = 0;

  constructor(expected = 0) {
    let n = MIN_SLOTS;
    while (n * 0.7 < expected) n *= 2;
    this.slots = new Float64Array(n).fill(EMPTY);
    this.mask = n - 1;
  }

  get size(): number {
    return this.count;
  }

  /** Adds `key`; true when it was not in the set. */
  add(key: number): boolean {
    const slots = this.slots;
    const mask = this.mask;
    for (let i = (key >>> 0) & mask; ; i = (i + 1) & mask) {
      const k = slots[i]!;
      if (k === key) return false;
      if (k === EMPTY) {
        slots[i] = key;
        if (++this.count > (mask + 1) * 0.7) this.grow();
        return true;
      }
    }
  }

  has(key: number): boolean {
    const slots = this.slots;
    const mask = this.mask;
    for (let i = (key >>> 0) & mask; ; i = (i + 1) & mask) {
      const k = slots[i]!;
      if (k === key) return true;
      if (k === EMPTY) return false;
    }
  }

  /** Adds every key of `other`. */
  addAll(other: KeySet): void {
    for (const k of other.slots) if (k !== EMPTY) this.add(k);
  }

  /** The keys, in slot order, as a new array. */
  toFloat64Array(): Float64Array {
    const out = new Float64Array(this.count);
    let n = 0;
    for (const k of this.slots) if (k !== EMPTY) out[n++] = k;
    return out;
  }

  *[Symbol.iterator](): Iterator<number> {
    for (const k of this.slots) if (k !== EMPTY) yield k;
  }

  private grow(): void {
    const old = this.slots;
    const n = old.length * 2;
    this.slots = new Float64Array(n).fill(EMPTY);
    this.mask = n - 1;
    this.count = 0;
    for (const k of old) if (k !== EMPTY) this.add(k);
  }
}
