/**
 * Open-addressing hash set of 64-bit fingerprints in typed arrays, each entry tagged with a time
 * bucket (an hour number) so expiry drops whole buckets. Linear probing; grows by doubling at
 * load factor 0.5. Pure data structure: no I/O, no clock.
 *
 * Slot layout: hi[i], lo[i] (fingerprint halves; hi = lo = 0 marks an empty slot, so a real
 * fingerprint of (0, 0) is stored as (0, 1)), bucket[i] (hour number).
 */
export class DedupTable {
  private hi: Uint32Array;
  private lo: Uint32Array;
  private bucket: Int32Array;
  private mask: number;
  size = 0;

  constructor(initialCapacity = 1 << 16) {
    let cap = 1 << 4;
    while (cap < initialCapacity * 2) cap <<= 1;
    this.hi = new Uint32Array(cap);
    this.lo = new Uint32Array(cap);
    this.bucket = new Int32Array(cap);
    this.mask = cap - 1;
  }

  get capacity(): number {
    return this.mask + 1;
  }

  /** Bytes held by the table's arrays (12 per slot; the slots double at load factor ½). */
  get bytes(): number {
    return this.capacity * 12;
  }

  /** Inserts the fingerprint; returns true if it was new, false if already present. */
  add(hi: number, lo: number, bucket: number): boolean {
    if (hi === 0 && lo === 0) lo = 1;
    let i = (hi ^ Math.imul(lo, 0x9e3779b1)) & this.mask;
    for (;;) {
      const h = this.hi[i]!;
      const l = this.lo[i]!;
      if (h === 0 && l === 0) break;
      if (h === hi >>> 0 && l === lo >>> 0) return false;
      i = (i + 1) & this.mask;
    }
    this.hi[i] = hi;
    this.lo[i] = lo;
    this.bucket[i] = bucket;
    this.size++;
    if (this.size * 2 > this.capacity) this.rebuild(this.capacity * 2, () => true);
    return true;
  }

  has(hi: number, lo: number): boolean {
    if (hi === 0 && lo === 0) lo = 1;
    let i = (hi ^ Math.imul(lo, 0x9e3779b1)) & this.mask;
    for (;;) {
      const h = this.hi[i]!;
      const l = this.lo[i]!;
      if (h === 0 && l === 0) return false;
      if (h === hi >>> 0 && l === lo >>> 0) return true;
      i = (i + 1) & this.mask;
    }
  }

  /**
   * Removes every entry whose bucket fails `keep`; O(capacity), run once per checkpoint, not per
   * row. New arrays only when something is removed: most checkpoints expire nothing, and a
   * rebuild's three full-size arrays (12 B per slot, up to tens of MiB) became garbage that
   * glibc kept (bench/results/memory-2026-12-03.md).
   */
  retain(keep: (bucket: number) => boolean): number {
    if (!this.anyFails(keep)) return 0;
    const before = this.size;
    this.rebuild(this.capacity, keep);
    return before - this.size;
  }

  /** Entries per bucket (hour number), read in place. */
  bucketCounts(): Map<number, number> {
    const counts = new Map<number, number>();
    const { hi, lo, bucket } = this;
    for (let i = 0; i < hi.length; i++) {
      if (hi[i] !== 0 || lo[i] !== 0) counts.set(bucket[i]!, (counts.get(bucket[i]!) ?? 0) + 1);
    }
    return counts;
  }

  private anyFails(keep: (bucket: number) => boolean): boolean {
    const { hi, lo, bucket } = this;
    let last = NaN;
    for (let i = 0; i < hi.length; i++) {
      if (hi[i] === 0 && lo[i] === 0) continue;
      const b = bucket[i]!;
      if (b === last) continue; // runs of one bucket are common: ask `keep` once per run
      if (!keep(b)) return true;
      last = b;
    }
    return false;
  }

  private rebuild(capacity: number, keep: (bucket: number) => boolean): void {
    const { hi, lo, bucket } = this;
    this.hi = new Uint32Array(capacity);
    this.lo = new Uint32Array(capacity);
    this.bucket = new Int32Array(capacity);
    this.mask = capacity - 1;
    this.size = 0;
    for (let i = 0; i < hi.length; i++) {
      if ((hi[i] !== 0 || lo[i] !== 0) && keep(bucket[i]!)) this.insertFresh(hi[i]!, lo[i]!, bucket[i]!);
    }
  }

  private insertFresh(hi: number, lo: number, b: number): void {
    let i = (hi ^ Math.imul(lo, 0x9e3779b1)) & this.mask;
    while (this.hi[i] !== 0 || this.lo[i] !== 0) i = (i + 1) & this.mask;
    this.hi[i] = hi;
    this.lo[i] = lo;
    this.bucket[i] = b;
    this.size++;
  }
}
