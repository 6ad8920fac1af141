/**
 * A map from user fingerprint keys (non-negative integers below 2^53: kernels/fingerprint
 * `fingerprintKey`) to non-negative int32 values, in a Float64Array of keys and an Int32Array of
 * values: open addressing with linear probing, deletion by backward shift (no tombstones). The keys
 * are hashes already, so their low 32 bits pick the slot.
 *
 * Memory: 12 B a slot at a load of 0.35–0.7 (17–34 B an entry), where a `Map<number, number>` of
 * such keys takes ≈ 45–60 (each key a heap number, three words an entry, buckets). The session
 * table's user → latest session index is one entry per active user.
 */
const EMPTY = -1;
const MIN_SLOTS = 16;

export class KeyMap {
  private keys: Float64Array;
  private values: Int32Array;
  private mask: number;
  private count = 0;

  constructor() {
    this.keys = new Float64Array(MIN_SLOTS).fill(EMPTY);
    this.values = new Int32Array(MIN_SLOTS);
    this.mask = MIN_SLOTS - 1;
  }

  get size(): number {
    return this.count;
  }

  /** The value of `key`, or −1 when it has none. */
  get(key: number): number {
    const keys = this.keys;
    const mask = this.mask;
    for (let i = (key >>> 0) & mask; ; i = (i + 1) & mask) {
      const k = keys[i]!;
      if (k === key) return this.values[i]!;
      if (k === EMPTY) return -1;
    }
  }

  set(key: number, value: number): void {
    const keys = this.keys;
    const mask = this.mask;
    for (let i = (key >>> 0) & mask; ; i = (i + 1) & mask) {
      const k = keys[i]!;
      if (k === key) {
        this.values[i] = value;
        return;
      }
      if (k === EMPTY) {
        keys[i] = key;
        this.values[i] = value;
        if (++this.count > (mask + 1) * 0.7) this.resize((mask + 1) * 2);
        return;
      }
    }
  }

  /** Removes `key`; true when it was there. */
  delete(key: number): boolean {
    const keys = this.keys;
    const values = this.values;
    const mask = this.mask;
    let i = (key >>> 0) & mask;
    for (; ; i = (i + 1) & mask) {
      const k = keys[i]!;
      if (k === key) break;
      if (k === EMPTY) return false;
    }
    // Backward shift: move up every later entry of the run whose home slot is not between the hole and it.
    for (let j = (i + 1) & mask; keys[j] !== EMPTY; j = (j + 1) & mask) {
      const home = (keys[j]! >>> 0) & mask;
      const stays = i < j ? home > i && home <= j : home > i || home <= j;
      if (stays) continue;
      keys[i] = keys[j]!;
      values[i] = values[j]!;
      i = j;
    }
    keys[i] = EMPTY;
    this.count--;
    if (this.count < (mask + 1) * 0.15 && mask + 1 > MIN_SLOTS) this.resize((mask + 1) / 2);
    return true;
  }

  *keysOf(): Generator<number> {
    for (const k of this.keys) if (k !== EMPTY) yield k;
  }

  private resize(slots: number): void {
    const keys = this.keys;
    const values = this.values;
    this.keys = new Float64Array(slots).fill(EMPTY);
    this.values = new Int32Array(slots);
    this.mask = slots - 1;
    this.count = 0;
    for (let i = 0; i < keys.length; i++) if (keys[i] !== EMPTY) this.set(keys[i]!, values[i]!);
  }
}
