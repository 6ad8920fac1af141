/**
 * Short byte strings (ids) held per slot of a slot table, `fields` of them per slot, in one byte
 * arena: each is a (position, length) pair into a growable Uint8Array. Replacing or clearing a
 * string leaves its old bytes behind as garbage; when an append would not fit, the arena is
 * compacted (live strings copied into a right-sized buffer) if at least a quarter of it is
 * garbage, else it grows by a quarter. So the arena holds at most ≈ 1.7× its live bytes.
 *
 * Memory: 8 B a string plus its UTF-8 bytes, except that a string in the canonical UUID form
 * (8-4-4-4-12 hex digits, all lower case or all upper case: what Android's and iOS's UUID
 * classes print, and so most SDKs' message ids and anonymous ids) is held as its 16 bytes. As a
 * JS string in an array (Node is built without pointer compression) the same id costs an 8 B
 * reference, a 16 B header and its characters rounded up to 8: a UUID 64 B here 24, a
 * 12-character user id 40 B here 20.
 *
 *   slot 0: ├ user ─┤├ event ┤     slot 1: ├ user ┤ …      (pos, len) per (slot, field)
 *   bytes:  [u0 u0 u0 e0 e0 e0 e0 ░░░░ u1 u1 … ░ garbage … │ free ]
 */
const MIN_BYTES = 4096;
const encoder = new TextEncoder();

/** `len` codes of a string held as a packed UUID (its 16 bytes), by the case of its hex letters. */
const UUID_LOWER = -1;
const UUID_UPPER = -2;
const UUID_CHARS = 36;
const UUID_BYTES = 16;
const DASH = 0x2d;
const LOWER_HEX = Uint8Array.from('0123456789abcdef', (c) => c.charCodeAt(0));
const UPPER_HEX = Uint8Array.from('0123456789ABCDEF', (c) => c.charCodeAt(0));
/** Byte → its hex digit's value, or 16 (not a hex digit); 32 | value for an upper-case letter. */
const NIBBLE = new Uint8Array(256).fill(16);
for (let d = 0; d < 16; d++) {
  NIBBLE[LOWER_HEX[d]!] = d;
  NIBBLE[UPPER_HEX[d]!] = d >= 10 ? 32 | d : d;
}
const isDash = (k: number): boolean => k === 8 || k === 13 || k === 18 || k === 23;

/** Bytes a string takes in the arena, from its `len` code. */
const storedBytes = (len: number): number => (len >= 0 ? len : UUID_BYTES);

/**
 * Packs bytes `from … to − 1` of `src` into 16 bytes at `out[at]` when they are a canonical UUID
 * whose letters are all of one case (digits only counts as lower case) and returns UUID_LOWER or
 * UUID_UPPER; else returns 0 (`out` may have been written).
 */
function packUuid(src: Uint8Array, from: number, to: number, out: Uint8Array, at: number): number {
  if (to - from !== UUID_CHARS || src[from + 8] !== DASH || src[from + 13] !== DASH || src[from + 18] !== DASH || src[from + 23] !== DASH) return 0;
  let seen = 0; // the nibbles' flags: 16 not a hex digit, 32 an upper-case letter
  for (let k = 0; k < UUID_CHARS; k += 2) {
    if (isDash(k)) k++;
    const a = NIBBLE[src[from + k]!]!;
    const b = NIBBLE[src[from + k + 1]!]!;
    seen |= a | b;
    out[at++] = ((a & 15) << 4) | (b & 15);
  }
  if (seen & 16) return 0;
  if (seen & 32) return hasLowerLetter(src, from) ? 0 : UUID_UPPER;
  return UUID_LOWER;
}

/** Whether a UUID with upper-case letters has a lower-case one too (mixed case: not packed). */
function hasLowerLetter(src: Uint8Array, from: number): boolean {
  for (let k = 0; k < UUID_CHARS; k++) {
    const b = src[from + k]!;
    if (b >= 0x61 && b <= 0x66) return true;
  }
  return false;
}

export class SlotStrings {
  private pos = new Int32Array(0);
  private len = new Int32Array(0);
  /** A Buffer: its toString('utf8', …) decodes a short id in about half the time of a TextDecoder. */
  private buf = Buffer.alloc(MIN_BYTES);
  private end = 0;
  private dead = 0;
  /** Where a packed UUID is spelled out (`writeTo`, `get`, `compare`). */
  private readonly spelled = Buffer.alloc(UUID_CHARS);

  constructor(private readonly fields: number) {}

  /** Bytes held (live and garbage), for memory accounting. */
  get byteLength(): number {
    return this.buf.byteLength + this.pos.byteLength + this.len.byteLength;
  }

  /** Bytes of the live strings in the arena (garbage excluded). */
  get liveBytes(): number {
    return this.end - this.dead;
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
    const at = this.claim(i, to - from); // room for the bytes as they are, at least the 16 of a packed UUID
    const bytes = this.buf;
    const uuid = packUuid(src, from, to, bytes, at);
    const n = uuid === 0 ? to - from : UUID_BYTES;
    if (uuid === 0) for (let k = 0; k < n; k++) bytes[at + k] = src[from + k]!;
    this.placed(i, at, n, uuid === 0 ? n : uuid);
  }

  /** Sets the string of (slot, field) to `s` (UTF-8). */
  setString(slot: number, field: number, s: string): void {
    const b = encoder.encode(s);
    this.set(slot, field, b, 0, b.length);
  }

  /** Copies the string of (fromSlot, field) to (slot, field). */
  copy(slot: number, field: number, fromSlot: number): void {
    const j = fromSlot * this.fields + field;
    const code = this.len[j]!;
    const n = storedBytes(code);
    // Copy out first: room() may compact, which moves the source.
    const src = new Uint8Array(this.buf.subarray(this.pos[j]!, this.pos[j]! + n));
    const i = slot * this.fields + field;
    const at = this.claim(i, n);
    this.buf.set(src, at);
    this.placed(i, at, n, code);
  }

  /** Empties every string of `slot` (their bytes become garbage). */
  clear(slot: number): void {
    const f = this.fields;
    for (let i = slot * f; i < slot * f + f; i++) {
      this.dead += storedBytes(this.len[i]!);
      this.len[i] = 0;
    }
  }

  /** Length in UTF-8 bytes of the string of (slot, field). */
  utf8Length(slot: number, field: number): number {
    const code = this.len[slot * this.fields + field]!;
    return code >= 0 ? code : UUID_CHARS;
  }

  /** Writes the UTF-8 bytes of (slot, field) at `out[offset]` (room for utf8Length of them) and returns how many. */
  writeTo(slot: number, field: number, out: Uint8Array, offset: number): number {
    const i = slot * this.fields + field;
    const code = this.len[i]!;
    if (code < 0) {
      out.set(this.spell(i), offset);
      return UUID_CHARS;
    }
    const bytes = this.buf;
    const at = this.pos[i]!;
    for (let k = 0; k < code; k++) out[offset + k] = bytes[at + k]!;
    return code;
  }

  /** The string of (slot, field), decoded as UTF-8. */
  get(slot: number, field: number): string {
    const i = slot * this.fields + field;
    const code = this.len[i]!;
    if (code < 0) return this.spell(i).toString('latin1');
    const at = this.pos[i]!;
    return this.buf.toString('utf8', at, at + code);
  }

  /** Byte-wise comparison of bytes `from … to − 1` of `src` with the string of (slot, field): < 0, 0, > 0 as src sorts before, equal, after. */
  compare(src: Uint8Array, from: number, to: number, slot: number, field: number): number {
    const i = slot * this.fields + field;
    let bytes: Uint8Array = this.buf;
    let at = this.pos[i]!;
    let m = this.len[i]!;
    if (m < 0) {
      bytes = this.spell(i);
      at = 0;
      m = UUID_CHARS;
    }
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

  /** Frees string `i` (its bytes become garbage) and returns where `n` new bytes go. */
  private claim(i: number, n: number): number {
    this.dead += storedBytes(this.len[i]!);
    this.len[i] = 0; // not live while the arena may be compacted
    return this.room(n);
  }

  /** Records string `i`: `stored` bytes at `at`, its `len` code `code` (the length, or a packed UUID's case). */
  private placed(i: number, at: number, stored: number, code: number): void {
    this.pos[i] = at;
    this.len[i] = code;
    this.end = at + stored;
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
        const m = storedBytes(len[i]!);
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

  /** Spells out the packed UUID of string `i` in `spelled`. */
  private spell(i: number): Buffer {
    const hex = this.len[i] === UUID_UPPER ? UPPER_HEX : LOWER_HEX;
    const out = this.spelled;
    const bytes = this.buf;
    let from = this.pos[i]!;
    for (let k = 0; k < UUID_CHARS; k += 2) {
      if (isDash(k)) out[k++] = DASH;
      const b = bytes[from++]!;
      out[k] = hex[b >>> 4]!;
      out[k + 1] = hex[b & 15]!;
    }
    return out;
  }
}
