/**
 * Hashing over UTF-8 bytes, shared by ingest (sharding), the engine (dedup fingerprints) and the
 * load generator (so it can predict shards). Pure functions, no allocation per call.
 */

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

/** MurmurHash3 x86_32 of `bytes[start, end)`; returns an unsigned 32-bit integer. */
/** murmur3's finalizer: avalanches the bits of a 32-bit hash (unsigned result). */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export function murmur3(bytes: Uint8Array, start: number, end: number, seed = 0): number {
  let h = seed >>> 0;
  const len = end - start;
  const blocks = start + (len & ~3);
  let i = start;
  for (; i < blocks; i += 4) {
    let k = bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24);
    k = Math.imul(k, C1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, C2);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  const tail = len & 3;
  if (tail > 0) {
    let k = 0;
    if (tail === 3) k ^= bytes[i + 2]! << 16;
    if (tail >= 2) k ^= bytes[i + 1]! << 8;
    k ^= bytes[i]!;
    k = Math.imul(k, C1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, C2);
    h ^= k;
  }
  h ^= len;
  return fmix32(h);
}

const encoder = new TextEncoder();

/** MurmurHash3 of a JS string's UTF-8 bytes (convenience for non-hot paths). */
export function murmur3String(text: string, seed = 0): number {
  const bytes = encoder.encode(text);
  return murmur3(bytes, 0, bytes.length, seed);
}

/** The shard that owns a user: `murmur3(utf8(userId)) mod shards`. Stable across releases. */
export function shardOfUser(userId: string, shards: number): number {
  return murmur3String(userId) % shards;
}

/** Same as {@link shardOfUser} over bytes already in a buffer (Arrow Utf8 data). */
export function shardOfUserBytes(bytes: Uint8Array, start: number, end: number, shards: number): number {
  return murmur3(bytes, start, end) % shards;
}
