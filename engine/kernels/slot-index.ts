/**
 * An index from user fingerprint keys (non-negative integers below 2^53: kernels/fingerprint
 * `fingerprintKey`) to slots of a slot table whose `keyOf` array already holds each slot's key:
 * open addressing with linear probing over an Int32Array of slots, deletion by backward shift (no
 * tombstones). The index stores no keys of its own: a probe compares `keyOf[slot]` with the key
 * sought, so every method takes the owner's current `keyOf` (it is replaced when the table grows),
 * and a slot may be indexed only while `keyOf[slot]` is its key. The keys are hashes already, so
 * their low 32 bits pick the bucket.
 *
 * Memory: 4 B a bucket at a load of 0.35–0.7 (6–11 B an entry), where a map holding the keys too
 * (Float64 key + Int32 value) takes 17–34 B. The session table's user → latest session slot is one
 * entry per active user.
 */
const EMPTY = -1;
const MIN_BUCKETS = 16;

export class SlotIndex {
  private buckets = new Int32Array(MIN_BUCKETS).fill(EMPTY);
  private mask = MIN_BUCKETS - 1;
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** The slot indexed under `key`, or −1 when none is. */
  get(key: number, keyOf: Float64Array): number {
    const buckets = this.buckets;
    const mask = this.mask;
    for (let i = (key >>> 0) & mask; ; i = (i + 1) & mask) {
      const s = buckets[i]!;
      if (s === EMPTY || keyOf[s] === key) return s;
    }
  }

  /** Indexes `slot` under `key` (replacing the slot indexed there); `keyOf[slot]` must be `key`. */
  set(key: number, slot: number, keyOf: Float64Array): void {
    const buckets = this.buckets;
    const mask = this.mask;
    for (let i = (key >>> 0) & mask; ; i = (i + 1) & mask) {
      const s = buckets[i]!;
      if (s === EMPTY) {
        buckets[i] = slot;
        if (++this.count > (mask + 1) * 0.7) this.resize((mask + 1) * 2, keyOf);
        return;
      }
      if (keyOf[s] === key) {
        buckets[i] = slot;
        return;
      }
    }
  }

  /** Removes `key`; true when it was there. */
  delete(key: number, keyOf: Float64Array): boolean {
    const buckets = this.buckets;
    const mask = this.mask;
    let i = (key >>> 0) & mask;
    for (; ; i = (i + 1) & mask) {
      const s = buckets[i]!;
      if (s === EMPTY) return false;
      if (keyOf[s] === key) break;
    }
    // Backward shift: move up every later entry of the run whose home bucket is not between the hole and it.
    for (let j = (i + 1) & mask; buckets[j] !== EMPTY; j = (j + 1) & mask) {
      const home = (keyOf[buckets[j]!]! >>> 0) & mask;
      const stays = i < j ? home > i && home <= j : home > i || home <= j;
      if (stays) continue;
      buckets[i] = buckets[j]!;
      i = j;
    }
    buckets[i] = EMPTY;
    this.count--;
    if (this.count < (mask + 1) * 0.15 && mask + 1 > MIN_BUCKETS) this.resize((mask + 1) / 2, keyOf);
    return true;
  }

  /** Every indexed slot (in bucket order). */
  *slots(): Generator<number> {
    for (const s of this.buckets) if (s !== EMPTY) yield s;
  }

  private resize(n: number, keyOf: Float64Array): void {
    const old = this.buckets;
    this.buckets = new Int32Array(n).fill(EMPTY);
    this.mask = n - 1;
    this.count = 0;
    for (const s of old) if (s !== EMPTY) this.set(keyOf[s]!, s, keyOf);
  }
}
