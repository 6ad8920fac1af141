/**
 * Byte records for stored state: a growable writer that fills one reused buffer (the value is
 * copied by whoever stores it) and a reader over a stored value. Integers are LEB128 varints
 * (`uvar`: 0 … 2^53 − 1; `svar`: zigzag, for values that may be negative), doubles 8 bytes
 * little-endian, strings a varint of their UTF-8 length + 1 (0: null) and the bytes.
 */
import type { SlotStrings } from './slot-strings.js';

/** Most bytes a varint of a safe integer takes. */
const MAX_VARINT = 8;

export class RecordWriter {
  private buf = Buffer.allocUnsafe(4096);
  private at = 0;

  /** Starts a new record (the last one's bytes may be overwritten). */
  reset(): void {
    this.at = 0;
  }

  /** The record so far: a view of the writer's buffer, valid until the next write or reset. */
  bytes(): Uint8Array {
    return this.buf.subarray(0, this.at);
  }

  u8(v: number): void {
    this.room(1);
    this.buf[this.at++] = v;
  }

  /** A non-negative safe integer, 1 byte below 128. */
  uvar(v: number): void {
    if (!(v >= 0 && Number.isSafeInteger(v))) throw new RangeError(`a stored varint must be a safe integer ≥ 0, got ${v}`);
    this.room(MAX_VARINT);
    const b = this.buf;
    while (v >= 0x80) {
      b[this.at++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    b[this.at++] = v;
  }

  /** A safe integer of either sign (zigzag). */
  svar(v: number): void {
    this.uvar(v >= 0 ? 2 * v : -2 * v - 1);
  }

  f64(v: number): void {
    this.room(8);
    this.buf.writeDoubleLE(v, this.at);
    this.at += 8;
  }

  string(s: string | null): void {
    if (s === null) {
      this.uvar(0);
      return;
    }
    const n = Buffer.byteLength(s);
    this.uvar(n + 1);
    this.room(n);
    this.at += this.buf.write(s, this.at);
  }

  /** A string of a slot table, written from its bytes (not decoded). */
  slotString(strings: SlotStrings, slot: number, field: number): void {
    const n = strings.utf8Length(slot, field);
    this.uvar(n + 1);
    this.room(n);
    this.at += strings.writeTo(slot, field, this.buf, this.at);
  }

  /** Bytes written as they are (e.g. a cached run of strings). */
  raw(b: Uint8Array): void {
    this.room(b.length);
    this.buf.set(b, this.at);
    this.at += b.length;
  }

  private room(n: number): void {
    if (this.at + n <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.at + n));
    this.buf.copy(grown, 0, 0, this.at);
    this.buf = grown;
  }
}

/** The bytes of `strings` as RecordWriter writes them, one after another (for caching a repeated run). */
export function stringsRecord(strings: ReadonlyArray<string | null>): Uint8Array {
  const w = new RecordWriter();
  for (const s of strings) w.string(s);
  return Uint8Array.from(w.bytes());
}

/** Reads a record written by RecordWriter; throws on a value cut short. */
export class RecordReader {
  private readonly buf: Buffer;
  private at = 0;

  constructor(bytes: Uint8Array) {
    this.buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get done(): boolean {
    return this.at === this.buf.length;
  }

  u8(): number {
    this.need(1);
    return this.buf[this.at++]!;
  }

  uvar(): number {
    let v = 0;
    let scale = 1;
    for (let k = 0; k < MAX_VARINT; k++) {
      this.need(1);
      const b = this.buf[this.at++]!;
      v += (b & 0x7f) * scale;
      if (b < 0x80) return v;
      scale *= 0x80;
    }
    throw new RangeError(`stored record: a varint longer than ${MAX_VARINT} bytes at ${this.at}`);
  }

  svar(): number {
    const z = this.uvar();
    return z % 2 === 0 ? z / 2 : -(z + 1) / 2;
  }

  f64(): number {
    this.need(8);
    const v = this.buf.readDoubleLE(this.at);
    this.at += 8;
    return v;
  }

  string(): string | null {
    const n1 = this.uvar();
    if (n1 === 0) return null;
    const n = n1 - 1;
    this.need(n);
    const s = this.buf.toString('utf8', this.at, this.at + n);
    this.at += n;
    return s;
  }

  private need(n: number): void {
    if (this.at + n > this.buf.length) throw new RangeError(`stored record cut short: ${n} bytes wanted at ${this.at} of ${this.buf.length}`);
  }
}
