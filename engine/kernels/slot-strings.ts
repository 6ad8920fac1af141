/**
 * Short byte strings (ids) held per slot of a slot table, `fields` of them per slot, in one byte
 * arena: each is a (position, length) pair into a growable Uint8Array. Replacing or clearing a
 * string leaves its old bytes behind as garbage; when an append would not fit, the arena is
 * compacted (live strings copied into a right-sized buffer) if at least a quarter of it is
 * garbage, else it grows by a quarter. So the arena holds at most ≈ 1.7× its live bytes.
 *
 * Memory: 8 B a string plus its UTF-8 bytes. As a JS string in an array (Node is built without
 * pointer compression) the same id costs an 8 B reference, a 16 B header and its characters
 * rounded up to 8: a 36-character UUID 64 B here 44, a 12-character user id 40 B here 20.
 *
 *   slot 0: ├ user ─┤├ event ┤     slot 1: ├ user ┤ …      (pos, len) per (slot, field)
 *   bytes:  [u0 u0 u0 e0 e0 e0 e0 ░░░░ u1 u1 … ░ garbage … │ free ]
 */
const MIN_BYTES = 4096;
const encoder = new TextEncoder();

export class SlotStrings {
  private pos = new Int32Array(0);
  private len = new Int32Array(0);
  /** A Buffer: its toString('utf8', …) decodes a short id in about half the time of a TextDecoder. */
  private buf = Buffer.alloc(MIN_BYTES);
  private end = 0;
  private dead = 0;

  constructor(private readonly fields: number) {}

  /** Bytes held (live and garbage), for memory accounting. */
  get byteLength(): number {
    return this.buf.byteLength + this.pos.byteLength + this.len.byteLength;
  }

  /** Room for slots `0 … slots − 1` (existing strings kept). */
  reserve(slots: number): void {
    const n = slots * this.fields;
    if (n <= this.pos.length) return;
    const pos = new Int32Array(n);
    pos.set(this.pos);
    const len = new Int32Array(n);
    len.set(this.len);
    this.pos = pos;
    this.len = len;
  }

  /** Sets the string of (slot, field) to bytes `from … to − 1` of `src`. */
  set(slot: number, field: number, src: Uint8Array, from: number, to: number): void {
    const i = slot * this.fields + field;
    this.dead += this.len[i]!;
    this.len[i] = 0; // not live while the arena may be compacted below
    const n = to - from;
    const at = this.room(n);
    const bytes = this.buf;
    for (let k = 0; k < n; k++) bytes[at + k] = src[from + k]!;
    this.pos[i] = at;
    this.len[i] = n;
    this.end = at + n;
  }

  /** Sets the string of (slot, field) to `s` (UTF-8). */
  setString(slot: number, field: number, s: string): void {
    const b = encoder.encode(s);
    this.set(slot, field, b, 0, b.length);
  }

  /** Copies the string of (fromSlot, field) to (slot, field). */
  copy(slot: number, field: number, fromSlot: number): void {
    const j = fromSlot * this.fields + field;
    const n = this.len[j]!;
    // Copy out first: room() may compact, which moves the source.
    const src = new Uint8Array(this.buf.subarray(this.pos[j]!, this.pos[j]! + n));
    this.set(slot, field, src, 0, n);
  }

  /** Empties every string of `slot` (their bytes become garbage). */
  clear(slot: number): void {
    const f = this.fields;
    for (let i = slot * f; i < slot * f + f; i++) {
      this.dead += this.len[i]!;
      this.len[i] = 0;
    }
  }

  /** The arena: the string of (slot, field) is bytes `at(slot, field)` … `at + length − 1` (until the next set, which may move it). */
  get bytes(): Uint8Array {
    return this.buf;
  }

  at(slot: number, field: number): number {
    return this.pos[slot * this.fields + field]!;
  }

  length(slot: number, field: number): number {
    return this.len[slot * this.fields + field]!;
  }

  /** The string of (slot, field), decoded as UTF-8. */
  get(slot: number, field: number): string {
    const i = slot * this.fields + field;
    const at = this.pos[i]!;
    return this.buf.toString('utf8', at, at + this.len[i]!);
  }

  /** Byte-wise comparison of bytes `from … to − 1` of `src` with the string of (slot, field): < 0, 0, > 0 as src sorts before, equal, after. */
  compare(src: Uint8Array, from: number, to: number, slot: number, field: number): number {
    const i = slot * this.fields + field;
    const bytes = this.buf;
    const at = this.pos[i]!;
    const m = this.len[i]!;
    const n = Math.min(to - from, m);
    for (let k = 0; k < n; k++) {
      const d = src[from + k]! - bytes[at + k]!;
      if (d !== 0) return d;
    }
    return to - from - m;
  }

  /** Drops every string and gives the arena back. */
  reset(): void {
    this.pos = new Int32Array(0);
    this.len = new Int32Array(0);
    this.buf = Buffer.alloc(MIN_BYTES);
    this.end = 0;
    this.dead = 0;
  }

  /** Where `n` more bytes go (at `end`), after compacting or growing the arena if they do not fit. */
  private room(n: number): number {
    if (this.end + n <= this.buf.length) return this.end;
    const live = this.end - this.dead;
    const compact = this.dead * 4 >= this.end;
    const size = Math.max(MIN_BYTES, Math.ceil((compact ? live + n : this.buf.length + n) * 1.25));
    const bytes = Buffer.alloc(size);
    if (compact) {
      const { pos, len } = this;
      const old = this.buf;
      let at = 0;
      for (let i = 0; i < len.length; i++) {
        const m = len[i]!;
        if (m === 0) continue;
        bytes.set(old.subarray(pos[i]!, pos[i]! + m), at);
        pos[i] = at;
        at += m;
      }
      this.end = at;
      this.dead = 0;
    } else bytes.set(this.buf.subarray(0, this.end));
    this.buf = bytes;
    return this.end;
  }
}
