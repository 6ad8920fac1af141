/**
 * The stored forms of a user's open sessions (the shard's LMDB `state-sessions`, one value per
 * user key). Written now: the binary record of `SessionTable.userRecord` (see USER_RECORD in
 * kernels/session-table.ts), straight from the slots. Still read, from checkpoints written before:
 *
 * - positional msgpack arrays (`packSessions`), each session without what the key or the other
 *   fields already say — the user key (it is the LMDB key) and the id (sessionIdOf(user, start)) —
 *   and with times after the first as offsets from the start:
 *
 *     [user, start, end − start, count, firstEventId, device, version, country,
 *      firstScreen, firstScreenTime − start, lastScreen, lastScreenTime − start, aliases]
 *
 * - before those, arrays of snapshot objects.
 *
 * A user's value is rewritten in the current form at the first checkpoint that changes the user.
 */
import { readUserRecord, sessionIdOf, type SessionSnapshot } from './session-table.js';

type SessionRecord = [string, number, number, number, string, string, string, string, string | null, number, string | null, number, string[] | null];

/** A user's open sessions (snapshots, by start) in the positional form (what checkpoints wrote before the binary record). */
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

/** The snapshots of a stored value of user `key` (any form). */
export function unpackSessions(key: number, value: unknown): SessionSnapshot[] {
  if (value instanceof Uint8Array) return readUserRecord(key, value);
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
