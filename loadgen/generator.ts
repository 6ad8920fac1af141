/**
 * Seeded, reproducible app-engagement traffic: zipf-skewed users, sessions separated by gaps,
 * installs, app opens, screen views, clicks, swipes, notification views/opens and purchases, as
 * Segment-shaped events of realistic size (300–600 B), plus the knobs that make real traffic
 * hard: client-retry duplicates, out-of-order jitter, late and too-late events, invalid events
 * and device clock skew.
 *
 * Time is simulated: event i happens at `startTime + i × stepMs` (plus per-event noise), so the
 * same seed gives the same events whatever the machine's speed.
 */

/** mulberry32: a small, fast, seeded PRNG (uniform in [0, 1)). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface GeneratorOptions {
  seed: number;
  /** Distinct users (this generator's share when partitioned). */
  users: number;
  /** Event time of the first event (epoch ms). */
  startTime: number;
  /** Simulated ms between consecutive events (all users together). */
  stepMs: number;
  /** Zipf exponent of user activity. Default 1.1. */
  zipf?: number;
  /** Inactivity that ends a session in the simulation (must exceed the engine's session gap). Default 45 min. */
  sessionGapMs?: number;
  duplicateRate?: number;
  /** Max ms an event's time is moved back (out-of-order within a batch). */
  jitterMs?: number;
  /** Fraction of events arriving 10–90 min late (within the default 2 h lateness). */
  lateRate?: number;
  /** Fraction of events arriving 3–5 h late (behind the watermark). */
  tooLateRate?: number;
  invalidRate?: number;
  /** Device clock skew in ms (sentAt and timestamps shifted; the server corrects it). */
  clockSkewMs?: number;
  /** Only users u with u % partitions === partition (worker threads split users). */
  partition?: number;
  partitions?: number;
}

export interface SegmentEvent {
  type: 'track' | 'screen';
  messageId: string;
  userId?: string;
  anonymousId?: string;
  event?: string;
  name?: string;
  timestamp: string;
  context: Record<string, unknown>;
  properties: Record<string, unknown>;
}

export interface GeneratedEvent {
  message: SegmentEvent;
  /** True event time (ms), after the knobs moved it. */
  eventTime: number;
  kind: 'valid' | 'duplicate' | 'invalid';
  sessionNo: number;
}

const DEVICES = [
  { type: 'ios', os: 'iOS', versions: ['17.4', '18.1'] },
  { type: 'android', os: 'Android', versions: ['13', '14'] },
  { type: 'web', os: 'Web', versions: [''] },
] as const;
const APP_VERSIONS = ['4.2.0', '4.1.3', '4.0.0', '3.9.1'];
const COUNTRIES = ['US', 'DE', 'BR', 'IN', 'GB', 'FR', 'JP', 'MX'];
const SCREENS = ['Home', 'Search', 'Product', 'Cart', 'Checkout', 'Profile', 'Settings', 'Onboarding'];
const ACTIONS = ['Button Clicked', 'Swipe', 'Product Viewed', 'Search Performed'];

interface UserState {
  id: string;
  device: (typeof DEVICES)[number];
  appVersion: string;
  country: string;
  installed: boolean;
  lastTime: number;
  sessionNo: number;
  left: number;
  /** Dormant (between sessions) until this time. */
  until: number;
}

export class TrafficGenerator {
  readonly options: Required<GeneratorOptions>;
  private readonly random: () => number;
  private readonly cdf: Float64Array;
  private readonly users: UserState[];
  private readonly recent: SegmentEvent[] = [];
  private i = 0;

  constructor(options: GeneratorOptions) {
    this.options = {
      zipf: 1.1,
      sessionGapMs: 45 * 60_000,
      duplicateRate: 0,
      jitterMs: 0,
      lateRate: 0,
      tooLateRate: 0,
      invalidRate: 0,
      clockSkewMs: 0,
      partition: 0,
      partitions: 1,
      ...options,
    };
    this.random = rng(this.options.seed * 2654435761 + this.options.partition);
    const ids: number[] = [];
    for (let u = 0; u < this.options.users * this.options.partitions; u++) if (u % this.options.partitions === this.options.partition) ids.push(u);
    this.users = ids.map((u) => {
      const r = rng(u + 7919 * this.options.seed);
      const device = DEVICES[Math.floor(r() * DEVICES.length)]!;
      return {
        id: `user-${u}`,
        device,
        appVersion: APP_VERSIONS[Math.floor(Math.pow(r(), 2) * APP_VERSIONS.length)]!,
        country: COUNTRIES[Math.floor(Math.pow(r(), 1.5) * COUNTRIES.length)]!,
        installed: r() < 0.7,
        lastTime: -Infinity,
        sessionNo: 0,
        left: 0,
        until: -Infinity,
      };
    });
    // Zipf CDF over user ranks.
    this.cdf = new Float64Array(this.users.length);
    let sum = 0;
    for (let k = 0; k < this.users.length; k++) sum += 1 / Math.pow(k + 1, this.options.zipf);
    let acc = 0;
    for (let k = 0; k < this.users.length; k++) {
      acc += 1 / Math.pow(k + 1, this.options.zipf) / sum;
      this.cdf[k] = acc;
    }
  }

  /** A zipf-ranked user who is not between sessions; when every candidate is, the top one continues its session. */
  private pickUser(now: number): { user: UserState; forced: boolean } {
    const x = this.random();
    let lo = 0;
    let hi = this.cdf.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.cdf[mid]! < x) lo = mid + 1;
      else hi = mid;
    }
    // A dormant user is skipped in favour of the next rank (bounded scan).
    for (let k = 0; k < 64; k++) {
      const u = this.users[(lo + k) % this.users.length]!;
      if (u.until <= now) return { user: u, forced: false };
    }
    return { user: this.users[lo]!, forced: true };
  }

  /** The next event (valid, duplicate or invalid). */
  next(): GeneratedEvent {
    const o = this.options;
    const now = o.startTime + this.i * o.stepMs;
    this.i++;
    const r = this.random;
    if (this.recent.length > 0 && r() < o.duplicateRate) {
      const dup = this.recent[Math.floor(r() * this.recent.length)]!;
      return { message: dup, eventTime: Date.parse(dup.timestamp) - o.clockSkewMs, kind: 'duplicate', sessionNo: -1 };
    }
    const { user: u, forced } = this.pickUser(now);
    if (forced && now - u.lastTime < o.sessionGapMs) {
      // Every candidate is resting: the chosen one's session goes on rather than restarting inside the gap.
      u.left = Math.max(u.left, 1);
      u.until = -Infinity;
    }
    let name: string;
    if (now - u.lastTime >= o.sessionGapMs || u.left <= 0) {
      u.sessionNo++;
      u.left = 2 + Math.floor(r() * 12);
      name = u.installed ? 'Application Opened' : 'Application Installed';
      u.installed = true;
    } else {
      const x = r();
      name = x < 0.45 ? 'screen' : x < 0.7 ? ACTIONS[Math.floor(r() * ACTIONS.length)]! : x < 0.8 ? 'Push Notification Received' : x < 0.86 ? 'Push Notification Tapped' : x < 0.9 ? 'Order Completed' : 'screen';
    }
    u.left--;
    u.lastTime = now;
    if (u.left <= 0) u.until = now + o.sessionGapMs + Math.floor(r() * o.sessionGapMs);
    let eventTime = Math.round(now - r() * o.jitterMs);
    const lateRoll = r();
    if (lateRoll < o.tooLateRate) eventTime -= Math.round((3 + 2 * r()) * 3_600_000);
    else if (lateRoll < o.tooLateRate + o.lateRate) eventTime -= Math.round((10 + 80 * r()) * 60_000);
    const messageId = `${o.seed.toString(36)}-${o.partition}-${(this.i - 1).toString(36)}`;
    const message: SegmentEvent = {
      type: name === 'screen' ? 'screen' : 'track',
      messageId,
      userId: u.id,
      timestamp: new Date(eventTime + o.clockSkewMs).toISOString(),
      context: {
        device: { type: u.device.type, manufacturer: u.device.type === 'ios' ? 'Apple' : 'Google', model: u.device.type === 'ios' ? 'iPhone15,2' : 'Pixel 8' },
        os: { name: u.device.os, version: u.device.versions[0] },
        app: { name: 'Acme', version: u.appVersion, build: '1042' },
        location: { country: u.country },
        library: { name: 'analytics-ios', version: '1.5.2' },
        locale: 'en-US',
        timezone: 'Europe/Berlin',
        network: { wifi: r() < 0.6 },
      },
      properties: {},
    };
    if (message.type === 'screen') {
      message.name = SCREENS[Math.floor(r() * SCREENS.length)]!;
      message.properties = { referrer: SCREENS[Math.floor(r() * SCREENS.length)], load_ms: Math.floor(50 + r() * 900) };
    } else {
      message.event = name;
      message.properties =
        name === 'Order Completed'
          ? { order_id: `o-${this.i}`, revenue: Math.round(r() * 20000) / 100, currency: 'USD' }
          : name.startsWith('Push')
            ? { campaign: `camp-${Math.floor(r() * 20)}`, channel: 'push' }
            : { element: `el-${Math.floor(r() * 50)}`, position: Math.floor(r() * 10) };
    }
    if (r() < o.invalidRate) {
      if (r() < 0.5) delete message.userId;
      else message.timestamp = 'not-a-time';
      return { message, eventTime, kind: 'invalid', sessionNo: u.sessionNo };
    }
    this.recent.push(message);
    if (this.recent.length > 256) this.recent.shift();
    return { message, eventTime, kind: 'valid', sessionNo: u.sessionNo };
  }
}

/** Convenience for tests: the first `n` events of a generator. */
export function generateEvents(options: GeneratorOptions, n: number): GeneratedEvent[] {
  const g = new TrafficGenerator(options);
  return Array.from({ length: n }, () => g.next());
}
