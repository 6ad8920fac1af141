/**
 * `murmur3(utf8(userId)) mod shards` (common/hash.ts) for a JS string without encoding it: ASCII
 * strings (the common case) are hashed from their char codes, which equal their UTF-8 bytes;
 * others are encoded into a scratch buffer first. Same result as shardOfUser, always.
 */
import { fmix32, murmur3, shardOfUser } from '../common/hash.js';

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;
const scratch = Buffer.allocUnsafe(1024);

/** MurmurHash3 x86_32 (seed 0) of an ASCII string's bytes; −1 when the string is not ASCII. */
export function murmur3Ascii(s: string): number {
  const len = s.length;
  let h = 0;
  const blocks = len & ~3;
  let i = 0;
  for (; i < blocks; i += 4) {
    const c0 = s.charCodeAt(i);
    const c1 = s.charCodeAt(i + 1);
    const c2 = s.charCodeAt(i + 2);
    const c3 = s.charCodeAt(i + 3);
    if ((c0 | c1 | c2 | c3) > 127) return -1;
    let k = c0 | (c1 << 8) | (c2 << 16) | (c3 << 24);
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
    for (let t = tail - 1; t >= 0; t--) {
      const c = s.charCodeAt(i + t);
      if (c > 127) return -1;
      k ^= c << (8 * t);
    }
    k = Math.imul(k, C1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, C2);
    h ^= k;
  }
  h ^= len;
  return fmix32(h);
}

/** The shard of a user id; identical to `shardOfUser(userId, shards)`. */
export function shardOf(userId: string, shards: number): number {
  if (shards === 1) return 0;
  const h = murmur3Ascii(userId);
  if (h >= 0) return h % shards;
  if (userId.length * 3 > scratch.length) return shardOfUser(userId, shards);
  return murmur3(scratch, 0, scratch.write(userId, 0, 'utf8')) % shards;
}
