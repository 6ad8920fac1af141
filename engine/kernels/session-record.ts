/**
 * The stored form of a user's open sessions (the shard's LMDB `state-sessions`, one value per
 * user key, msgpack): each session a positional array, without what the key or the other fields
 * already say — the user key (it is the LMDB key) and the id (sessionIdOf(user, start)) — and
 * with times after the first as offsets from the start (small integers, 1–5 bytes in msgpack):
 *
 *   [user, start, end − start, count, firstEventId, device, version, country,
 *    firstScreen, firstScreenTime − start, lastScreen, lastScreenTime − start, aliases]
 *
 * ≈ 120 B a session where the snapshot object (field names in every value) took ≈ 250 B
 * (bench/state-per-user.ts). Values written before (arrays of snapshot objects) are still read.
 */
import { sessionIdOf, type SessionSnapshot } from './session-table.js';

type SessionRecord = [string, number, number, number, string, string, string, string, string | null, number, string | null, number, string[] | null];

/** A user's open sessions (snapshots, by start) as the stored value. */
export function packSessions(list: SessionSnapshot[]): SessionRecord[] {
  return list.map((s) => [
    s.user,
    s.start,
    s.end - s.start,
    s.count,
    s.firstEventId,
    s.dims[0],
    s.dims[1],
    s.dims[2],
    s.firstScreen,
    s.firstScreen === null ? 0 : s.firstScreenTime - s.start,
    s.lastScreen,
    s.lastScreen === null ? 0 : s.lastScreenTime - s.start,
    s.aliases,
  ]);
}

/** The snapshots of a stored value of user `key` (either form). */
export function unpackSessions(key: number, value: unknown): SessionSnapshot[] {
  if (!Array.isArray(value)) throw new TypeError(`open sessions of user key ${key}: expected a list, got ${typeof value}`);
  return value.map((v: SessionRecord | SessionSnapshot) => {
    if (!Array.isArray(v)) return v; // written before the positional form
    const [user, start, length, count, firstEventId, d, ver, c, firstScreen, firstScreenAt, lastScreen, lastScreenAt, aliases] = v;
    return {
      key,
      id: sessionIdOf(user, start),
      user,
      start,
      end: start + length,
      count,
      firstEventId,
      dims: [d, ver, c],
      firstScreen,
      firstScreenTime: firstScreen === null ? 0 : start + firstScreenAt,
      lastScreen,
      lastScreenTime: lastScreen === null ? 0 : start + lastScreenAt,
      aliases,
    };
  });
}
