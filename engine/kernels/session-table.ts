/**
 * Sessionization per user with an inactivity gap, in arrival (log) order, deterministic. Pure
 * state: no clock, no I/O; time comes from the events and the watermarks it is given.
 *
 * Rules:
 * - A user has at most one open session [start, end] (event times of its first/last events).
 * - An event at time t joins it when start − gap < t < end + gap (t may extend start or end).
 *   Exactly at the gap (t − end = gap) starts a new session, as does anything further away:
 *   the open session then closes immediately and the event opens a new one.
 *
 *        start − gap          start        end          end + gap
 *   ─────────(─────────────────[════════════]──────────────)─────────▶ event time
 *     new session │      joins (extends start)   joins (extends end)  │ new session
 *
 * - A session closes when the watermark reaches end + gap (close deadlines sit in a timer wheel).
 * - session_id = 16 hex digits of murmur3(user_id ':' first-seen event time) with two seeds.
 * - first/last screen: `properties.name` of the session's earliest/latest screen event.
 * - Dimensions are those of the session's first-seen event.
 *
 * Users are keyed by a 53-bit fingerprint of user_id (kernels/fingerprint `fingerprintKey`), so
 * the per-row path never decodes the id: the string is decoded once, when a session opens.
 */
import type { Data, Utf8 } from 'apache-arrow';
import { murmur3 } from '../../common/hash.js';

/** Dimension values of an event (interned; shared by every event with the same values). */
export interface DimValues {
  readonly d: string;
  readonly v: string;
  readonly c: string;
}

export interface OpenSession {
  /** Fingerprint key of user_id. */
  key: number;
  id: string;
  user: string;
  start: number;
  end: number;
  count: number;
  firstScreen: string | null;
  firstScreenTime: number;
  lastScreen: string | null;
  lastScreenTime: number;
  device: string;
  version: string;
  country: string;
  /** UTF-8 bytes of `id`, made on first use; not part of snapshots. */
  idBytes?: Uint8Array;
}

export type ClosedSession = OpenSession;

/** What `assign` did with an event. */
export const enum Assigned {
  /** Joined the user's open session. */
  Joined = 0,
  /** Opened a new session (the user had none open). */
  Opened = 1,
  /** Opened a new session and closed the user's previous one (now in `closedEarly`). */
  OpenedAndClosed = 2,
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();
/** Width of a close-wheel slot. */
const WHEEL_MS = 60_000;
const byStartThenId = (a: OpenSession, b: OpenSession): number => a.start - b.start || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

const hex8 = (h: number): string => h.toString(16).padStart(8, '0');

export function sessionIdOf(user: string, firstSeen: number): string {
  const key = encoder.encode(`${user}:${firstSeen}`);
  return hex8(murmur3(key, 0, key.length, 0x5e55)) + hex8(murmur3(key, 0, key.length, 0x10ad));
}

export class SessionTable {
  readonly gapMs: number;
  private open = new Map<number, OpenSession>();
  /**
   * Timer wheel of close deadlines: minute → sessions filed under that minute of end + gap when
   * opened (or last refiled). A session that grew since is refiled when its minute comes due, and
   * one that was replaced is dropped then, so `close` touches only sessions whose minute is due.
   */
  private wheel = new Map<number, OpenSession[]>();
  /** Lower bound of the wheel's minutes. */
  private firstMinute = Infinity;
  /** The session of the last `assign`. */
  current: OpenSession | undefined;
  /** Sessions closed by `assign` (a user's next session began), until the caller takes them. */
  closedEarly: ClosedSession[] = [];

  constructor(gapMs: number) {
    this.gapMs = gapMs;
  }

  get openCount(): number {
    return this.open.size;
  }

  /**
   * Assigns the event (user fingerprint `key`, row `row` of `users` for the id string, event time
   * `t`, screen name or null, dimension values) to a session; the session is left in `current`.
   */
  assign(key: number, users: Data<Utf8>, row: number, t: number, screen: string | null, dims: DimValues): Assigned {
    const s = this.open.get(key);
    if (s !== undefined && t > s.start - this.gapMs && t < s.end + this.gapMs) {
      s.count++;
      if (t < s.start) s.start = t;
      if (t > s.end) s.end = t;
      if (screen !== null) {
        if (s.firstScreen === null || t < s.firstScreenTime) {
          s.firstScreen = screen;
          s.firstScreenTime = t;
        }
        if (s.lastScreen === null || t >= s.lastScreenTime) {
          s.lastScreen = screen;
          s.lastScreenTime = t;
        }
      }
      this.current = s;
      return Assigned.Joined;
    }
    const user = s?.user ?? decoder.decode(users.values.subarray(users.valueOffsets[row]!, users.valueOffsets[row + 1]!));
    const fresh: OpenSession = {
      key,
      id: sessionIdOf(user, t),
      user,
      start: t,
      end: t,
      count: 1,
      firstScreen: screen,
      firstScreenTime: screen === null ? 0 : t,
      lastScreen: screen,
      lastScreenTime: screen === null ? 0 : t,
      device: dims.d,
      version: dims.v,
      country: dims.c,
      idBytes: undefined, // present from the start: every session has one shape
    };
    this.open.set(key, fresh);
    this.file(fresh);
    this.current = fresh;
    if (s === undefined) return Assigned.Opened;
    this.closedEarly.push(s);
    return Assigned.OpenedAndClosed;
  }

  /** UTF-8 bytes of a session's id (cached per open session). */
  static idBytesOf(s: OpenSession): Uint8Array {
    return (s.idBytes ??= encoder.encode(s.id));
  }

  private file(s: OpenSession): void {
    const minute = Math.floor((s.end + this.gapMs) / WHEEL_MS);
    let list = this.wheel.get(minute);
    if (list === undefined) this.wheel.set(minute, (list = []));
    list.push(s);
    if (minute < this.firstMinute) this.firstMinute = minute;
  }

  /**
   * Removes and returns the sessions whose end + gap ≤ watermark, ordered by (start, id) so the
   * order depends only on the sessions, not on the history of the wheel. Amortized cost: the
   * sessions filed under due minutes, not every open session.
   */
  close(watermarkMs: number): ClosedSession[] {
    const last = Math.floor(watermarkMs / WHEEL_MS);
    if (!(last >= this.firstMinute)) return [];
    const out: ClosedSession[] = [];
    const due = [...this.wheel.keys()].filter((m) => m <= last).sort((a, b) => a - b);
    for (const minute of due) {
      const list = this.wheel.get(minute)!;
      this.wheel.delete(minute);
      for (const s of list) {
        if (this.open.get(s.key) !== s) continue; // replaced by a newer session (closed early)
        if (s.end + this.gapMs <= watermarkMs) {
          out.push(s);
          this.open.delete(s.key);
        } else this.file(s); // grew since it was filed
      }
    }
    this.firstMinute = Infinity;
    for (const m of this.wheel.keys()) if (m < this.firstMinute) this.firstMinute = m;
    return out.sort(byStartThenId);
  }

  /** Takes the sessions closed early since the last call. */
  takeClosedEarly(): ClosedSession[] {
    const out = this.closedEarly;
    this.closedEarly = [];
    return out;
  }

  snapshot(): { open: OpenSession[]; closedEarly: ClosedSession[] } {
    const plain = ({ idBytes: _, ...s }: OpenSession): OpenSession => s;
    return { open: [...this.open.values()].map(plain), closedEarly: this.closedEarly.map(plain) };
  }

  restore(state: { open: OpenSession[]; closedEarly: ClosedSession[] }): void {
    this.open = new Map(state.open.map((s) => [s.key, { ...s, idBytes: undefined }]));
    this.closedEarly = state.closedEarly;
    this.wheel = new Map();
    this.firstMinute = Infinity;
    for (const s of this.open.values()) this.file(s);
  }
}
