/**
 * Tumbling hourly and daily windows over (device_type, app_version, country), with all 8
 * grouping sets ('ALL' roll-ups), emitted as per-shard partials that add up across shards
 * (users are shard-partitioned, so per-shard exact distinct counts sum to the exact total).
 *
 * Accumulators live at the finest grain (window × full dimension tuple) with the set of users
 * seen there; roll-ups are built once per window at emission by summing counters and uniting
 * user sets, so a row costs one accumulator update per window, not eight.
 *
 * Emission: an hourly window when the watermark reaches its end; a daily window when the
 * watermark reaches its end plus the session gap (sessions open at midnight have closed by then).
 */
import { ALL } from '../../common/schema.js';

const HOUR = 3_600_000;
const DAY = 86_400_000;

/** Counter slots of an accumulator. */
export enum C {
  events,
  installs,
  sessions,
  screenViews,
  notificationViews,
  notificationOpens,
  sessionsClosed,
  sessionSeconds,
  bounces,
}
const SLOTS = 9;

/** Metric bits of an event type. */
export enum M {
  install = 1,
  screen = 2,
  notificationView = 4,
  notificationOpen = 8,
}

export interface Acc {
  d: string;
  v: string;
  c: string;
  n: Float64Array;
  users: Set<string>;
}

/** One grouping-set row of a window partial (numbers are this shard's). */
export interface PartialRow {
  device_type: string;
  app_version: string;
  country: string;
  events: number;
  active_users: number;
  installs: number;
  sessions: number;
  screen_views: number;
  notification_views: number;
  notification_opens: number;
  sessions_closed: number;
  session_seconds: number;
  bounces: number;
}

export interface WindowPartial {
  granularity: 'hourly' | 'daily';
  windowStart: number;
  rows: PartialRow[];
}

type Window = Map<string, Acc>;

export class AggregateOperator {
  private readonly sessionGapMs: number;
  readonly hourly = new Map<number, Window>();
  readonly daily = new Map<number, Window>();

  constructor(sessionGapMs: number) {
    this.sessionGapMs = sessionGapMs;
  }

  /** The accumulator of (window, dims), created on first use. */
  acc(granularity: 'hourly' | 'daily', windowStart: number, d: string, v: string, c: string): Acc {
    const windows = granularity === 'hourly' ? this.hourly : this.daily;
    let w = windows.get(windowStart);
    if (!w) windows.set(windowStart, (w = new Map()));
    const key = `${d}\u0001${v}\u0001${c}`;
    let a = w.get(key);
    if (!a) w.set(key, (a = { d, v, c, n: new Float64Array(SLOTS), users: new Set() }));
    return a;
  }

  /** Adds one event to both of its windows. */
  addEvent(hourAcc: Acc, dayAcc: Acc, user: string, metrics: number): void {
    for (const a of [hourAcc, dayAcc]) {
      const n = a.n;
      n[C.events]!++;
      if (metrics & M.install) n[C.installs]!++;
      if (metrics & M.screen) n[C.screenViews]!++;
      if (metrics & M.notificationView) n[C.notificationViews]!++;
      if (metrics & M.notificationOpen) n[C.notificationOpens]!++;
      a.users.add(user);
    }
  }

  /** A session closed: its length and bounce count toward the day it started in (if not yet emitted). */
  addClosedSession(start: number, d: string, v: string, c: string, durationS: number, bounce: boolean, emittedThrough: number): void {
    const day = Math.floor(start / DAY) * DAY;
    if (day + DAY + this.sessionGapMs <= emittedThrough) return;
    const a = this.acc('daily', day, d, v, c);
    a.n[C.sessionsClosed]!++;
    a.n[C.sessionSeconds]! += durationS;
    if (bounce) a.n[C.bounces]!++;
  }

  /** Removes and returns the partials of every window the watermark has passed. */
  emit(watermarkMs: number): { hourly: WindowPartial[]; daily: WindowPartial[] } {
    const hourly: WindowPartial[] = [];
    const daily: WindowPartial[] = [];
    for (const start of [...this.hourly.keys()].sort((a, b) => a - b)) {
      if (start + HOUR > watermarkMs) continue;
      hourly.push({ granularity: 'hourly', windowStart: start, rows: rollUp(this.hourly.get(start)!) });
      this.hourly.delete(start);
    }
    for (const start of [...this.daily.keys()].sort((a, b) => a - b)) {
      if (start + DAY + this.sessionGapMs > watermarkMs) continue;
      daily.push({ granularity: 'daily', windowStart: start, rows: rollUp(this.daily.get(start)!) });
      this.daily.delete(start);
    }
    return { hourly, daily };
  }

  /** Roll-ups of the open hourly windows (the live view). */
  openHourly(): WindowPartial[] {
    return [...this.hourly].map(([windowStart, w]) => ({ granularity: 'hourly' as const, windowStart, rows: rollUp(w, true) }));
  }

  snapshot(): unknown {
    const dump = (m: Map<number, Window>): unknown => [...m].map(([start, w]) => [start, [...w.values()].map((a) => [a.d, a.v, a.c, Array.from(a.n), [...a.users]])]);
    return { hourly: dump(this.hourly), daily: dump(this.daily) };
  }

  restore(state: unknown): void {
    const s = state as { hourly: Array<[number, Array<[string, string, string, number[], string[]]>]>; daily: typeof s.hourly };
    for (const [g, entries] of [
      ['hourly', s.hourly],
      ['daily', s.daily],
    ] as const) {
      for (const [start, accs] of entries) {
        for (const [d, v, c, n, users] of accs) {
          const a = this.acc(g, start, d, v, c);
          a.n.set(n);
          for (const u of users) a.users.add(u);
        }
      }
    }
  }
}

/** All 8 grouping sets of a window: counters summed, user sets united (sizes only). */
function rollUp(w: Window, totalOnly = false): PartialRow[] {
  const groups = new Map<string, { d: string; v: string; c: string; n: Float64Array; users: Set<string> }>();
  const masks = totalOnly ? [7] : [0, 1, 2, 3, 4, 5, 6, 7];
  for (const a of w.values()) {
    for (const mask of masks) {
      const d = mask & 1 ? ALL : a.d;
      const v = mask & 2 ? ALL : a.v;
      const c = mask & 4 ? ALL : a.c;
      const key = `${d}\u0001${v}\u0001${c}`;
      let g = groups.get(key);
      if (!g) groups.set(key, (g = { d, v, c, n: new Float64Array(SLOTS), users: new Set() }));
      for (let k = 0; k < SLOTS; k++) g.n[k]! += a.n[k]!;
      if (mask === 0) g.users = a.users;
      else for (const u of a.users) g.users.add(u);
    }
  }
  return [...groups.values()].map((g) => ({
    device_type: g.d,
    app_version: g.v,
    country: g.c,
    events: g.n[C.events]!,
    active_users: g.users.size,
    installs: g.n[C.installs]!,
    sessions: g.n[C.sessions]!,
    screen_views: g.n[C.screenViews]!,
    notification_views: g.n[C.notificationViews]!,
    notification_opens: g.n[C.notificationOpens]!,
    sessions_closed: g.n[C.sessionsClosed]!,
    session_seconds: g.n[C.sessionSeconds]!,
    bounces: g.n[C.bounces]!,
  }));
}

/**
 * Sums the partials of one window from every shard into gold rows (hourlyMetricsSchema or
 * dailyMetricsSchema columns; window_start in epoch ms). Rows are sorted for deterministic files.
 */
export function mergePartials(granularity: 'hourly' | 'daily', partials: WindowPartial[]): Array<Record<string, unknown>> {
  const byKey = new Map<string, PartialRow>();
  let windowStart = 0;
  for (const p of partials) {
    windowStart = p.windowStart;
    for (const r of p.rows) {
      const key = `${r.device_type}\u0001${r.app_version}\u0001${r.country}`;
      const acc = byKey.get(key);
      if (!acc) {
        byKey.set(key, { ...r });
        continue;
      }
      for (const f of ['events', 'active_users', 'installs', 'sessions', 'screen_views', 'notification_views', 'notification_opens', 'sessions_closed', 'session_seconds', 'bounces'] as const) {
        acc[f] += r[f];
      }
    }
  }
  const keys = [...byKey.keys()].sort();
  return keys.map((k) => {
    const r = byKey.get(k)!;
    const row: Record<string, unknown> = {
      window_start: windowStart,
      device_type: r.device_type,
      app_version: r.app_version,
      country: r.country,
      events: r.events,
      active_users: r.active_users,
      installs: r.installs,
      sessions: r.sessions,
      screen_views: r.screen_views,
      notification_views: r.notification_views,
      notification_opens: r.notification_opens,
    };
    if (granularity === 'daily') {
      row.avg_session_s = r.sessions_closed > 0 ? r.session_seconds / r.sessions_closed : null;
      row.bounce_rate = r.sessions_closed > 0 ? r.bounces / r.sessions_closed : null;
      row.notification_ctr = r.notification_views > 0 ? r.notification_opens / r.notification_views : null;
    }
    return row;
  });
}
