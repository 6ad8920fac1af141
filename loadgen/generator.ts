/**
 * Seeded, reproducible app-engagement traffic as Segment-shaped events (300–600 B of JSON each).
 *
 * The model, per generator (one partition of the users):
 * - Users have static traits (device type, OS, app version, country, locale…) drawn from a hash
 *   of (seed, user), so a user looks the same whichever partition or worker generates it.
 * - A user is in one of three states: eligible (may start a session), in a session, or resting.
 *   New sessions go to eligible users with zipf-skewed probability (a Fenwick tree over ranks);
 *   events inside a session are seconds to minutes apart; after its last event a user rests for
 *   more than `sessionGapMs` (gap + 1 min + exponential extra) before it is eligible again.
 *   So, per user and in event time, consecutive events of one session are < gap apart and
 *   consecutive sessions are > gap apart: a gap-based sessionizer finds exactly `sessionNo`.
 * - Event time is simulated: call k happens at `startTime + k × stepMs` (or at `clock()`). Each
 *   call emits one event: the next due event of an active session, else a new session's first
 *   event. When the users are too few for the rate, due times are pulled forward (in-session
 *   gaps shrink, counted in `stats.compressed`) rather than breaking the session invariants.
 *
 *   user u:  [s1: e e e e]  rest > gap  [s2: e e]  rest > gap  [s3: e e e …
 *                 ^ seconds–minutes apart
 *
 * Knobs, none of which breaks the invariants above:
 * - duplicates: a recent valid message is sent again, unchanged (a client retry);
 * - out-of-order: with `jitterMs` > 0 some events are held back up to that long (simulated)
 *   and delivered after later events; their event time is unchanged;
 * - late / too-late: a whole session of an idle user that happened 10–90 min (late, within the
 *   default 2 h lateness) or 3–5 h (too late) ago is delivered now, in one burst — an SDK
 *   flushing its offline queue;
 * - invalid: an extra event that the server must reject (no user id, bad or future timestamp,
 *   track without a name); it is not part of any user's timeline;
 * - clock skew: timestamps carry the device clock (`clockSkewMs` ahead); the sender adds a
 *   matching `sentAt` so the server can correct it.
 */
import { internalError, userError } from '../common/errors.js';
import { Random, mix32 } from './random.js';
import { MinHeap } from './min-heap.js';
import { ZipfPicker } from './zipf-picker.js';

export { rng } from './random.js';

/** Options of one generator. Times in epoch ms, durations in ms, rates are fractions in [0, 1). */
export interface GeneratorOptions {
  seed: number;
  /** Distinct users across all partitions; this generator owns users u < users with u % partitions === partition. */
  users: number;
  /** Event time of the first call (epoch ms). */
  startTime: number;
  /** Simulated ms between consecutive calls of `next()` (of this generator). */
  stepMs: number;
  /** When given, the simulated time of each call instead of the stepped clock (kept monotone). */
  clock?: () => number;
  /** Zipf exponent of user activity. Default 1.1. */
  zipf?: number;
  /** Sessions of a user are separated by more than this (set it to the engine's session gap). Default 30 min. */
  sessionGapMs?: number;
  /** Mean of the exponential extra rest after gap + 1 min. Default 2 h. */
  idleMeanMs?: number;
  /** Mean ms between events of a session (clamped to 1 s … min(5 min, gap / 3)). Default 20 s. */
  eventGapMeanMs?: number;
  /** Fraction of calls that resend a recent valid message (same messageId). Default 0. */
  duplicateRate?: number;
  /** Max simulated ms an event is held back (out-of-order delivery). Default 0. */
  jitterMs?: number;
  /** Fraction of events held back when jitterMs > 0. Default 0.25. */
  outOfOrderRate?: number;
  /** Fraction of events that belong to offline sessions delivered 10–90 min late. Default 0. */
  lateRate?: number;
  /** Fraction of events that belong to offline sessions delivered 3–5 h late. Default 0. */
  tooLateRate?: number;
  /** Fraction of calls that emit an invalid event. Default 0. */
  invalidRate?: number;
  /** Device clock skew (ms) added to every timestamp. Default 0. */
  clockSkewMs?: number;
  /** This generator's partition (0-based) among `partitions`. Default 0 of 1. */
  partition?: number;
  partitions?: number;
}

/** A Segment `track` or `screen` call as an SDK sends it inside a batch. */
export interface SegmentEvent {
  type: 'track' | 'screen';
  messageId: string;
  userId?: string;
  anonymousId?: string;
  event?: string;
  name?: string;
  timestamp: string;
  context: SegmentContext;
  properties: Record<string, unknown>;
}

export interface SegmentContext {
  app: { name: string; version: string };
  device: { type: string; model: string };
  os: { name: string; version: string };
  library: { name: string; version: string };
  locale: string;
  timezone: string;
  location: { country: string };
  network: { wifi: boolean };
}

export type InvalidKind = 'missing_user' | 'bad_timestamp' | 'future_timestamp' | 'missing_event';
export type Lateness = 'on_time' | 'late' | 'too_late';

/**
 * One generated event. `message` is shared with duplicates of it and must not be mutated.
 * `json` caches `JSON.stringify(message)` once a sender serialized it.
 */
export interface GeneratedEvent {
  message: SegmentEvent;
  /** True event time (ms), without device clock skew. */
  eventTime: number;
  kind: 'valid' | 'duplicate' | 'invalid';
  /** The user's session number (1-based, in event-time order); -1 for invalid events. */
  sessionNo: number;
  /** The user id the server derives (userId ?? anonymousId); '' when the event has none. */
  userId: string;
  /** `event` for track calls, 'screen' for screen calls ('' for a nameless invalid track). */
  eventType: string;
  lateness: Lateness;
  /** Which rule an invalid event breaks. */
  invalid?: InvalidKind;
  json?: string;
}

/** Counters of what a generator emitted (all calls of `next()`). */
export interface GeneratorStats {
  valid: number;
  duplicates: number;
  invalid: number;
  late: number;
  tooLate: number;
  sessions: number;
  /** Events emitted before their scheduled in-session time because no user was free. */
  compressed: number;
  /** Sessions made longer because no other user was free to start one. */
  extended: number;
}

interface DeviceProfile {
  type: 'ios' | 'android' | 'web';
  os: string;
  osVersions: readonly string[];
  models: readonly string[];
  library: { name: string; version: string };
}

const DEVICES: readonly DeviceProfile[] = [
  {
    type: 'ios',
    os: 'iOS',
    osVersions: ['17.5.1', '18.1', '18.3.2'],
    models: ['iPhone14,5', 'iPhone15,2', 'iPhone16,1', 'iPad13,4'],
    library: { name: 'analytics-ios', version: '4.1.8' },
  },
  {
    type: 'android',
    os: 'Android',
    osVersions: ['12', '13', '14'],
    models: ['SM-S911B', 'SM-A546B', 'Pixel 8', 'Pixel 7a'],
    library: { name: 'analytics-android', version: '4.11.3' },
  },
  {
    type: 'web',
    os: 'Mac OS X',
    osVersions: ['10.15.7', '14.4'],
    models: ['Macintosh'],
    library: { name: 'analytics.js', version: '5.2.0' },
  },
];
/** Cumulative device-type shares: 45 % iOS, 43 % Android, 12 % web. */
const DEVICE_CDF = [0.45, 0.88, 1];
const APP_VERSIONS = ['4.2.0', '4.1.3', '4.0.0', '3.9.1'];
const COUNTRIES = [
  { code: 'US', locale: 'en-US', tz: 'America/New_York' },
  { code: 'DE', locale: 'de-DE', tz: 'Europe/Berlin' },
  { code: 'BR', locale: 'pt-BR', tz: 'America/Sao_Paulo' },
  { code: 'IN', locale: 'en-IN', tz: 'Asia/Kolkata' },
  { code: 'GB', locale: 'en-GB', tz: 'Europe/London' },
  { code: 'FR', locale: 'fr-FR', tz: 'Europe/Paris' },
  { code: 'JP', locale: 'ja-JP', tz: 'Asia/Tokyo' },
  { code: 'MX', locale: 'es-MX', tz: 'America/Mexico_City' },
] as const;
const APP_OBJECTS = APP_VERSIONS.map((version) => ({ name: 'Acme Shop', version }));
const DEVICE_OBJECTS = DEVICES.map((d) => d.models.map((model) => ({ type: d.type, model })));
const OS_OBJECTS = DEVICES.map((d) => d.osVersions.map((version) => ({ name: d.os, version })));
const LOCATION_OBJECTS = COUNTRIES.map((c) => ({ country: c.code }));
const WIFI = { wifi: true };
const CELLULAR = { wifi: false };
const SCREENS = ['Home', 'Search', 'Product', 'Cart', 'Checkout', 'Profile', 'Settings', 'Feed', 'Notifications', 'Onboarding'];
const CATEGORIES = ['shoes', 'outdoor', 'books', 'kitchen', 'toys', 'garden'];

const INSTALLED = 'Application Installed';
const OPENED = 'Application Opened';
const PUSH_RECEIVED = 'Push Notification Received';
const PUSH_TAPPED = 'Push Notification Tapped';
const ORDER = 'Order Completed';

/** In-session actions after the opening, as a cumulative distribution. */
const ACTIONS: ReadonlyArray<readonly [number, string]> = [
  [0.46, 'screen'],
  [0.6, 'Button Clicked'],
  [0.7, 'Swipe'],
  [0.8, 'Product Viewed'],
  [0.85, 'Search Performed'],
  [0.9, 'Product Added'],
  [0.93, ORDER],
  [0.97, PUSH_RECEIVED],
  [1, 'screen'],
];

/** How a session begins. */
const enum Opening {
  Install = 0,
  Open = 1,
  PushOpen = 2,
  PushOnly = 3,
}

/** How far ahead a `future_timestamp` invalid event is: ten years. */
export const FUTURE_MS = 3650 * 86_400_000;
const RECENT = 256;
const MAX_HELD = 65_536;
const MINUTE = 60_000;
const HOUR = 3_600_000;

/** The mean of the session-length distribution (1 + floor(Exp(6)), capped at 60). */
const MEAN_SESSION_EVENTS = 1 + 1 / (Math.exp(1 / 6) - 1);

function hex(n: number, width: number): string {
  return n.toString(16).padStart(width, '0');
}

export class TrafficGenerator {
  readonly options: Readonly<Required<Omit<GeneratorOptions, 'clock'>>> & { clock?: () => number };
  readonly stats: GeneratorStats = { valid: 0, duplicates: 0, invalid: 0, late: 0, tooLate: 0, sessions: 0, compressed: 0, extended: 0 };
  private readonly r: Random;
  private readonly n: number;
  private readonly idPrefix: string;

  // Per local user j (global id = j × partitions + partition): static traits…
  private readonly device: Uint8Array;
  private readonly model: Uint8Array;
  private readonly osVersion: Uint8Array;
  private readonly appVersion: Uint8Array;
  private readonly country: Uint8Array;
  private readonly anonymous: Uint8Array;
  // …and the simulation state.
  private readonly installed: Uint8Array;
  private readonly inSession: Uint8Array;
  private readonly opening: Uint8Array;
  private readonly pos: Int32Array;
  private readonly left: Int32Array;
  /** Number of the live session (current or last). */
  private readonly sessionNo: Int32Array;
  /** Session numbers handed out so far (live and offline). */
  private readonly sessionsNumbered: Int32Array;
  private readonly lastTime: Float64Array;
  /** First event time of the user in this run (live or offline); +Infinity before any. */
  private readonly firstTime: Float64Array;
  private readonly installedAtStart: Uint8Array;
  /** Start of the current live session. */
  private readonly sessionStart: Float64Array;
  /** Last event time of the latest session before the current live one. */
  private readonly prevEnd: Float64Array;
  private readonly restUntil: Float64Array;

  /** Users that may start a session (zipf-weighted). */
  private readonly picker: ZipfPicker;
  /** Users in a live session (zipf-weighted): who gets an extra event when nobody is due or free. */
  private readonly inSessionPicker: ZipfPicker;
  private readonly active = new MinHeap(1024);
  private readonly resting = new MinHeap(1024);

  private readonly held = new MinHeap(64);
  private readonly heldSlots: Array<GeneratedEvent | undefined> = [];
  private readonly freeSlots: number[] = [];
  private readonly burst: GeneratedEvent[] = [];
  private burstPos = 0;
  private readonly recent: GeneratedEvent[] = [];
  private recentPos = 0;

  private readonly anonIds: Array<string | undefined> = [];
  private isoSecond = NaN;
  private isoPrefix = '';
  private tick = 0;
  private now = -Infinity;
  private offset = 0;
  private seq = 0;
  private readonly minRestMs: number;
  private readonly maxEventGapMs: number;
  private calls = 0;
  private lateRolls = 0;
  /** Per lateness class (0 late, 1 too late): offline deliveries tried, made, and their events. */
  private readonly bursts = [0, 0];
  private readonly burstAttempts = [0, 0];
  private readonly burstEvents = [0, 0];

  constructor(options: GeneratorOptions) {
    const o = {
      zipf: 1.1,
      sessionGapMs: 30 * MINUTE,
      idleMeanMs: 2 * HOUR,
      eventGapMeanMs: 20_000,
      duplicateRate: 0,
      jitterMs: 0,
      outOfOrderRate: 0.25,
      lateRate: 0,
      tooLateRate: 0,
      invalidRate: 0,
      clockSkewMs: 0,
      partition: 0,
      partitions: 1,
      ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)),
    } as Required<Omit<GeneratorOptions, 'clock'>> & { clock?: () => number };
    validateGeneratorOptions(o);
    this.options = o;
    this.r = new Random(o.seed, 1 + o.partition);
    this.idPrefix = `${hex(mix32(o.seed), 8)}-${hex(o.partition & 0xffff, 4)}-4`;
    this.n = Math.max(0, Math.ceil((o.users - o.partition) / o.partitions));
    const n = this.n;
    this.device = new Uint8Array(n);
    this.model = new Uint8Array(n);
    this.osVersion = new Uint8Array(n);
    this.appVersion = new Uint8Array(n);
    this.country = new Uint8Array(n);
    this.anonymous = new Uint8Array(n);
    this.installed = new Uint8Array(n);
    this.inSession = new Uint8Array(n);
    this.opening = new Uint8Array(n);
    this.pos = new Int32Array(n);
    this.left = new Int32Array(n);
    this.sessionNo = new Int32Array(n);
    this.sessionsNumbered = new Int32Array(n);
    this.lastTime = new Float64Array(n).fill(-Infinity);
    this.sessionStart = new Float64Array(n).fill(-Infinity);
    this.prevEnd = new Float64Array(n).fill(-Infinity);
    this.firstTime = new Float64Array(n).fill(Infinity);
    this.installedAtStart = new Uint8Array(n);
    this.restUntil = new Float64Array(n).fill(-Infinity);
    for (let j = 0; j < n; j++) {
      const u = j * o.partitions + o.partition;
      const t = new Random(o.seed, 0x10000 + u);
      const d = t.next();
      const dev = d < DEVICE_CDF[0]! ? 0 : d < DEVICE_CDF[1]! ? 1 : 2;
      this.device[j] = dev;
      this.model[j] = t.int(DEVICES[dev]!.models.length);
      this.osVersion[j] = t.int(DEVICES[dev]!.osVersions.length);
      this.appVersion[j] = Math.floor(Math.pow(t.next(), 2) * APP_VERSIONS.length);
      this.country[j] = Math.floor(Math.pow(t.next(), 1.6) * COUNTRIES.length);
      this.anonymous[j] = t.next() < 0.15 ? 1 : 0;
      this.installed[j] = t.next() < 0.6 ? 1 : 0;
      this.installedAtStart[j] = this.installed[j]!;
    }
    this.picker = new ZipfPicker(n, o.zipf);
    this.inSessionPicker = new ZipfPicker(n, o.zipf, false);
    this.minRestMs = o.sessionGapMs + MINUTE;
    this.maxEventGapMs = Math.min(5 * MINUTE, o.sessionGapMs / 3);
  }

  /** Users this generator owns. */
  get userCount(): number {
    return this.n;
  }

  /** The global user id of local user j, as sent (`user-…` or `anon-…`). */
  userIdOf(j: number): string {
    const u = j * this.options.partitions + this.options.partition;
    return this.anonymous[j] === 1 ? `anon-${u}` : `user-${u}`;
  }

  /** Device-generated anonymous id of local user j (cached). */
  private anonymousIdOf(j: number): string {
    let a = this.anonIds[j];
    if (a === undefined) {
      const u = j * this.options.partitions + this.options.partition;
      a = `${hex(mix32(u ^ 0x5bd1e995), 8)}-${hex(mix32(u + this.options.seed) & 0xffff, 4)}-4${hex(mix32(u) & 0xfff, 3)}-a${hex(mix32(~u) & 0xfff, 3)}-${hex(mix32(u * 7 + 1), 8)}${hex(mix32(u * 13 + 5) & 0xffff, 4)}`;
      this.anonIds[j] = a;
    }
    return a;
  }

  /** The next event (valid, duplicate or invalid). */
  next(): GeneratedEvent {
    const o = this.options;
    const now = this.advance();
    const r = this.r;
    this.calls++;
    // Duplicates and invalid events are drawn on every call, so their shares are exact in expectation.
    if (o.duplicateRate > 0 && this.recent.length > 0 && r.next() < o.duplicateRate) {
      const orig = this.recent[r.int(this.recent.length)]!;
      this.stats.duplicates++;
      return { ...orig, kind: 'duplicate' };
    }
    if (o.invalidRate > 0 && r.next() < o.invalidRate) return this.invalidEvent(now);
    if (this.burstPos < this.burst.length) return this.fromBurst();
    if (this.held.size > 0 && (this.held.topKey <= now || this.held.size >= MAX_HELD)) return this.release();
    if (o.lateRate + o.tooLateRate > 0) {
      // Offline sessions start with the probability that makes late events the asked share of all
      // calls, given how many calls reach this point and how long offline sessions turn out to be.
      this.lateRolls++;
      const x = r.next();
      const qLate = this.lateProbability(0, o.lateRate);
      if (x < qLate) {
        if (this.offlineSession(now, false)) return this.fromBurst();
      } else if (x < qLate + this.lateProbability(1, o.tooLateRate) && this.offlineSession(now, true)) return this.fromBurst();
    }
    for (;;) {
      const e = this.liveEvent(now);
      if (o.jitterMs > 0 && r.next() < o.outOfOrderRate) {
        this.hold(e, e.eventTime + r.next() * o.jitterMs);
        if (this.held.topKey <= now) return this.release();
        continue;
      }
      return this.accept(e);
    }
  }

  /**
   * The chance to start an offline delivery of class c on a roll, so that its events make up
   * `share` of all calls, given how many calls reach the roll, how often a delivery finds a user
   * and how many events deliveries turn out to carry.
   */
  private lateProbability(c: 0 | 1, share: number): number {
    if (share <= 0) return 0;
    const meanEvents = this.bursts[c]! > 20 ? this.burstEvents[c]! / this.bursts[c]! : MEAN_SESSION_EVENTS;
    const success = (this.bursts[c]! + 1) / (this.burstAttempts[c]! + 1);
    return (share * this.calls) / (this.lateRolls * meanEvents * success);
  }

  /** Advances the simulated clock by one call and wakes users whose rest is over. */
  private advance(): number {
    const o = this.options;
    const t = (o.clock ? o.clock() : o.startTime + this.tick * o.stepMs) + this.offset;
    this.tick++;
    if (t > this.now) this.now = t;
    const now = this.now;
    while (this.resting.size > 0 && this.resting.topKey <= now) {
      const until = this.resting.topKey;
      const j = this.resting.pop();
      if (this.inSession[j] === 0 && this.restUntil[j] === until) this.picker.set(j, true);
    }
    return now;
  }

  private accept(e: GeneratedEvent): GeneratedEvent {
    this.stats.valid++;
    if (e.lateness === 'late') this.stats.late++;
    else if (e.lateness === 'too_late') this.stats.tooLate++;
    if (this.recent.length < RECENT) this.recent.push(e);
    else {
      this.recent[this.recentPos] = e;
      this.recentPos = (this.recentPos + 1) % RECENT;
    }
    return e;
  }

  private fromBurst(): GeneratedEvent {
    const e = this.burst[this.burstPos++]!;
    if (this.burstPos === this.burst.length) {
      this.burst.length = 0;
      this.burstPos = 0;
    }
    return this.accept(e);
  }

  private hold(e: GeneratedEvent, deliverAt: number): void {
    const slot = this.freeSlots.pop() ?? this.heldSlots.length;
    this.heldSlots[slot] = e;
    this.held.push(deliverAt, slot);
  }

  private release(): GeneratedEvent {
    const slot = this.held.pop();
    const e = this.heldSlots[slot]!;
    this.heldSlots[slot] = undefined;
    this.freeSlots.push(slot);
    return this.accept(e);
  }

  /** The next event of the live simulation at `now`. */
  private liveEvent(now: number): GeneratedEvent {
    if (this.active.size > 0 && this.active.topKey <= now) {
      const t = this.active.topKey;
      return this.emit(this.active.pop(), t);
    }
    if (this.picker.enabled > 0) {
      const j = this.picker.pick(this.r.next());
      this.startSession(j, now);
      return this.emit(j, now);
    }
    // Every user is busy or resting: a zipf-chosen user in a session gets an extra event now,
    // before its scheduled one (its in-session gaps shrink; its schedule stays).
    if (this.inSessionPicker.enabled > 0) {
      const j = this.inSessionPicker.pick(this.r.next());
      this.stats.compressed++;
      const e = this.build(j, now, this.eventName(this.opening[j]!, this.pos[j]!), this.sessionNo[j]!, 'on_time');
      this.pos[j]!++;
      this.lastTime[j] = now;
      if (--this.left[j]! <= 0) this.left[j] = 1;
      return e;
    }
    // Nobody in a session and nobody free (only with a handful of users): let simulated time
    // jump to the first wake-up.
    while (this.resting.size > 0) {
      const until = this.resting.topKey;
      const j = this.resting.pop();
      if (this.inSession[j] === 0 && this.restUntil[j] === until) {
        this.offset += until - now;
        this.now = until;
        this.startSession(j, until);
        return this.emit(j, until);
      }
    }
    throw internalError('loadgen_no_users', 'loadgen generator has no users'); // unreachable: users ≥ partitions
  }

  private sessionLength(): number {
    return 1 + Math.min(59, Math.floor(this.r.exp(6)));
  }

  private eventGap(): number {
    return Math.min(this.maxEventGapMs, Math.max(1000, Math.round(this.r.exp(this.options.eventGapMeanMs))));
  }

  /** How a session of user j begins and how many events it has. */
  private plan(j: number): { opening: Opening; n: number } {
    const n = this.sessionLength();
    if (this.installed[j] === 0) return { opening: Opening.Install, n: Math.max(n, 2) };
    const x = this.r.next();
    if (x < 0.08) return { opening: Opening.PushOnly, n: 1 };
    if (x < 0.2) return { opening: Opening.PushOpen, n: Math.max(n, 3) };
    return { opening: Opening.Open, n };
  }

  private startSession(j: number, t: number): void {
    const { opening, n } = this.plan(j);
    this.installed[j] = 1;
    this.picker.set(j, false);
    this.inSessionPicker.set(j, true);
    this.inSession[j] = 1;
    this.prevEnd[j] = this.lastTime[j]!;
    this.sessionStart[j] = t;
    if (this.firstTime[j] === Infinity) this.firstTime[j] = t;
    this.sessionNo[j] = ++this.sessionsNumbered[j]!;
    this.stats.sessions++;
    this.pos[j] = 0;
    this.opening[j] = opening;
    this.left[j] = n;
  }

  /** Emits user j's scheduled session event at time t and schedules the next one (or the rest). */
  private emit(j: number, t: number): GeneratedEvent {
    const e = this.build(j, t, this.eventName(this.opening[j]!, this.pos[j]!), this.sessionNo[j]!, 'on_time');
    this.pos[j]!++;
    this.lastTime[j] = t;
    if (--this.left[j]! <= 0 && this.picker.enabled === 0) {
      // Nobody could take over: the session goes on rather than leaving too few users in play.
      this.left[j] = this.sessionLength();
      this.stats.extended++;
    }
    if (this.left[j]! > 0) this.active.push(t + this.eventGap(), j);
    else this.endSession(j, t);
    return e;
  }

  private endSession(j: number, t: number): void {
    this.inSession[j] = 0;
    this.inSessionPicker.set(j, false);
    const until = t + this.minRestMs + this.r.exp(this.options.idleMeanMs);
    this.restUntil[j] = until;
    this.resting.push(until, j);
  }

  /**
   * Queues a late delivery: a whole session that happened `delay` ago, for a user who had no
   * activity within a gap of it (an offline device flushing its queue), or else one late event
   * inside a live session that already spans that time. False when nobody fits in a few tries.
   */
  private offlineSession(now: number, tooLate: boolean): boolean {
    const r = this.r;
    const delay = tooLate ? r.range(3 * HOUR, 5 * HOUR) : r.range(10 * MINUTE, 90 * MINUTE);
    const lateness: Lateness = tooLate ? 'too_late' : 'late';
    const end = Math.round(now - delay);
    const c = tooLate ? 1 : 0;
    this.burstAttempts[c]!++;
    for (let attempt = 0; attempt < 16; attempt++) {
      // Zipf first (heavy users go offline too), then anyone: light users idle longest.
      const j = attempt < 4 ? this.picker.pick(r.next()) : r.int(this.n);
      if (j < 0) continue;
      const live = this.inSession[j] === 1;
      const { opening, n } = this.plan(j);
      const times = new Float64Array(n);
      times[n - 1] = end;
      for (let k = n - 2; k >= 0; k--) times[k] = times[k + 1]! - this.eventGap();
      const from = times[0]! - this.minRestMs;
      const to = end + this.minRestMs;
      // The window [from, to] must hold none of the user's activity: it lies before all of it (and
      // the user's install, if it happened in this run, stays first), after all of it (an idle
      // user), or between the previous session and the live one.
      const beforeAll = to <= this.firstTime[j]! && (this.firstTime[j] === Infinity || this.installedAtStart[j] === 1);
      const afterAll = !live && this.lastTime[j]! <= from;
      const between = live && this.prevEnd[j]! <= from && to <= this.sessionStart[j]! && this.opening[j] !== Opening.Install;
      if (!beforeAll && !afterAll && !between) continue;
      if (opening === Opening.Install && !(beforeAll || this.installed[j] === 0)) continue;
      if (this.firstTime[j]! > times[0]!) this.firstTime[j] = times[0]!;
      const no = ++this.sessionsNumbered[j]!;
      this.installed[j] = 1;
      this.stats.sessions++;
      for (let k = 0; k < n; k++) this.burst.push(this.build(j, times[k]!, this.eventName(opening, k), no, lateness));
      this.bursts[c]!++;
      this.burstEvents[c]! += n;
      if (live) {
        if (between) this.prevEnd[j] = end;
        return true;
      }
      if (!afterAll) return true; // before all activity: the user's later timeline is unchanged
      this.lastTime[j] = end;
      // The next live session comes more than a gap after this one (a resting user may rest longer).
      const until = end + this.minRestMs + r.exp(this.options.idleMeanMs);
      if (this.picker.isEnabled(j)) {
        this.restUntil[j] = until;
        if (until > now) {
          this.picker.set(j, false);
          this.resting.push(until, j);
        }
      } else if (until > this.restUntil[j]!) {
        this.restUntil[j] = until;
        this.resting.push(until, j);
      }
      return true;
    }
    // A live session long enough to contain the late event's time.
    for (let attempt = 0; attempt < 4; attempt++) {
      const j = this.inSessionPicker.pick(r.next());
      if (j < 0 || this.sessionStart[j]! >= end) continue;
      this.burst.push(this.build(j, end, this.eventName(Opening.Open, 1 + r.int(1000)), this.sessionNo[j]!, lateness));
      this.bursts[c]!++;
      this.burstEvents[c]!++;
      return true;
    }
    return false;
  }

  private nextMessageId(): string {
    // UUID-shaped and unique: seed hash, partition, then a 72-bit per-generator counter.
    const s = this.seq++;
    const low = s % 2 ** 48;
    const mid = s < 2 ** 48 ? '000-8000-' : `${hex(Math.floor(s / 2 ** 60) & 0xfff, 3)}-8${hex(Math.floor(s / 2 ** 48) & 0xfff, 3)}-`;
    return this.idPrefix + mid + hex(low, 12);
  }

  private context(j: number): SegmentContext {
    // Children are shared, read-only objects: only the top level is allocated per event.
    const dev = this.device[j]!;
    const c = COUNTRIES[this.country[j]!]!;
    return {
      app: APP_OBJECTS[this.appVersion[j]!]!,
      device: DEVICE_OBJECTS[dev]![this.model[j]!]!,
      os: OS_OBJECTS[dev]![this.osVersion[j]!]!,
      library: DEVICES[dev]!.library,
      locale: c.locale,
      timezone: c.tz,
      location: LOCATION_OBJECTS[this.country[j]!]!,
      network: this.r.next() < 0.62 ? WIFI : CELLULAR,
    };
  }

  /** ISO-8601 of t, reusing the formatted second (events cluster in time). */
  private iso(t: number): string {
    const sec = Math.floor(t / 1000);
    if (sec !== this.isoSecond) {
      this.isoSecond = sec;
      this.isoPrefix = new Date(sec * 1000).toISOString().slice(0, 20);
    }
    const ms = t - sec * 1000;
    return this.isoPrefix + (ms < 10 ? '00' : ms < 100 ? '0' : '') + ms + 'Z';
  }

  /** The event name at position `p` of a session that began with `opening`. */
  private eventName(opening: Opening, p: number): string {
    switch (opening) {
      case Opening.Install:
        if (p === 0) return INSTALLED;
        if (p === 1) return OPENED;
        break;
      case Opening.PushOnly:
        return PUSH_RECEIVED;
      case Opening.PushOpen:
        if (p === 0) return PUSH_RECEIVED;
        if (p === 1) return PUSH_TAPPED;
        if (p === 2) return OPENED;
        break;
      case Opening.Open:
        if (p === 0) return OPENED;
        break;
    }
    const x = this.r.next();
    for (const [p2, name] of ACTIONS) if (x < p2) return name;
    return 'screen';
  }

  private build(j: number, time: number, name: string, sessionNo: number, lateness: Lateness): GeneratedEvent {
    const r = this.r;
    const t = Math.round(time);
    const id = this.userIdOf(j);
    const anonymousId = this.anonymousIdOf(j);
    const message: SegmentEvent = {
      type: name === 'screen' ? 'screen' : 'track',
      messageId: this.nextMessageId(),
      ...(this.anonymous[j] === 1 ? { anonymousId: id } : { userId: id, anonymousId }),
      timestamp: this.iso(t + this.options.clockSkewMs),
      context: this.context(j),
      properties: {},
    };
    const campaign = `spring-${(sessionNo * 7 + j) % 12}`;
    switch (name) {
      case 'screen': {
        const screen = r.next() < 0.3 ? 'Home' : r.pick(SCREENS);
        message.name = screen;
        message.properties = { path: `/${screen.toLowerCase()}`, load_ms: 40 + r.int(900), referrer: r.pick(SCREENS) };
        break;
      }
      case INSTALLED:
        message.properties = { version: message.context.app.version, source: r.next() < 0.7 ? 'organic' : 'campaign' };
        break;
      case OPENED:
        message.properties = { from_background: r.next() < 0.4, version: message.context.app.version };
        break;
      case PUSH_RECEIVED:
      case PUSH_TAPPED:
        message.properties = { campaign, channel: 'push', message_id: `m-${r.int(1e6)}` };
        break;
      case ORDER:
        message.properties = { order_id: `o-${this.seq}`, revenue: Math.round(500 + r.next() * 19_500) / 100, currency: 'USD', items: 1 + r.int(4) };
        break;
      case 'Product Viewed':
      case 'Product Added':
        message.properties = { product_id: `p-${r.int(5000)}`, category: r.pick(CATEGORIES), price: Math.round(199 + r.next() * 9800) / 100 };
        break;
      case 'Search Performed':
        message.properties = { query_length: 2 + r.int(20), results: r.int(200) };
        break;
      default:
        message.properties = { element: `btn-${r.int(40)}`, screen: r.pick(SCREENS), position: r.int(12) };
    }
    if (name !== 'screen') message.event = name;
    return { message, eventTime: t, kind: 'valid', sessionNo, userId: id, eventType: name, lateness };
  }

  /** An event the server must reject; not part of any user's timeline. */
  private invalidEvent(time: number): GeneratedEvent {
    const r = this.r;
    const now = Math.round(time);
    const j = r.int(this.n);
    const message: SegmentEvent = {
      type: 'track',
      messageId: this.nextMessageId(),
      userId: this.userIdOf(j),
      event: 'Button Clicked',
      timestamp: this.iso(now + this.options.clockSkewMs),
      context: this.context(j),
      properties: { element: `btn-${r.int(40)}`, screen: r.pick(SCREENS), position: r.int(12) },
    };
    const kinds: InvalidKind[] = ['missing_user', 'bad_timestamp', 'future_timestamp', 'missing_event'];
    const invalid = kinds[r.int(kinds.length)]!;
    let userId = message.userId!;
    let eventType = 'Button Clicked';
    switch (invalid) {
      case 'missing_user':
        delete message.userId;
        userId = '';
        break;
      case 'bad_timestamp':
        message.timestamp = 'not-a-time';
        break;
      case 'future_timestamp':
        // A device clock years ahead: in the future whatever simulated start time a run uses.
        message.timestamp = new Date(now + this.options.clockSkewMs + FUTURE_MS).toISOString();
        break;
      case 'missing_event':
        delete message.event;
        eventType = '';
        break;
    }
    this.stats.invalid++;
    return { message, eventTime: now, kind: 'invalid', sessionNo: -1, userId, eventType, lateness: 'on_time', invalid };
  }
}

/** Throws a user error naming the first bad generator option. */
export function validateGeneratorOptions(o: Required<Omit<GeneratorOptions, 'clock'>>): void {
  const bad = (what: string, got: unknown): never => {
    throw userError('invalid_option', `loadgen generator: ${what}, got ${JSON.stringify(got)}`);
  };
  if (!Number.isInteger(o.partitions) || o.partitions < 1) bad('partitions must be an integer ≥ 1', o.partitions);
  if (!Number.isInteger(o.partition) || o.partition < 0 || o.partition >= o.partitions) bad('partition must be in [0, partitions)', o.partition);
  if (!Number.isInteger(o.users) || o.users < o.partitions) bad(`users must be an integer ≥ partitions (${o.partitions})`, o.users);
  if (!Number.isFinite(o.startTime)) bad('startTime must be epoch ms', o.startTime);
  if (!(o.stepMs >= 0)) bad('stepMs must be ≥ 0', o.stepMs);
  if (!(o.sessionGapMs >= 60_000)) bad('sessionGapMs must be ≥ 60000 (1 min)', o.sessionGapMs);
  if (!(o.zipf >= 0)) bad('zipf must be ≥ 0', o.zipf);
  for (const k of ['duplicateRate', 'outOfOrderRate', 'lateRate', 'tooLateRate', 'invalidRate'] as const) {
    if (!(o[k] >= 0 && o[k] < 1)) bad(`${k} must be in [0, 1)`, o[k]);
  }
  if (!(o.lateRate + o.tooLateRate < 0.9)) bad('lateRate + tooLateRate must be < 0.9', o.lateRate + o.tooLateRate);
  if (!(o.jitterMs >= 0)) bad('jitterMs must be ≥ 0', o.jitterMs);
}

/** Convenience for tests: the first `n` events of a generator. */
export function generateEvents(options: GeneratorOptions, n: number): GeneratedEvent[] {
  const g = new TrafficGenerator(options);
  return Array.from({ length: n }, () => g.next());
}
