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
 *
 * Memory: an open session is a slot in parallel typed arrays (times, counts, list links, its id's
 * 16 bytes), its user id and first event id as bytes in one arena (kernels/slot-strings: 8 B each
 * plus the bytes, where a JS string cost ≈ 40–64 B) and three references (dimensions, screens);
 * as one object per session (18 fields, four boxed doubles, its id as a string) it was ≈ 400 B
 * (bench/state-per-user.ts). Callers hold a session by its slot number while it is open; closed
 * sessions and snapshots come out as plain objects.
 */
import type { Data, Utf8 } from 'apache-arrow';
import { murmur3 } from '../../common/hash.js';
import { KeyMap } from './key-map.js';
import { SlotStrings } from './slot-strings.js';

/** Dimension values of an event, interned (one object per distinct combination, `id` its index). */
export interface DimValues {
  readonly id: number;
  readonly d: string;
  readonly v: string;
  readonly c: string;
}

/** A session as a plain object: a closed one (`close`), or an open one's view (`session`). */
export interface ClosedSession {
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
}

/** A snapshot of one open session (JSON-safe; dimensions by value). The stored format of open sessions. */
export type SessionSnapshot = Omit<ClosedSession, 'dims'> & { dims: [string, string, string] };

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
const decoder = new TextDecoder();
/** Width of a close-wheel slot. */
const WHEEL_MS = 60_000;
const DAY = 86_400_000;
/** No session (a list link's end). */
const NONE = -1;
/** Distinct screen names shared between sessions (beyond it, each session keeps its own string). */
const SCREEN_INTERN_MAX = 10_000;

/** Length of a session id: two 8-digit hex hashes, ASCII (`sessionIdOf`). */
export const SESSION_ID_CHARS = 16;
const HEX = Uint8Array.from('0123456789abcdef', (c) => c.charCodeAt(0));

/** Writes sessionIdOf(user, start) as 16 ASCII bytes at `offset`. */
function writeSessionId(user: string, start: number, out: Uint8Array, offset: number): void {
  const key = encoder.encode(`${user}:${start}`);
  writeIdHash(key, key.length, out, offset);
}

let idKey = new Uint8Array(64);

/**
 * writeSessionId for the user id's UTF-8 bytes `from … to − 1` of `src`, without decoding them:
 * the same hash input when they are ASCII; otherwise through the string (so that a sequence that is
 * not valid UTF-8 hashes as its decoded form does, as after a restore from the stored strings).
 */
function writeSessionIdOfBytes(src: Uint8Array, from: number, to: number, start: number, out: Uint8Array, offset: number): void {
  const n = to - from;
  const time = String(start);
  if (idKey.length < n + 1 + time.length) idKey = new Uint8Array(2 * (n + 1 + time.length));
  const key = idKey;
  let high = 0;
  for (let k = 0; k < n; k++) high |= key[k] = src[from + k]!;
  if (high >= 0x80) {
    writeSessionId(decoder.decode(src.subarray(from, to)), start, out, offset);
    return;
  }
  key[n] = 0x3a; // ':'
  for (let k = 0; k < time.length; k++) key[n + 1 + k] = time.charCodeAt(k);
  writeIdHash(key, n + 1 + time.length, out, offset);
}

function writeIdHash(key: Uint8Array, length: number, out: Uint8Array, offset: number): void {
  const a = murmur3(key, 0, length, 0x5e55);
  const b = murmur3(key, 0, length, 0x10ad);
  for (let k = 0; k < 8; k++) {
    out[offset + k] = HEX[(a >>> (28 - 4 * k)) & 15]!;
    out[offset + 8 + k] = HEX[(b >>> (28 - 4 * k)) & 15]!;
  }
}

export function sessionIdOf(user: string, start: number): string {
  const out = new Uint8Array(SESSION_ID_CHARS);
  writeSessionId(user, start, out, 0);
  return idString(out, 0);
}

/** The 16 ASCII bytes of a session id at `o` as a string (explicit arguments: a spread of a subarray was 5× slower). */
function idString(b: Uint8Array, o: number): string {
  return String.fromCharCode(b[o]!, b[o + 1]!, b[o + 2]!, b[o + 3]!, b[o + 4]!, b[o + 5]!, b[o + 6]!, b[o + 7]!, b[o + 8]!, b[o + 9]!, b[o + 10]!, b[o + 11]!, b[o + 12]!, b[o + 13]!, b[o + 14]!, b[o + 15]!);
}

/** Sessions ordered by (start, id): an order that depends only on the sessions. */
export const byStartThenId = (a: ClosedSession, b: ClosedSession): number => a.start - b.start || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/** The slot strings of a session: its user id and its first event's id (UTF-8 bytes; DuckDB compares VARCHAR by bytes too). */
const USER = 0;
const FIRST_EVENT = 1;

/** Below this many slots ever used, freed slots are not worth giving back (`compact`). */
const COMPACT_MIN_SLOTS = 65_536;
const dimsKey = (x: DimValues): string => `${x.d}\u0001${x.v}\u0001${x.c}`;

/** Grows a typed array to `n` elements, keeping its contents. */
function grown<T extends Float64Array | Int32Array | Uint8Array>(a: T, n: number): T {
  const b = new (a.constructor as new (n: number) => T)(n);
  b.set(a);
  return b;
}

export class SessionTable {
  readonly gapMs: number;
  // ---- open sessions, one slot each (parallel arrays; free slots are reused) ----
  private cap = 0;
  /** Slots ever used (the high-water mark); free ones below it are in `free`. */
  private used = 0;
  private free: number[] = [];
  private keyOf = new Float64Array(0);
  private startOf = new Float64Array(0);
  private endOf = new Float64Array(0);
  private firstScreenTimeOf = new Float64Array(0);
  private lastScreenTimeOf = new Float64Array(0);
  private countOf = new Int32Array(0);
  /** The user's previous (earlier start) and next (later start) open session's slot, or NONE. */
  private prevOf = new Int32Array(0);
  private nextOf = new Int32Array(0);
  /** The change epoch in which the session was last marked changed (see `changedUsers`). */
  private epochOf = new Int32Array(0);
  /** The wheel minute the session is filed under (an entry under another minute is stale). */
  private filedOf = new Int32Array(0);
  /** 1 while the slot holds an open session. */
  private liveOf = new Uint8Array(0);
  /** The current id's 16 ASCII bytes. */
  private idBytes = new Uint8Array(0);
  /** User id and first event id (`USER`, `FIRST_EVENT`) as bytes. */
  private strings = new SlotStrings(2);
  private dimsOf: DimValues[] = [];
  private firstScreenOf: Array<string | null> = [];
  private lastScreenOf: Array<string | null> = [];
  /** Earlier ids (renames, merged sessions), for the few sessions that have any. */
  private aliasesOf = new Map<number, string[]>();
  private screens = new Map<string, string>();

  /** User key → the slot of the user's latest open session (the tail of its list: in-order events find theirs at once); −1 (NONE) for none. */
  private tails = new KeyMap();
  private count = 0;
  /**
   * Timer wheel of close deadlines: minute → slots filed under that minute of end + gap when
   * opened (or last refiled). A session that grew since is refiled when its minute comes due, an
   * entry whose slot was freed (merged, closed) or filed elsewhere since is dropped then, so
   * `close` touches only sessions whose minute is due.
   */
  private wheel = new Map<number, number[]>();
  /** Lower bound of the wheel's minutes. */
  private firstMinute = Infinity;
  private changes: StartChanges = { time: [], dims: [], delta: [] };
  /** UTC day (start ms) → open sessions starting in it. */
  private openByDay = new Map<number, number>();
  /** Users whose open sessions changed since `clearChanged` (may repeat), and the current epoch. */
  private changed: number[] = [];
  private epoch = 1;

  /** `compact`: give back the slots of a closed burst (`clearChanged`); off only to compare with a table that keeps them. */
  constructor(
    gapMs: number,
    private readonly options: { compact?: boolean } = {},
  ) {
    this.gapMs = gapMs;
  }

  get openCount(): number {
    return this.count;
  }

  /**
   * Assigns an event to its session and returns that session's slot (valid while it is open: the
   * caller stamps its id with `writeId`): user fingerprint `key`; row `row` of `users` and
   * `eventIds` (read only when a session opens or its first event changes); event time `t` (ms,
   * never behind the last watermark given to `close`); screen name or null; the event's
   * interned dimensions.
   */
  assign(key: number, users: Data<Utf8>, eventIds: Data<Utf8>, row: number, t: number, screen: string | null, dims: DimValues): number {
    const gap = this.gapMs;
    // The latest session whose window (start − gap, …) reaches back before t; later ones start ≥ a gap after t.
    let s = this.tails.get(key);
    let after = NONE;
    while (s !== NONE && t <= this.startOf[s]! - gap) {
      after = s;
      s = this.prevOf[s]!;
    }
    if (s === NONE || t >= this.endOf[s]! + gap) return this.open(key, users, eventIds, row, t, screen, dims, s, after);
    // Sessions are ≥ gap apart, so only the one before can also be within the gap: t bridges them.
    const p = this.prevOf[s]!;
    if (p !== NONE && t < this.endOf[p]! + gap) {
      this.join(p, eventIds, row, t, screen, dims);
      this.merge(p, s);
      s = p;
    } else this.join(s, eventIds, row, t, screen, dims);
    if (this.epochOf[s] !== this.epoch) this.mark(s);
    return s;
  }

  /** Writes the id of the open session in `slot` (16 ASCII characters: `sessionIdOf`) at `offset`. */
  writeId(slot: number, out: Uint8Array, offset: number): void {
    const ids = this.idBytes;
    const from = slot * SESSION_ID_CHARS;
    for (let k = 0; k < SESSION_ID_CHARS; k++) out[offset + k] = ids[from + k]!;
  }

  /** The open session in `slot` as a plain object. */
  session(slot: number): ClosedSession {
    return this.fields(slot, this.dimsOf[slot]!);
  }

  /**
   * Keys of the users whose open sessions changed (opened, grew, merged, closed) since the last
   * `clearChanged`, each once: what an incremental checkpoint writes (`userSessions`).
   */
  changedUsers(): number[] {
    return [...new Set(this.changed)];
  }

  /** After the changes were checkpointed. Also gives back the slots of a burst that has closed (see `compact`). */
  clearChanged(): void {
    this.changed = [];
    this.epoch++;
    if (this.options.compact !== false && this.used > COMPACT_MIN_SLOTS && this.count * 4 < this.used && this.changes.time.length === 0) this.compact();
  }

  /** Slots allocated (open sessions plus free slots below the high-water mark). */
  get slotCount(): number {
    return this.cap;
  }

  /**
   * Rebuilds the slot arrays for the open sessions only. Freed slots are reused but never given
   * back, so after a burst of users (a replay, a spike) most of them would stay allocated; run when
   * fewer than a quarter are in use, between checkpoints (nothing journalled, nothing changed).
   */
  private compact(): void {
    const byValue = new Map<string, DimValues>();
    for (let s = 0; s < this.used; s++) if (this.liveOf[s] === 1) byValue.set(dimsKey(this.dimsOf[s]!), this.dimsOf[s]!);
    this.restore(this.snapshot(), (d, v, c) => byValue.get(`${d}\u0001${v}\u0001${c}`)!);
  }

  /** Snapshots of one user's open sessions, by start (empty when none). */
  userSessions(key: number): SessionSnapshot[] {
    const out: SessionSnapshot[] = [];
    for (let s = this.tails.get(key); s !== NONE; s = this.prevOf[s]!) out.unshift(this.snapshotOf(s));
    return out;
  }

  /** Takes the journal of session count changes since the last call (see `StartChanges`). */
  takeStartChanges(): StartChanges {
    const out = this.changes;
    this.changes = { time: [], dims: [], delta: [] };
    return out;
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
        if (this.liveOf[s] !== 1 || this.filedOf[s] !== minute) continue; // freed, or filed again since
        if (this.endOf[s]! + this.gapMs <= watermarkMs) {
          out.push(this.session(s));
          this.countDay(this.startOf[s]!, -1);
          this.unlink(s);
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
    for (const key of this.tails.keysOf()) out.push(...this.userSessions(key));
    return out;
  }

  /**
   * Restores open sessions; `intern` maps dimension values to the caller's interned object. With
   * `changed`, every restored user counts as changed (a checkpoint in an older format is rewritten).
   */
  restore(state: SessionSnapshot[], intern: (d: string, v: string, c: string) => DimValues, changed = false): void {
    this.clearSlots();
    this.tails = new KeyMap();
    this.wheel = new Map();
    this.firstMinute = Infinity;
    this.count = 0;
    this.changes = { time: [], dims: [], delta: [] };
    this.changed = [];
    this.openByDay = new Map();
    this.reserve(state.length);
    const sorted = [...state].sort((a, b) => a.key - b.key || a.start - b.start);
    let last = NONE;
    for (const x of sorted) {
      const s = this.allocate();
      this.keyOf[s] = x.key;
      this.strings.setString(s, USER, x.user);
      this.startOf[s] = x.start;
      this.endOf[s] = x.end;
      this.countOf[s] = x.count;
      this.strings.setString(s, FIRST_EVENT, x.firstEventId);
      this.dimsOf[s] = intern(...x.dims);
      this.firstScreenOf[s] = this.screen(x.firstScreen);
      this.firstScreenTimeOf[s] = x.firstScreenTime;
      this.lastScreenOf[s] = this.screen(x.lastScreen);
      this.lastScreenTimeOf[s] = x.lastScreenTime;
      if (x.aliases !== null && x.aliases.length > 0) this.aliasesOf.set(s, [...x.aliases]);
      for (let k = 0; k < SESSION_ID_CHARS; k++) this.idBytes[s * SESSION_ID_CHARS + k] = x.id.charCodeAt(k);
      this.epochOf[s] = 0;
      this.prevOf[s] = NONE;
      this.nextOf[s] = NONE;
      if (last !== NONE && this.keyOf[last] === x.key) {
        this.nextOf[last] = s;
        this.prevOf[s] = last;
      }
      this.tails.set(x.key, s);
      last = s;
      this.count++;
      this.file(s);
      this.countDay(x.start, 1);
      if (changed) this.changed.push(x.key);
    }
  }

  /**
   * Erasure: drops every open session of user `key` (journalling −1 for each start, so open
   * windows stop counting them) and returns how many there were. The caller persists the removal.
   */
  removeUser(key: number): number {
    let n = 0;
    for (let s = this.tails.get(key); s !== NONE; s = this.tails.get(key)) {
      this.journal(this.startOf[s]!, this.dimsOf[s]!, -1); // also counts its day down, as a merge does
      this.unlink(s);
      n++;
    }
    return n;
  }

  /** Starts (ms) of the UTC days in which open sessions start, ascending (a handful). */
  openDays(): number[] {
    return [...this.openByDay.keys()].sort((a, b) => a - b);
  }

  /** Opens a session for the event between `prev` and `next` (the user's neighbouring sessions' slots, or NONE). */
  private open(key: number, users: Data<Utf8>, eventIds: Data<Utf8>, row: number, t: number, screen: string | null, dims: DimValues, prev: number, next: number): number {
    const neighbour = prev !== NONE ? prev : next;
    const s = this.allocate();
    if (neighbour !== NONE) this.strings.copy(s, USER, neighbour);
    else this.strings.set(s, USER, users.values, users.valueOffsets[row]!, users.valueOffsets[row + 1]!);
    this.keyOf[s] = key;
    this.setId(s, t);
    this.startOf[s] = t;
    this.endOf[s] = t;
    this.countOf[s] = 1;
    this.strings.set(s, FIRST_EVENT, eventIds.values, eventIds.valueOffsets[row]!, eventIds.valueOffsets[row + 1]!);
    this.dimsOf[s] = dims;
    const name = this.screen(screen);
    this.firstScreenOf[s] = name;
    this.lastScreenOf[s] = name;
    this.firstScreenTimeOf[s] = name === null ? 0 : t;
    this.lastScreenTimeOf[s] = name === null ? 0 : t;
    this.epochOf[s] = this.epoch;
    this.prevOf[s] = prev;
    this.nextOf[s] = next;
    this.changed.push(key);
    if (prev !== NONE) this.nextOf[prev] = s;
    if (next !== NONE) this.prevOf[next] = s;
    else this.tails.set(key, s);
    this.count++;
    this.file(s);
    this.journal(t, dims, 1);
    return s;
  }

  private join(s: number, eventIds: Data<Utf8>, row: number, t: number, screen: string | null, dims: DimValues): void {
    this.countOf[s]!++;
    const start = this.startOf[s]!;
    if (t < start || (t === start && this.strings.compare(eventIds.values, eventIds.valueOffsets[row]!, eventIds.valueOffsets[row + 1]!, s, FIRST_EVENT) < 0)) {
      this.journal(start, this.dimsOf[s]!, -1);
      this.journal(t, dims, 1);
      if (t < start) {
        this.addAlias(s, this.idOf(s));
        this.setId(s, t);
        this.startOf[s] = t;
      }
      this.strings.set(s, FIRST_EVENT, eventIds.values, eventIds.valueOffsets[row]!, eventIds.valueOffsets[row + 1]!);
      this.dimsOf[s] = dims;
    }
    if (t > this.endOf[s]!) this.endOf[s] = t;
    if (screen !== null) {
      const first = this.firstScreenOf[s] ?? null;
      const firstTime = this.firstScreenTimeOf[s]!;
      if (first === null || t < firstTime || (t === firstTime && screen < first)) {
        this.firstScreenOf[s] = this.screen(screen);
        this.firstScreenTimeOf[s] = t;
      }
      const lastName = this.lastScreenOf[s] ?? null;
      const lastTime = this.lastScreenTimeOf[s]!;
      if (lastName === null || t > lastTime || (t === lastTime && screen > lastName)) {
        this.lastScreenOf[s] = this.screen(screen);
        this.lastScreenTimeOf[s] = t;
      }
    }
  }

  /** Folds `n` (the next session of the same user, all of whose events are later) into `s`. */
  private merge(s: number, n: number): void {
    this.countOf[s]! += this.countOf[n]!;
    if (this.endOf[n]! > this.endOf[s]!) this.endOf[s] = this.endOf[n]!;
    if (this.firstScreenOf[s] === null && this.firstScreenOf[n] !== null) {
      this.firstScreenOf[s] = this.firstScreenOf[n] ?? null;
      this.firstScreenTimeOf[s] = this.firstScreenTimeOf[n]!;
    }
    if (this.lastScreenOf[n] !== null) {
      this.lastScreenOf[s] = this.lastScreenOf[n] ?? null;
      this.lastScreenTimeOf[s] = this.lastScreenTimeOf[n]!;
    }
    this.addAlias(s, this.idOf(n));
    const older = this.aliasesOf.get(n);
    if (older !== undefined) this.aliasesOf.get(s)!.push(...older);
    this.journal(this.startOf[n]!, this.dimsOf[n]!, -1);
    this.unlink(n);
  }

  /** Sets the id of the session in slot `s` for start `t` (from its user id's bytes). */
  private setId(s: number, t: number): void {
    const at = this.strings.at(s, USER);
    writeSessionIdOfBytes(this.strings.bytes, at, at + this.strings.length(s, USER), t, this.idBytes, s * SESSION_ID_CHARS);
  }

  private addAlias(s: number, id: string): void {
    const list = this.aliasesOf.get(s);
    if (list === undefined) this.aliasesOf.set(s, [id]);
    else list.push(id);
  }

  private idOf(s: number): string {
    return idString(this.idBytes, s * SESSION_ID_CHARS);
  }

  private snapshotOf(s: number): SessionSnapshot {
    const dims = this.dimsOf[s]!;
    return this.fields(s, [dims.d, dims.v, dims.c]);
  }

  /** The session in slot `s` as a plain object, with `dims` as given (interned object or values). */
  private fields<D>(s: number, dims: D): Omit<ClosedSession, 'dims'> & { dims: D } {
    return {
      key: this.keyOf[s]!,
      id: this.idOf(s),
      user: this.strings.get(s, USER),
      start: this.startOf[s]!,
      end: this.endOf[s]!,
      count: this.countOf[s]!,
      firstEventId: this.strings.get(s, FIRST_EVENT),
      dims,
      firstScreen: this.firstScreenOf[s] ?? null,
      firstScreenTime: this.firstScreenTimeOf[s]!,
      lastScreen: this.lastScreenOf[s] ?? null,
      lastScreenTime: this.lastScreenTimeOf[s]!,
      aliases: this.aliasesOf.get(s) ?? null,
    };
  }

  /** One string per distinct screen name (up to SCREEN_INTERN_MAX of them), shared by the sessions. */
  private screen(name: string | null): string | null {
    if (name === null) return null;
    const known = this.screens.get(name);
    if (known !== undefined) return known;
    if (this.screens.size < SCREEN_INTERN_MAX) this.screens.set(name, name);
    return name;
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

  private mark(s: number): void {
    this.epochOf[s] = this.epoch;
    this.changed.push(this.keyOf[s]!);
  }

  /** Takes the session out of its user's list and frees its slot. */
  private unlink(s: number): void {
    const key = this.keyOf[s]!;
    const prev = this.prevOf[s]!;
    const next = this.nextOf[s]!;
    this.changed.push(key);
    this.count--;
    if (prev !== NONE) this.nextOf[prev] = next;
    if (next !== NONE) this.prevOf[next] = prev;
    else if (prev !== NONE) this.tails.set(key, prev);
    else this.tails.delete(key);
    this.liveOf[s] = 0;
    this.aliasesOf.delete(s);
    // Drop the strings (their bytes become the arena's garbage) and the references; the slot is reused.
    this.strings.clear(s);
    this.firstScreenOf[s] = null;
    this.lastScreenOf[s] = null;
    this.free.push(s);
  }

  private clearSlots(): void {
    this.cap = 0;
    this.used = 0;
    this.free = [];
    for (const a of ['keyOf', 'startOf', 'endOf', 'firstScreenTimeOf', 'lastScreenTimeOf'] as const) this[a] = new Float64Array(0);
    for (const a of ['countOf', 'prevOf', 'nextOf', 'epochOf', 'filedOf'] as const) this[a] = new Int32Array(0);
    this.liveOf = new Uint8Array(0);
    this.idBytes = new Uint8Array(0);
    this.strings.reset();
    this.dimsOf = [];
    this.firstScreenOf = [];
    this.lastScreenOf = [];
    this.aliasesOf = new Map();
    this.screens = new Map();
  }

  private allocate(): number {
    let s = this.free.pop();
    if (s === undefined) {
      if (this.used === this.cap) this.reserve(this.used + 1);
      s = this.used++;
    }
    this.liveOf[s] = 1;
    return s;
  }

  /** Room for at least `n` slots (growing by a quarter: at most a fifth of a large table's slots unused; each growth copies). */
  private reserve(n: number): void {
    if (n <= this.cap) return;
    const cap = Math.max(n, Math.ceil(this.cap * 1.25), 1024);
    this.keyOf = grown(this.keyOf, cap);
    this.startOf = grown(this.startOf, cap);
    this.endOf = grown(this.endOf, cap);
    this.firstScreenTimeOf = grown(this.firstScreenTimeOf, cap);
    this.lastScreenTimeOf = grown(this.lastScreenTimeOf, cap);
    this.countOf = grown(this.countOf, cap);
    this.prevOf = grown(this.prevOf, cap);
    this.nextOf = grown(this.nextOf, cap);
    this.epochOf = grown(this.epochOf, cap);
    this.filedOf = grown(this.filedOf, cap);
    this.liveOf = grown(this.liveOf, cap);
    this.idBytes = grown(this.idBytes, cap * SESSION_ID_CHARS);
    this.strings.reserve(cap);
    this.cap = cap;
  }

  private file(s: number): void {
    const minute = Math.floor((this.endOf[s]! + this.gapMs) / WHEEL_MS);
    this.filedOf[s] = minute;
    let list = this.wheel.get(minute);
    if (list === undefined) this.wheel.set(minute, (list = []));
    list.push(s);
    if (minute < this.firstMinute) this.firstMinute = minute;
  }
}
