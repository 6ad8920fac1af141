/**
 * Sessionization per user in event time: merging session windows (Flink's
 * `MergingWindowAssigner` semantics), so the sessions do not depend on arrival order. Pure state:
 * no clock, no I/O; time comes from the events and the watermarks it is given.
 *
 * Definition: per user, the set of its (non-too-late) events, cut wherever two consecutive events
 * (in event time) are ≥ gap apart. A user may have several open sessions at once, kept in a list
 * ordered by start; consecutive ones are ≥ gap apart. An event at time t
 * - joins a session when start − gap < t < end + gap (and may extend its start or its end);
 * - merges two sessions when it is within the gap of both (it bridges them);
 * - otherwise opens a new session of its own.
 *
 *            A                         B
 *   ─────[═══════]──── gap ──────[═════════]────────▶ event time
 *                  ▲ t: within gap of A.end and of B.start → A ∪ {t} ∪ B, B disappears
 *
 * A session closes (is emitted) when the watermark reaches end + gap, never earlier (close
 * deadlines sit in a timer wheel). The caller never assigns an event behind the watermark
 * (those are too late), so a closed session can never need to grow again.
 *
 * Deterministic attributes (the same for every arrival order):
 * - session_id = 16 hex digits of murmur3(user_id ':' start) with two seeds, start being the
 *   time of the session's first event. While a session is open its start can move earlier (a
 *   late event, a merge), which changes its id: every id it had before is kept in `aliases`, so
 *   silver rows stamped with an earlier id resolve to the final one (gold/session_aliases).
 * - the first event is the one with the smallest (event_time, event_id); the session's
 *   dimensions are that event's.
 * - first_screen: `properties.name` of the earliest screen event (ties: the smallest name);
 *   last_screen: of the latest one (ties: the largest name).
 *
 * Counting sessions per window: the hourly/daily `sessions` metric counts a session in the window
 * of its start, under its dimensions. When a session's (start, dimensions) change or it vanishes
 * in a merge, the table journals −1 for the old (start, dims) and +1 for the new one
 * (`takeStartChanges`), so the caller's counters follow the merges exactly.
 *
 * Users are keyed by a 53-bit fingerprint of user_id (kernels/fingerprint `fingerprintKey`), so
 * the per-row path never decodes the id: strings are decoded only when a session opens or its
 * first event changes.
 */
import type { Data, Utf8 } from 'apache-arrow';
import { murmur3 } from '../../common/hash.js';

/** Dimension values of an event, interned (one object per distinct combination, `id` its index). */
export interface DimValues {
  readonly id: number;
  readonly d: string;
  readonly v: string;
  readonly c: string;
}

export interface OpenSession {
  /** Fingerprint key of user_id. */
  key: number;
  /** Current id: sessionIdOf(user, start). */
  id: string;
  user: string;
  /** Event time (ms) of the first and the last event. */
  start: number;
  end: number;
  count: number;
  /** event_id of the first event (the smallest (event_time, event_id)). */
  firstEventId: string;
  /** Dimensions of the first event. */
  dims: DimValues;
  firstScreen: string | null;
  firstScreenTime: number;
  lastScreen: string | null;
  lastScreenTime: number;
  /** Ids this session had before (earlier starts, merged sessions); null when none. */
  aliases: string[] | null;
  /** The user's previous (earlier start) and next (later start) open sessions, or null. */
  prev: OpenSession | null;
  next: OpenSession | null;
  /** Set when the session was merged into another or closed (its wheel entries are stale). */
  gone: boolean;
  /** The change epoch in which the session was last marked changed (see `changedUsers`). */
  epoch: number;
}

export type ClosedSession = OpenSession;

/** A snapshot of one open session (JSON-safe: no list links or caches; dimensions by value). */
export type SessionSnapshot = Omit<OpenSession, 'dims' | 'prev' | 'next' | 'gone' | 'epoch'> & { dims: [string, string, string] };

/**
 * Journal of changes to where sessions count: entry k says "add `delta[k]` sessions to the
 * windows of time `time[k]` under dimensions `dims[k]`".
 */
export interface StartChanges {
  time: number[];
  dims: DimValues[];
  delta: number[];
}

const encoder = new TextEncoder();
/** Width of a close-wheel slot. */
const WHEEL_MS = 60_000;
const DAY = 86_400_000;

const hex8 = (h: number): string => h.toString(16).padStart(8, '0');
/** Length of a session id: two 8-digit hex hashes, ASCII (`sessionIdOf`). */
export const SESSION_ID_CHARS = 16;

export function sessionIdOf(user: string, start: number): string {
  const key = encoder.encode(`${user}:${start}`);
  return hex8(murmur3(key, 0, key.length, 0x5e55)) + hex8(murmur3(key, 0, key.length, 0x10ad));
}

/** Sessions ordered by (start, id): an order that depends only on the sessions. */
export const byStartThenId = (a: OpenSession, b: OpenSession): number => a.start - b.start || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

const decoder = new TextDecoder();
const utf8At = (col: Data<Utf8>, row: number): string => decoder.decode(col.values.subarray(col.valueOffsets[row]!, col.valueOffsets[row + 1]!));

/** Byte-wise comparison of row `row` of `col` with `s` (ASCII fast path; DuckDB compares VARCHAR by bytes). */
function compareUtf8(col: Data<Utf8>, row: number, s: string): number {
  const bytes = col.values;
  const from = col.valueOffsets[row]!;
  const to = col.valueOffsets[row + 1]!;
  const n = Math.min(to - from, s.length);
  for (let k = 0; k < n; k++) {
    const a = bytes[from + k]!;
    const b = s.charCodeAt(k);
    if (a >= 0x80 || b >= 0x80) return Buffer.compare(Buffer.from(bytes.buffer, bytes.byteOffset + from, to - from), Buffer.from(s));
    if (a !== b) return a - b;
  }
  return to - from - s.length;
}

function snapshotOf(s: OpenSession): SessionSnapshot {
  return {
    key: s.key,
    id: s.id,
    user: s.user,
    start: s.start,
    end: s.end,
    count: s.count,
    firstEventId: s.firstEventId,
    dims: [s.dims.d, s.dims.v, s.dims.c],
    firstScreen: s.firstScreen,
    firstScreenTime: s.firstScreenTime,
    lastScreen: s.lastScreen,
    lastScreenTime: s.lastScreenTime,
    aliases: s.aliases,
  };
}

export class SessionTable {
  readonly gapMs: number;
  /** User key → the user's latest open session (the tail of its list: in-order events find theirs at once). */
  private tails = new Map<number, OpenSession>();
  private count = 0;
  /**
   * Timer wheel of close deadlines: minute → sessions filed under that minute of end + gap when
   * opened (or last refiled). A session that grew since is refiled when its minute comes due, one
   * that is gone (merged) is dropped then, so `close` touches only sessions whose minute is due.
   */
  private wheel = new Map<number, OpenSession[]>();
  /** Lower bound of the wheel's minutes. */
  private firstMinute = Infinity;
  private changes: StartChanges = { time: [], dims: [], delta: [] };
  /** UTC day (start ms) → open sessions starting in it. */
  private openByDay = new Map<number, number>();
  /** Users whose open sessions changed since `clearChanged` (may repeat), and the current epoch. */
  private changed: number[] = [];
  private epoch = 1;

  constructor(gapMs: number) {
    this.gapMs = gapMs;
  }

  get openCount(): number {
    return this.count;
  }

  /**
   * Assigns an event to its session and returns that session (whose id the caller stamps on the
   * event): user fingerprint `key`; row `row` of `users` and `eventIds` (read only when a
   * session opens or its first event changes); event time `t` (ms, never behind the last
   * watermark given to `close`); screen name or null; the event's interned dimensions.
   */
  assign(key: number, users: Data<Utf8>, eventIds: Data<Utf8>, row: number, t: number, screen: string | null, dims: DimValues): OpenSession {
    const gap = this.gapMs;
    // The latest session whose window (start − gap, …) reaches back before t; later ones start ≥ a gap after t.
    let s = this.tails.get(key) ?? null;
    let after: OpenSession | null = null;
    while (s !== null && t <= s.start - gap) {
      after = s;
      s = s.prev;
    }
    if (s === null || t >= s.end + gap) return this.open(key, users, eventIds, row, t, screen, dims, s, after);
    // Sessions are ≥ gap apart, so only the one before can also be within the gap: t bridges them.
    const p = s.prev;
    if (p !== null && t < p.end + gap) {
      this.join(p, eventIds, row, t, screen, dims);
      this.merge(p, s);
      s = p;
    } else this.join(s, eventIds, row, t, screen, dims);
    if (s.epoch !== this.epoch) this.mark(s);
    return s;
  }

  /**
   * Keys of the users whose open sessions changed (opened, grew, merged, closed) since the last
   * `clearChanged`, each once: what an incremental checkpoint writes (`userSessions`).
   */
  changedUsers(): number[] {
    return [...new Set(this.changed)];
  }

  /** After the changes were checkpointed. */
  clearChanged(): void {
    this.changed = [];
    this.epoch++;
  }

  /** Snapshots of one user's open sessions, by start (empty when none). */
  userSessions(key: number): SessionSnapshot[] {
    const out: SessionSnapshot[] = [];
    for (let s = this.tails.get(key) ?? null; s !== null; s = s.prev) out.unshift(snapshotOf(s));
    return out;
  }

  /** Takes the journal of session count changes since the last call (see `StartChanges`). */
  takeStartChanges(): StartChanges {
    const out = this.changes;
    this.changes = { time: [], dims: [], delta: [] };
    return out;
  }

  /**
   * Writes a session's id (16 hex characters, ASCII: `sessionIdOf`) as bytes at `offset`. Not
   * cached per session: a cached Uint8Array cost ≈ 200 B per open session (typed array, buffer,
   * backing store), a third of the session table's memory (bench/results/state-per-user-2026-12-03.md).
   */
  static writeId(s: OpenSession, out: Uint8Array, offset: number): void {
    const id = s.id;
    for (let k = 0; k < SESSION_ID_CHARS; k++) out[offset + k] = id.charCodeAt(k);
  }

  /**
   * Removes and returns the sessions whose end + gap ≤ watermark, ordered by (start, id).
   * Amortized cost: the sessions filed under due minutes, not every open session.
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
        if (s.gone) continue;
        if (s.end + this.gapMs <= watermarkMs) {
          this.unlink(s);
          this.countDay(s.start, -1);
          out.push(s);
        } else this.file(s); // grew since it was filed
      }
    }
    this.firstMinute = Infinity;
    for (const m of this.wheel.keys()) if (m < this.firstMinute) this.firstMinute = m;
    return out.sort(byStartThenId);
  }

  /** Snapshots of every open session. */
  snapshot(): SessionSnapshot[] {
    const out: SessionSnapshot[] = [];
    for (const key of this.tails.keys()) out.push(...this.userSessions(key));
    return out;
  }

  /**
   * Restores open sessions; `intern` maps dimension values to the caller's interned object. With
   * `changed`, every restored user counts as changed (a checkpoint in an older format is rewritten).
   */
  restore(state: SessionSnapshot[], intern: (d: string, v: string, c: string) => DimValues, changed = false): void {
    this.tails = new Map();
    this.wheel = new Map();
    this.firstMinute = Infinity;
    this.count = 0;
    this.changes = { time: [], dims: [], delta: [] };
    this.changed = [];
    this.openByDay = new Map();
    const sorted = [...state].sort((a, b) => a.key - b.key || a.start - b.start);
    let last: OpenSession | null = null;
    for (const x of sorted) {
      const s: OpenSession = { ...x, dims: intern(...x.dims), prev: null, next: null, gone: false, epoch: 0 };
      if (last !== null && last.key === s.key) {
        last.next = s;
        s.prev = last;
      }
      this.tails.set(s.key, s);
      last = s;
      this.count++;
      this.file(s);
      this.countDay(s.start, 1);
      if (changed) this.changed.push(s.key);
    }
  }

  /** Opens a session for the event between `prev` and `next` (the user's neighbouring sessions, or null). */
  private open(key: number, users: Data<Utf8>, eventIds: Data<Utf8>, row: number, t: number, screen: string | null, dims: DimValues, prev: OpenSession | null, next: OpenSession | null): OpenSession {
    const user = (prev ?? next)?.user ?? utf8At(users, row);
    const s: OpenSession = {
      key,
      id: sessionIdOf(user, t),
      user,
      start: t,
      end: t,
      count: 1,
      firstEventId: utf8At(eventIds, row),
      dims,
      firstScreen: screen,
      firstScreenTime: screen === null ? 0 : t,
      lastScreen: screen,
      lastScreenTime: screen === null ? 0 : t,
      aliases: null,
      prev,
      next,
      gone: false,
      epoch: this.epoch,
    };
    this.changed.push(key);
    if (prev !== null) prev.next = s;
    if (next !== null) next.prev = s;
    else this.tails.set(key, s);
    this.count++;
    this.file(s);
    this.journal(t, dims, 1);
    return s;
  }

  private join(s: OpenSession, eventIds: Data<Utf8>, row: number, t: number, screen: string | null, dims: DimValues): void {
    s.count++;
    if (t < s.start || (t === s.start && compareUtf8(eventIds, row, s.firstEventId) < 0)) {
      this.journal(s.start, s.dims, -1);
      this.journal(t, dims, 1);
      if (t < s.start) {
        this.rename(s, sessionIdOf(s.user, t));
        s.start = t;
      }
      s.firstEventId = utf8At(eventIds, row);
      s.dims = dims;
    }
    if (t > s.end) s.end = t;
    if (screen !== null) {
      if (s.firstScreen === null || t < s.firstScreenTime || (t === s.firstScreenTime && screen < s.firstScreen)) {
        s.firstScreen = screen;
        s.firstScreenTime = t;
      }
      if (s.lastScreen === null || t > s.lastScreenTime || (t === s.lastScreenTime && screen > s.lastScreen)) {
        s.lastScreen = screen;
        s.lastScreenTime = t;
      }
    }
  }

  /** Folds `n` (the next session of the same user, all of whose events are later) into `s`. */
  private merge(s: OpenSession, n: OpenSession): void {
    s.count += n.count;
    if (n.end > s.end) s.end = n.end;
    if (s.firstScreen === null && n.firstScreen !== null) {
      s.firstScreen = n.firstScreen;
      s.firstScreenTime = n.firstScreenTime;
    }
    if (n.lastScreen !== null) {
      s.lastScreen = n.lastScreen;
      s.lastScreenTime = n.lastScreenTime;
    }
    (s.aliases ??= []).push(n.id);
    if (n.aliases !== null) s.aliases.push(...n.aliases);
    this.journal(n.start, n.dims, -1);
    this.unlink(n);
  }

  private rename(s: OpenSession, id: string): void {
    (s.aliases ??= []).push(s.id);
    s.id = id;
  }

  private journal(time: number, dims: DimValues, delta: number): void {
    this.countDay(time, delta);
    this.changes.time.push(time);
    this.changes.dims.push(dims);
    this.changes.delta.push(delta);
  }

  private countDay(time: number, delta: number): void {
    const day = time - (((time % DAY) + DAY) % DAY);
    const n = (this.openByDay.get(day) ?? 0) + delta;
    if (n === 0) this.openByDay.delete(day);
    else this.openByDay.set(day, n);
  }

  /**
   * Erasure: drops every open session of user `key` (journalling −1 for each start, so open
   * windows stop counting them) and returns how many there were. The caller persists the removal.
   */
  removeUser(key: number): number {
    let n = 0;
    for (let s = this.tails.get(key) ?? null; s !== null; s = this.tails.get(key) ?? null) {
      this.journal(s.start, s.dims, -1); // also counts its day down, as a merge does
      this.unlink(s);
      n++;
    }
    return n;
  }

  /** Starts (ms) of the UTC days in which open sessions start, ascending (a handful). */
  openDays(): number[] {
    return [...this.openByDay.keys()].sort((a, b) => a - b);
  }

  private mark(s: OpenSession): void {
    s.epoch = this.epoch;
    this.changed.push(s.key);
  }

  private unlink(s: OpenSession): void {
    this.changed.push(s.key);
    s.gone = true;
    this.count--;
    if (s.prev !== null) s.prev.next = s.next;
    if (s.next !== null) s.next.prev = s.prev;
    else if (s.prev !== null) this.tails.set(s.key, s.prev);
    else this.tails.delete(s.key);
    s.prev = null;
    s.next = null;
  }

  private file(s: OpenSession): void {
    const minute = Math.floor((s.end + this.gapMs) / WHEEL_MS);
    let list = this.wheel.get(minute);
    if (list === undefined) this.wheel.set(minute, (list = []));
    list.push(s);
    if (minute < this.firstMinute) this.firstMinute = minute;
  }
}
