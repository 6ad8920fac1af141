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
 * two 32-bit hashes, its dimensions' and screens' interned ids), its user id and first event id as
 * bytes in one arena (kernels/slot-strings: 8 B each plus the bytes, 16 for a UUID, where a JS
 * string cost ≈ 40–64 B), and a 4-byte bucket of the user index (kernels/slot-index); as one
 * object per session (18 fields, four boxed doubles, its id as a string) it was ≈ 400 B
 * (bench/state-per-user.ts). Callers hold a session by its slot number while it is open; closed
 * sessions and snapshots come out as plain objects.
 */
import type { Data, Utf8 } from 'apache-arrow';
import { murmur3 } from '../../common/hash.js';
import { RecordReader, stringsRecord, type RecordWriter } from './record-bytes.js';
import { SlotIndex } from './slot-index.js';
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

/**
 * A session id is two 32-bit murmur3 hashes of `user ':' start` (seeds 0x5e55 and 0x10ad),
 * written as 16 lower-case hex digits. The table keeps the two hashes (8 bytes) per session.
 */
const ID_HASHES = 2;

/** Sets `out[i]`, `out[i + 1]` to the id hashes of sessionIdOf(user, start). */
function hashSessionId(user: string, start: number, out: Uint32Array, i: number): void {
  const key = encoder.encode(`${user}:${start}`);
  hashIdKey(key, key.length, out, i);
}

/** Where a session id's hash input is put together: the user id's bytes, ':', the start. */
let idKey = new Uint8Array(64);

/**
 * hashSessionId when `idKey` starts with the user id's `n` UTF-8 bytes, without decoding them: the
 * same hash input when they are ASCII; otherwise through the string (so that a sequence that is not
 * valid UTF-8 hashes as its decoded form does, as after a restore from the stored strings).
 */
function hashSessionIdOfKey(n: number, start: number, out: Uint32Array, i: number): void {
  let high = 0;
  for (let k = 0; k < n; k++) high |= idKey[k]!;
  if (high >= 0x80) {
    hashSessionId(decoder.decode(idKey.subarray(0, n)), start, out, i);
    return;
  }
  const time = String(start);
  if (idKey.length < n + 1 + time.length) idKey = grown(idKey, n + 1 + time.length);
  const key = idKey;
  key[n] = 0x3a; // ':'
  for (let k = 0; k < time.length; k++) key[n + 1 + k] = time.charCodeAt(k);
  hashIdKey(key, n + 1 + time.length, out, i);
}

/** Start times (ms) of dates as decimal strings are at most this long (−8.64e15 … 8.64e15); the key grows for longer ones. */
const TIME_CHARS = 17;

function hashIdKey(key: Uint8Array, length: number, out: Uint32Array, i: number): void {
  out[i] = murmur3(key, 0, length, 0x5e55);
  out[i + 1] = murmur3(key, 0, length, 0x10ad);
}

/** Writes the id of hashes (a, b) as 16 ASCII hex digits at `offset`. */
function writeHexId(a: number, b: number, out: Uint8Array, offset: number): void {
  for (let k = 0; k < 8; k++) {
    out[offset + k] = HEX[(a >>> (28 - 4 * k)) & 15]!;
    out[offset + 8 + k] = HEX[(b >>> (28 - 4 * k)) & 15]!;
  }
}

const idScratch = new Uint8Array(SESSION_ID_CHARS);

/** The id of hashes (a, b) as a string (String.fromCharCode with explicit arguments: a spread of a subarray was 5× slower; two toString(16) slower too). */
function idString(a: number, b: number): string {
  const c = idScratch;
  writeHexId(a, b, c, 0);
  return String.fromCharCode(c[0]!, c[1]!, c[2]!, c[3]!, c[4]!, c[5]!, c[6]!, c[7]!, c[8]!, c[9]!, c[10]!, c[11]!, c[12]!, c[13]!, c[14]!, c[15]!);
}

export function sessionIdOf(user: string, start: number): string {
  const h = new Uint32Array(ID_HASHES);
  hashSessionId(user, start, h, 0);
  return idString(h[0]!, h[1]!);
}

/** The hashes of a session id as written by sessionIdOf, or null when `id` is not one. */
function parseSessionId(id: string): [number, number] | null {
  if (!/^[0-9a-f]{16}$/.test(id)) return null;
  return [Number.parseInt(id.slice(0, 8), 16), Number.parseInt(id.slice(8), 16)];
}

/**
 * The binary stored form of a user's open sessions (`SessionTable.userRecord`, read back by
 * `readUserRecord`); integers as varints, strings as length + UTF-8 bytes (kernels/record-bytes):
 *
 *   u8 USER_RECORD · uvar n · n × { user, f64 start, uvar end − start, uvar count, firstEventId,
 *                                    device, version, country,
 *                                    firstScreen|null [svar its time − start],
 *                                    lastScreen|null [svar its time − start],
 *                                    uvar aliases, that many strings }
 *
 * by start. The key (the user's fingerprint) is the LMDB key; the id is sessionIdOf(user, start).
 * Written straight from the slots (no snapshot objects, no msgpack of them): per changed user at a
 * checkpoint, that was two fifths of the state's cost (bench/state-per-user.ts).
 */
const USER_RECORD = 0xb3;

/** A user's open sessions from their binary stored form (see USER_RECORD). */
export function readUserRecord(key: number, bytes: Uint8Array): SessionSnapshot[] {
  const r = new RecordReader(bytes);
  const kind = r.u8();
  if (kind !== USER_RECORD) throw new TypeError(`open sessions of user key ${key}: not a session record (first byte ${kind})`);
  const n = r.uvar();
  const out: SessionSnapshot[] = [];
  for (let k = 0; k < n; k++) {
    const user = r.string()!;
    const start = r.f64();
    const end = start + r.uvar();
    const count = r.uvar();
    const firstEventId = r.string()!;
    const dims: [string, string, string] = [r.string()!, r.string()!, r.string()!];
    const firstScreen = r.string();
    const firstScreenTime = firstScreen === null ? 0 : start + r.svar();
    const lastScreen = r.string();
    const lastScreenTime = lastScreen === null ? 0 : start + r.svar();
    const nAliases = r.uvar();
    const aliases: string[] = [];
    for (let a = 0; a < nAliases; a++) aliases.push(r.string()!);
    out.push({ key, id: sessionIdOf(user, start), user, start, end, count, firstEventId, dims, firstScreen, firstScreenTime, lastScreen, lastScreenTime, aliases: nAliases === 0 ? null : aliases });
  }
  if (!r.done) throw new TypeError(`open sessions of user key ${key}: bytes after the last session`);
  return out;
}

/** Sessions ordered by (start, id): an order that depends only on the sessions. */
export const byStartThenId = (a: ClosedSession, b: ClosedSession): number => a.start - b.start || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/** The slot strings of a session: its user id and its first event's id (UTF-8 bytes; DuckDB compares VARCHAR by bytes too). */
const USER = 0;
const FIRST_EVENT = 1;

/** A screen reference: no screen; the screen is in `rareScreens` (not interned); else the interned name's id. */
const NO_SCREEN = -1;
const RARE_SCREEN = -2;
/** Which of a session's screens (`screenOf[slot * 2 + which]`). */
const FIRST_SCREEN = 0;
const LAST_SCREEN = 1;
/** A screen time ≥ 2^31 ms (24.8 days) after its session's start: a session that long is kept exactly, aside. */
const LONG_AFTER_START = -1;

/** Epochs count 1 … MAX_EPOCH, then start over (every slot's epoch reset to 0), so one byte holds a slot's. */
const MAX_EPOCH = 255;

/** A growable list of slot numbers (a wheel minute's): 4 B an entry, where a JS array of small integers takes 8. */
class SlotList {
  items = new Int32Array(16);
  length = 0;

  push(slot: number): void {
    if (this.length === this.items.length) {
      const items = new Int32Array(this.length * 2);
      items.set(this.items);
      this.items = items;
    }
    this.items[this.length++] = slot;
  }
}

/** Below this many slots ever used, freed slots are not worth giving back (`compact`). */
const COMPACT_MIN_SLOTS = 65_536;
const dimsKey = (x: DimValues): string => `${x.d}\u0001${x.v}\u0001${x.c}`;

/** Grows a typed array to `n` elements, keeping its contents. */
function grown<T extends Float64Array | Int32Array | Uint32Array | Uint8Array>(a: T, n: number): T {
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
  private countOf = new Int32Array(0);
  /** The user's previous (earlier start) and next (later start) open session's slot, or NONE. */
  private prevOf = new Int32Array(0);
  private nextOf = new Int32Array(0);
  /** The change epoch in which the session was last marked changed (see `changedUsers`); 0: in none since the epochs wrapped. */
  private epochOf = new Uint8Array(0);
  /** The wheel minute the session is filed under (an entry under another minute is stale). */
  private filedOf = new Int32Array(0);
  /** 1 while the slot holds an open session. */
  private liveOf = new Uint8Array(0);
  /** The current id's two hashes (`ID_HASHES` per slot). */
  private idHashes = new Uint32Array(0);
  /** User id and first event id (`USER`, `FIRST_EVENT`) as bytes. */
  private strings = new SlotStrings(2);
  /** The interned dimensions' id (`DimValues.id`); `dimsById` maps it back. */
  private dimsOf = new Int32Array(0);
  private dimsById: DimValues[] = [];
  /** First and last screen per slot (`FIRST_SCREEN`, `LAST_SCREEN`): an interned name's id, NO_SCREEN or RARE_SCREEN. */
  private screenOf = new Int32Array(0);
  /** Interned screen names (up to SCREEN_INTERN_MAX) and their ids. */
  private screenNames: string[] = [];
  private screenIds = new Map<string, number>();
  /** Screens beyond the interned ones, by `slot * 2 + which`. */
  private rareScreens = new Map<number, string>();
  /** Each screen's event time, as ms after the session's start; LONG_AFTER_START: in `longScreenTimes` (by `slot * 2 + which`). */
  private screenAtOf = new Int32Array(0);
  private longScreenTimes = new Map<number, number>();
  /** Earlier ids (renames, merged sessions), for the few sessions that have any. */
  private aliasesOf = new Map<number, string[]>();
  /** Stored-form bytes (`userRecord`) of each interned dimension combination and screen name, by id: written once, copied per session. */
  private dimsRecords: Uint8Array[] = [];
  private screenRecords: Uint8Array[] = [];

  /** User key → the slot of the user's latest open session (the tail of its list: in-order events find theirs at once); −1 (NONE) for none. */
  private tails = new SlotIndex();
  private count = 0;
  /**
   * Timer wheel of close deadlines: minute → slots filed under that minute of end + gap when
   * opened (or last refiled). A session that grew since is refiled when its minute comes due, an
   * entry whose slot was freed (merged, closed) or filed elsewhere since is dropped then, so
   * `close` touches only sessions whose minute is due.
   */
  private wheel = new Map<number, SlotList>();
  /** Lower bound of the wheel's minutes. */
  private firstMinute = Infinity;
  private changes: StartChanges = { time: [], dims: [], delta: [] };
  /** UTC day (start ms) → open sessions starting in it. */
  private openByDay = new Map<number, number>();
  /** Users whose open sessions changed since `clearChanged` (may repeat), and the current epoch. */
  private changed: number[] = [];
  private epoch = 1;

  /**
   * `compact`: give back the slots of a closed burst (`clearChanged`); off only to compare with a
   * table that keeps them. `screenInternMax`: distinct screen names interned (SCREEN_INTERN_MAX;
   * lower only to test the names beyond it).
   */
  constructor(
    gapMs: number,
    private readonly options: { compact?: boolean; screenInternMax?: number } = {},
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
    let s = this.tails.get(key, this.keyOf);
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
    writeHexId(this.idHashes[slot * ID_HASHES]!, this.idHashes[slot * ID_HASHES + 1]!, out, offset);
  }

  /** The open session in `slot` as a plain object. */
  session(slot: number): ClosedSession {
    return this.fields(slot, this.dims(slot));
  }

  /**
   * Keys of the users whose open sessions changed (opened, grew, merged, closed) since the last
   * `clearChanged`, each once: what an incremental checkpoint writes (`userRecord`).
   */
  changedUsers(): number[] {
    return [...new Set(this.changed)];
  }

  /** After the changes were checkpointed. Also gives back the slots of a burst that has closed (see `compact`). */
  clearChanged(): void {
    this.changed = [];
    if (++this.epoch > MAX_EPOCH) {
      this.epochOf.fill(0);
      this.epoch = 1;
    }
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
    for (let s = 0; s < this.used; s++) if (this.liveOf[s] === 1) byValue.set(dimsKey(this.dims(s)), this.dims(s));
    this.restore(this.snapshot(), (d, v, c) => byValue.get(`${d}\u0001${v}\u0001${c}`)!);
  }

  /** Snapshots of one user's open sessions, by start (empty when none). */
  userSessions(key: number): SessionSnapshot[] {
    const out: SessionSnapshot[] = [];
    for (let s = this.tails.get(key, this.keyOf); s !== NONE; s = this.prevOf[s]!) out.unshift(this.snapshotOf(s));
    return out;
  }

  /**
   * User `key`'s open sessions in their binary stored form (see USER_RECORD), written by `w` straight
   * from the slots; undefined when the user has none. A view of `w`'s buffer: store it (LMDB copies
   * it) before `w` is used again.
   */
  userRecord(key: number, w: RecordWriter): Uint8Array | undefined {
    let s = this.tails.get(key, this.keyOf);
    if (s === NONE) return undefined;
    let n = 1;
    while (this.prevOf[s] !== NONE) {
      s = this.prevOf[s]!;
      n++;
    }
    w.reset();
    w.u8(USER_RECORD);
    w.uvar(n);
    for (; s !== NONE; s = this.nextOf[s]!) {
      const start = this.startOf[s]!;
      w.slotString(this.strings, s, USER);
      w.f64(start);
      w.uvar(this.endOf[s]! - start);
      w.uvar(this.countOf[s]!);
      w.slotString(this.strings, s, FIRST_EVENT);
      const dimsId = this.dimsOf[s]!;
      let dims = this.dimsRecords[dimsId];
      if (dims === undefined) {
        const x = this.dimsById[dimsId]!;
        dims = this.dimsRecords[dimsId] = stringsRecord([x.d, x.v, x.c]);
      }
      w.raw(dims);
      for (let which = FIRST_SCREEN; which <= LAST_SCREEN; which++) {
        const id = this.screenOf[s * 2 + which]!;
        if (id === NO_SCREEN) {
          w.string(null);
          continue;
        }
        if (id >= 0) w.raw((this.screenRecords[id] ??= stringsRecord([this.screenNames[id]!])));
        else w.string(this.screenName(s, which));
        w.svar(this.screenTime(s, which) - start);
      }
      const aliases = this.aliasesOf.get(s);
      w.uvar(aliases?.length ?? 0);
      for (const a of aliases ?? []) w.string(a);
    }
    return w.bytes();
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
      for (let k = 0; k < list.length; k++) {
        const s = list.items[k]!;
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
    for (const tail of this.tails.slots()) out.push(...this.userSessions(this.keyOf[tail]!));
    return out;
  }

  /**
   * Restores open sessions; `intern` maps dimension values to the caller's interned object. With
   * `changed`, every restored user counts as changed (a checkpoint in an older format is rewritten).
   */
  restore(state: SessionSnapshot[], intern: (d: string, v: string, c: string) => DimValues, changed = false): void {
    this.clearSlots();
    this.tails = new SlotIndex();
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
      this.setDims(s, intern(...x.dims));
      this.setScreen(s, FIRST_SCREEN, x.firstScreen, x.firstScreenTime);
      this.setScreen(s, LAST_SCREEN, x.lastScreen, x.lastScreenTime);
      if (x.aliases !== null && x.aliases.length > 0) this.aliasesOf.set(s, [...x.aliases]);
      const hashes = parseSessionId(x.id);
      if (hashes === null) this.setId(s, x.start); // not an id this table wrote: the id of (user, start), as it would have written
      else [this.idHashes[s * ID_HASHES], this.idHashes[s * ID_HASHES + 1]] = hashes;
      this.epochOf[s] = 0;
      this.prevOf[s] = NONE;
      this.nextOf[s] = NONE;
      if (last !== NONE && this.keyOf[last] === x.key) {
        this.nextOf[last] = s;
        this.prevOf[s] = last;
      }
      this.tails.set(x.key, s, this.keyOf);
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
    for (let s = this.tails.get(key, this.keyOf); s !== NONE; s = this.tails.get(key, this.keyOf)) {
      this.journal(this.startOf[s]!, this.dims(s), -1); // also counts its day down, as a merge does
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
    this.setDims(s, dims);
    this.setScreen(s, FIRST_SCREEN, screen, t);
    this.setScreen(s, LAST_SCREEN, screen, t);
    this.epochOf[s] = this.epoch;
    this.prevOf[s] = prev;
    this.nextOf[s] = next;
    this.changed.push(key);
    if (prev !== NONE) this.nextOf[prev] = s;
    if (next !== NONE) this.prevOf[next] = s;
    else this.tails.set(key, s, this.keyOf);
    this.count++;
    this.file(s);
    this.journal(t, dims, 1);
    return s;
  }

  private join(s: number, eventIds: Data<Utf8>, row: number, t: number, screen: string | null, dims: DimValues): void {
    this.countOf[s]!++;
    const start = this.startOf[s]!;
    if (t < start || (t === start && this.strings.compare(eventIds.values, eventIds.valueOffsets[row]!, eventIds.valueOffsets[row + 1]!, s, FIRST_EVENT) < 0)) {
      this.journal(start, this.dims(s), -1);
      this.journal(t, dims, 1);
      if (t < start) {
        this.addAlias(s, this.idOf(s));
        this.setId(s, t);
        this.moveStart(s, t);
      }
      this.strings.set(s, FIRST_EVENT, eventIds.values, eventIds.valueOffsets[row]!, eventIds.valueOffsets[row + 1]!);
      this.setDims(s, dims);
    }
    if (t > this.endOf[s]!) this.endOf[s] = t;
    if (screen !== null) {
      const first = this.screenName(s, FIRST_SCREEN);
      const firstTime = this.screenTime(s, FIRST_SCREEN);
      if (first === null || t < firstTime || (t === firstTime && screen < first)) this.setScreen(s, FIRST_SCREEN, screen, t);
      const lastName = this.screenName(s, LAST_SCREEN);
      const lastTime = this.screenTime(s, LAST_SCREEN);
      if (lastName === null || t > lastTime || (t === lastTime && screen > lastName)) this.setScreen(s, LAST_SCREEN, screen, t);
    }
  }

  /** Folds `n` (the next session of the same user, all of whose events are later) into `s`. */
  private merge(s: number, n: number): void {
    this.countOf[s]! += this.countOf[n]!;
    if (this.endOf[n]! > this.endOf[s]!) this.endOf[s] = this.endOf[n]!;
    if (this.screenOf[s * 2 + FIRST_SCREEN] === NO_SCREEN && this.screenOf[n * 2 + FIRST_SCREEN] !== NO_SCREEN) {
      this.setScreen(s, FIRST_SCREEN, this.screenName(n, FIRST_SCREEN), this.screenTime(n, FIRST_SCREEN));
    }
    if (this.screenOf[n * 2 + LAST_SCREEN] !== NO_SCREEN) this.setScreen(s, LAST_SCREEN, this.screenName(n, LAST_SCREEN), this.screenTime(n, LAST_SCREEN));
    this.addAlias(s, this.idOf(n));
    const older = this.aliasesOf.get(n);
    if (older !== undefined) this.aliasesOf.get(s)!.push(...older);
    this.journal(this.startOf[n]!, this.dims(n), -1);
    this.unlink(n);
  }

  /** Sets the id of the session in slot `s` for start `t` (from its user id's bytes). */
  private setId(s: number, t: number): void {
    const n = this.strings.utf8Length(s, USER);
    if (idKey.length < n + 1 + TIME_CHARS) idKey = new Uint8Array(2 * (n + 1 + TIME_CHARS));
    this.strings.writeTo(s, USER, idKey, 0);
    hashSessionIdOfKey(n, t, this.idHashes, s * ID_HASHES);
  }

  private addAlias(s: number, id: string): void {
    const list = this.aliasesOf.get(s);
    if (list === undefined) this.aliasesOf.set(s, [id]);
    else list.push(id);
  }

  private idOf(s: number): string {
    return idString(this.idHashes[s * ID_HASHES]!, this.idHashes[s * ID_HASHES + 1]!);
  }

  private snapshotOf(s: number): SessionSnapshot {
    const dims = this.dims(s);
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
      firstScreen: this.screenName(s, FIRST_SCREEN),
      firstScreenTime: this.screenTime(s, FIRST_SCREEN),
      lastScreen: this.screenName(s, LAST_SCREEN),
      lastScreenTime: this.screenTime(s, LAST_SCREEN),
      aliases: this.aliasesOf.get(s) ?? null,
    };
  }

  private dims(s: number): DimValues {
    return this.dimsById[this.dimsOf[s]!]!;
  }

  private setDims(s: number, dims: DimValues): void {
    this.dimsOf[s] = dims.id;
    this.dimsById[dims.id] = dims;
  }

  /**
   * Screen `which` of slot `s`: its name (interned, up to SCREEN_INTERN_MAX distinct names shared by
   * the sessions, else kept for the slot alone) and the time of its event (the session's start must
   * be set, and the time not before it).
   */
  private setScreen(s: number, which: number, name: string | null, time: number): void {
    const i = s * 2 + which;
    if (this.screenOf[i] === RARE_SCREEN) this.rareScreens.delete(i);
    if (this.screenAtOf[i] === LONG_AFTER_START) this.longScreenTimes.delete(i);
    this.screenAtOf[i] = 0;
    if (name === null) {
      this.screenOf[i] = NO_SCREEN;
      return;
    }
    const after = time - this.startOf[s]!;
    if (after >= 0 && after <= 0x7fffffff) this.screenAtOf[i] = after;
    else {
      this.screenAtOf[i] = LONG_AFTER_START;
      this.longScreenTimes.set(i, time);
    }
    let id = this.screenIds.get(name);
    if (id === undefined && this.screenNames.length < (this.options.screenInternMax ?? SCREEN_INTERN_MAX)) {
      id = this.screenNames.push(name) - 1;
      this.screenIds.set(name, id);
    }
    if (id !== undefined) this.screenOf[i] = id;
    else {
      this.screenOf[i] = RARE_SCREEN;
      this.rareScreens.set(i, name);
    }
  }

  /** The event time of screen `which` of slot `s`; 0 when it has none. */
  private screenTime(s: number, which: number): number {
    const i = s * 2 + which;
    if (this.screenOf[i] === NO_SCREEN) return 0;
    const after = this.screenAtOf[i]!;
    return after === LONG_AFTER_START ? this.longScreenTimes.get(i)! : this.startOf[s]! + after;
  }

  /** Moves the start of the session in slot `s` earlier, to `t` (its screens' times are kept after the start). */
  private moveStart(s: number, t: number): void {
    const first = this.screenTime(s, FIRST_SCREEN);
    const last = this.screenTime(s, LAST_SCREEN);
    this.startOf[s] = t;
    for (const [which, time] of [[FIRST_SCREEN, first], [LAST_SCREEN, last]] as const) {
      if (this.screenOf[s * 2 + which] !== NO_SCREEN) this.setScreen(s, which, this.screenName(s, which), time);
    }
  }

  private screenName(s: number, which: number): string | null {
    const i = s * 2 + which;
    const id = this.screenOf[i]!;
    if (id >= 0) return this.screenNames[id]!;
    return id === NO_SCREEN ? null : this.rareScreens.get(i)!;
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
    else if (prev !== NONE) this.tails.set(key, prev, this.keyOf);
    else this.tails.delete(key, this.keyOf);
    this.liveOf[s] = 0;
    this.aliasesOf.delete(s);
    // Drop the strings (their bytes become the arena's garbage) and the screens; the slot is reused.
    this.strings.clear(s);
    this.setScreen(s, FIRST_SCREEN, null, 0);
    this.setScreen(s, LAST_SCREEN, null, 0);
    this.free.push(s);
  }

  private clearSlots(): void {
    this.cap = 0;
    this.used = 0;
    this.free = [];
    for (const a of ['keyOf', 'startOf', 'endOf'] as const) this[a] = new Float64Array(0);
    for (const a of ['countOf', 'prevOf', 'nextOf', 'filedOf', 'dimsOf', 'screenOf', 'screenAtOf'] as const) this[a] = new Int32Array(0);
    this.liveOf = new Uint8Array(0);
    this.epochOf = new Uint8Array(0);
    this.idHashes = new Uint32Array(0);
    this.strings.reset();
    this.dimsById = [];
    this.screenNames = [];
    this.screenIds = new Map();
    this.rareScreens = new Map();
    this.longScreenTimes = new Map();
    this.aliasesOf = new Map();
    this.dimsRecords = [];
    this.screenRecords = [];
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
    this.countOf = grown(this.countOf, cap);
    this.prevOf = grown(this.prevOf, cap);
    this.nextOf = grown(this.nextOf, cap);
    this.epochOf = grown(this.epochOf, cap);
    this.filedOf = grown(this.filedOf, cap);
    this.liveOf = grown(this.liveOf, cap);
    this.dimsOf = grown(this.dimsOf, cap);
    this.screenOf = grown(this.screenOf, cap * 2);
    this.screenAtOf = grown(this.screenAtOf, cap * 2);
    this.idHashes = grown(this.idHashes, cap * ID_HASHES);
    this.strings.reserve(cap);
    this.cap = cap;
  }

  private file(s: number): void {
    const minute = Math.floor((this.endOf[s]! + this.gapMs) / WHEEL_MS);
    this.filedOf[s] = minute;
    let list = this.wheel.get(minute);
    if (list === undefined) this.wheel.set(minute, (list = new SlotList()));
    list.push(s);
    if (minute < this.firstMinute) this.firstMinute = minute;
  }
}
