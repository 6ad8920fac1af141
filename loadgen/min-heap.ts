/**
 * A binary min-heap of (key: float64, value: int32) pairs in typed arrays, growing by doubling.
 * Ties pop in no particular order. Used for the generator's per-user schedules, where allocating
 * an object per entry would dominate the cost of a generated event.
 */
export class MinHeap {
  private keys: Float64Array;
  private values: Int32Array;
  size = 0;

  constructor(capacity = 64) {
    this.keys = new Float64Array(Math.max(4, capacity));
    this.values = new Int32Array(Math.max(4, capacity));
  }

  /** Smallest key; +Infinity when empty. */
  get topKey(): number {
    return this.size === 0 ? Infinity : this.keys[0]!;
  }

  /** Value of the smallest key; only valid when size > 0. */
  get topValue(): number {
    return this.values[0]!;
  }

  push(key: number, value: number): void {
    if (this.size === this.keys.length) {
      const k = new Float64Array(this.keys.length * 2);
      k.set(this.keys);
      this.keys = k;
      const v = new Int32Array(this.values.length * 2);
      v.set(this.values);
      this.values = v;
    }
    const keys = this.keys;
    const values = this.values;
    let i = this.size++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (keys[parent]! <= key) break;
      keys[i] = keys[parent]!;
      values[i] = values[parent]!;
      i = parent;
    }
    keys[i] = key;
    values[i] = value;
  }

  /** Removes the smallest entry and returns its value; call only when size > 0. */
  pop(): number {
    const keys = this.keys;
    const values = this.values;
    const top = values[0]!;
    const n = --this.size;
    if (n === 0) return top;
    const key = keys[n]!;
    const value = values[n]!;
    let i = 0;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && keys[child + 1]! < keys[child]!) child++;
      if (keys[child]! >= key) break;
      keys[i] = keys[child]!;
      values[i] = values[child]!;
      i = child;
    }
    keys[i] = key;
    values[i] = value;
    return top;
  }
}
