/**
 * The session table's key of a user id (the same 53-bit fingerprint the pipeline computes from
 * the batch's Utf8 column), for erasure's purge of open sessions.
 */
import { Utf8, vectorFromArray } from 'apache-arrow';
import { fingerprintKey, fingerprintUtf8 } from './kernels/fingerprint.js';

/** Keys of `users`, in order. */
export function userKeys(users: readonly string[]): number[] {
  if (users.length === 0) return [];
  const data = vectorFromArray([...users], new Utf8()).data[0]!;
  const hi = new Uint32Array(users.length);
  const lo = new Uint32Array(users.length);
  fingerprintUtf8(data, hi, lo);
  return users.map((_, i) => fingerprintKey(hi[i]!, lo[i]!));
}
