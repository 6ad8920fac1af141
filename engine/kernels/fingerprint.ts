/**
 * 64-bit fingerprints of the strings of an Arrow Utf8 column, as two 32-bit halves
 * (murmur3 with two seeds over the UTF-8 bytes). Pure; no allocation per row.
 */
import type { Data, Utf8 } from 'apache-arrow';
import { murmur3 } from '../../common/hash.js';

export const SEED_HI = 0x9747b28c;
export const SEED_LO = 0x2545f491;

/** Fills `hi`/`lo` (length ≥ data.length) with each row's fingerprint. Null rows hash as empty strings. */
export function fingerprintUtf8(data: Data<Utf8>, hi: Uint32Array, lo: Uint32Array): void {
  const offsets = data.valueOffsets;
  const bytes = data.values;
  for (let i = 0; i < data.length; i++) {
    const a = offsets[i]!;
    const b = offsets[i + 1]!;
    hi[i] = murmur3(bytes, a, b, SEED_HI);
    lo[i] = murmur3(bytes, a, b, SEED_LO);
  }
}

/** A 53-bit number from a fingerprint, usable as a Map key (collisions ~1 in 2^53 per pair). */
export function fingerprintKey(hi: number, lo: number): number {
  return (hi & 0x1fffff) * 4294967296 + lo;
}
