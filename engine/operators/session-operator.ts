/**
 * Sessionization per user with an inactivity gap, in arrival (log) order, deterministic.
 *
 * Rules:
 * - A user has at most one open session [start, end] (event times of its first/last events).
 * - An event at time t joins it when start − gap < t < end + gap (t may extend start or end).
 *   Exactly at the gap (t − end = gap) starts a new session, as does anything further away:
 *   the open session then closes immediately and the event opens a new one.
 * - A session closes when the watermark passes end + gap.
 * - session_id = 16 hex digits of murmur3(user_id ':' first-seen event time) with two seeds.
 * - first/last screen: `properties.name` of the session's earliest/latest screen event.
 * - Dimensions are those of the session's first-seen event.
 *
 * State is per user in a Map keyed by the user id; it is snapshotted as JSON at checkpoints.
 */
import { murmur3String } from '../../common/hash.js';

export interface OpenSession {
  id: string;
  user: string;
  start: number;
  end: number;
  count: number;
  firstScreen: string | null;
  firstScreenTime: number;
  lastScreen: string | null;
  lastScreenTime: number;
  device: string | null;
  version: string | null;
  country: string | null;
}

export interface ClosedSession extends OpenSession {}

export function sessionIdOf(user: string, firstSeen: number): string {
  const key = `${user}:${firstSeen}`;
  return murmur3String(key, 0x5e55).toString(16).padStart(8, '0') + murmur3String(key, 0x10ad).toString(16).padStart(8, '0');
}

export class SessionOperator {
  readonly gapMs: number;
  private open = new Map<string, OpenSession>();
  /** Earliest end among open sessions is not tracked exactly; `scanFloor` skips scans that cannot close anything. */
  private minEnd = Infinity;

  constructor(gapMs: number) {
    this.gapMs = gapMs;
  }

  get openCount(): number {
    return this.open.size;
  }

  /**
   * Assigns the event to a session. Returns the session (whose id stamps the silver row), whether
   * the event opened it, and a session the event closed early (if any).
   */
  assign(
    user: string,
    t: number,
    screen: string | null,
    device: string | null,
    version: string | null,
    country: string | null,
  ): { session: OpenSession; opened: boolean; closed: ClosedSession | undefined } {
    const s = this.open.get(user);
    if (s && t > s.start - this.gapMs && t < s.end + this.gapMs) {
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
      return { session: s, opened: false, closed: undefined };
    }
    const fresh: OpenSession = {
      id: sessionIdOf(user, t),
      user,
      start: t,
      end: t,
      count: 1,
      firstScreen: screen,
      firstScreenTime: screen === null ? 0 : t,
      lastScreen: screen,
      lastScreenTime: screen === null ? 0 : t,
      device,
      version,
      country,
    };
    this.open.set(user, fresh);
    if (t < this.minEnd) this.minEnd = t;
    return { session: fresh, opened: true, closed: s };
  }

  /** Removes and returns the sessions whose end + gap ≤ watermark, in user order for determinism. */
  close(watermarkMs: number): ClosedSession[] {
    if (watermarkMs < this.minEnd + this.gapMs) return [];
    const out: ClosedSession[] = [];
    let minEnd = Infinity;
    for (const [user, s] of this.open) {
      if (s.end + this.gapMs <= watermarkMs) {
        out.push(s);
        this.open.delete(user);
      } else if (s.end < minEnd) minEnd = s.end;
    }
    this.minEnd = minEnd;
    return out;
  }

  snapshot(): OpenSession[] {
    return [...this.open.values()];
  }

  restore(sessions: OpenSession[]): void {
    this.open = new Map(sessions.map((s) => [s.user, s]));
    this.minEnd = sessions.reduce((m, s) => Math.min(m, s.end), Infinity);
  }
}
