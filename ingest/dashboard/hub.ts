/**
 * The dashboard's push hub: once per tick it reads the counters (ingest's Prometheus counters,
 * the engine's live snapshot — the same object GET /v1/live serves — and the ingest tap),
 * evaluates the alerts, builds ONE JSON frame and hands it to `publish` (uWS pub/sub: every
 * client gets the same bytes). Clients that stopped reading are cut off before a publish.
 *
 *   timer ─▶ sample counters ─▶ deltas into rings (15 min) ─▶ window sums ─▶ alerts
 *         ─▶ frame {point, totals, engine, quality, alerts, windows, new tail entries}
 *         ─▶ drop slow clients (buffered > maxBackpressureBytes) ─▶ publish(frame)
 *
 * A newly connected page first gets an `init` frame: the last tick frame plus the whole 15-min
 * series and tail (built at most once per tick, shared by the clients that connect in it).
 */
import type { Logger } from 'pino';
import type { Counter } from 'prom-client';
import { ERASED_CODE } from '../erasures.js';
import { ingestMetrics } from '../metrics.js';
import { ALERT_NAMES, AlertBoard, evaluateAlerts, type AlertState, type FiringAlert } from './alerts.js';
import { HourlyHistory } from './history.js';
import { dashboardMetrics } from './metrics.js';
import type { DashboardOptions } from './options.js';
import type { TailEntry } from './tail.js';
import type { IngestTap, TapWindow } from './tap.js';

const HOUR = 3_600_000;
const DAY = 86_400_000;
/** The chart keeps 15 minutes. */
export const SERIES_MS = 15 * 60_000;

/** The fields of the engine's live snapshot (engine/coordinator.ts LiveSnapshot, GET /v1/live) the dashboard reads. */
export interface EngineLive {
  time: string;
  eventsPerSecond: number;
  acceptedTotal: number;
  processedTotal?: number;
  committedTotal?: number;
  duplicatesTotal: number;
  tooLateTotal: number;
  globalWatermark: string | null;
  watermarkLagSeconds: number | null;
  backlogEvents: number;
  lastCheckpointAgeSeconds: number | null;
  currentHour: { windowStart: string; events: number; activeUsers: number; sessions: number; notificationCtr: number | null } | null;
  currentDay?: { windowStart: string; sessionsClosed: number; bounceRate: number | null } | null;
  openSessions: number;
}

/** A connection the hub can measure and cut. */
export interface DashboardClient {
  getBufferedAmount(): number;
  /** Closes at once (nothing more is sent). */
  close(): void;
}

export interface WindowView extends TapWindow {
  /** Sessions started in the window, from the engine (today: summed over the hours this server saw; see sessionsSince). */
  sessions: number | null;
  sessionsSince: number | null;
  /**
   * Share of one-event sessions among the sessions that started in the window and have closed
   * (the engine's open daily window, the same definition as gold daily_metrics.bounce_rate):
   * today only; null for the hour (gold has no hourly bounce rate) or before any session closed.
   */
  bounceRate: number | null;
}

/** What every client receives each tick (JSON). Rates are per second over the tick. */
export interface TickFrame {
  kind: 'tick' | 'init';
  seq: number;
  time: number;
  tickMs: number;
  point: { t: number; acked: number; processed: number; committed: number; invalid: number };
  totals: { acked: number; rejected: number; late: number; processed: number | null; committed: number | null; accepted: number | null; duplicates: number | null; tooLate: number | null };
  /** The engine's live snapshot as GET /v1/live serves it (null: ingest only, or not reported yet). */
  engine: EngineLive | null;
  /** This server runs an engine (with `engine` null: it is starting, its figures not in yet). */
  hasEngine: boolean;
  quality: {
    windowSeconds: number;
    received: number;
    invalidRate: number | null;
    lateRate: number | null;
    duplicateRate: number | null;
    tooLateRate: number | null;
    /** Rejected events by reason code: in the window and since start. */
    rejectedByCode: Array<{ code: string; window: number; total: number }>;
  };
  alerts: FiringAlert[];
  rules: AlertState[];
  windows: { hour: WindowView; today: WindowView };
  /** New tail entries since the previous tick (init: the whole tail). */
  tail: TailEntry[];
  clients: number;
}

export interface InitFrame extends TickFrame {
  kind: 'init';
  series: { t: number[]; acked: number[]; processed: number[]; committed: number[]; invalid: number[] };
  config: { tickMs: number; tailSize: number; topN: number; thresholds: DashboardOptions['thresholds']; lateAfterMs: number };
}

export interface HubDeps {
  tap: IngestTap;
  /** The engine's live snapshot (deps.live of the ingest server); absent for ingest only. */
  live?: () => unknown;
  publish(frame: string): void;
  log: Logger;
  /** Wall clock (epoch ms); injectable for tests. */
  now?: () => number;
}

/** The page's hour/today figures as gauges, so Grafana shows what the page shows (the engine's where the page uses the engine's). */
function exportWindows(w: TickFrame['windows'], live: EngineLive | null): void {
  const g = dashboardMetrics.window;
  const eng = live?.currentHour && Date.parse(live.currentHour.windowStart) === w.hour.start ? live.currentHour : null;
  for (const [name, v, e] of [
    ['hour', w.hour, eng],
    ['today', w.today, null],
  ] as const) {
    g.set({ window: name, metric: 'events' }, e ? e.events : v.events);
    g.set({ window: name, metric: 'active_users' }, e ? e.activeUsers : v.activeUsers);
    g.set({ window: name, metric: 'sessions' }, v.sessions ?? Number.NaN);
    g.set({ window: name, metric: 'installs' }, v.installs);
    g.set({ window: name, metric: 'screen_views' }, v.screenViews);
    g.set({ window: name, metric: 'notification_ctr' }, (e ? e.notificationCtr : v.notificationCtr) ?? Number.NaN);
  }
  dashboardMetrics.checkpointAge.set(live?.lastCheckpointAgeSeconds ?? Number.NaN);
}

async function counterTotal(c: Counter): Promise<number> {
  let n = 0;
  for (const v of (await c.get()).values) n += v.value;
  return n;
}

async function counterByLabel(c: Counter, label: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const v of (await c.get()).values) {
    const k = String(v.labels[label] ?? '');
    out.set(k, (out.get(k) ?? 0) + v.value);
  }
  return out;
}

/** Per-tick deltas of the last 15 minutes, in parallel rings. */
class Rings {
  readonly cap: number;
  readonly t: Float64Array;
  readonly dt: Float64Array;
  readonly acked: Float64Array;
  readonly rejected: Float64Array;
  readonly processed: Float64Array;
  readonly committed: Float64Array;
  readonly duplicates: Float64Array;
  readonly tooLate: Float64Array;
  readonly late: Float64Array;
  readonly codes: Array<Map<string, number> | undefined>;
  /** Ticks recorded so far. */
  n = 0;

  constructor(cap: number) {
    this.cap = cap;
    this.t = new Float64Array(cap);
    this.dt = new Float64Array(cap);
    this.acked = new Float64Array(cap);
    this.rejected = new Float64Array(cap);
    this.processed = new Float64Array(cap);
    this.committed = new Float64Array(cap);
    this.duplicates = new Float64Array(cap);
    this.tooLate = new Float64Array(cap);
    this.late = new Float64Array(cap);
    this.codes = new Array(cap);
  }

  /** Sum of `ring` over the last `k` ticks. */
  sum(ring: Float64Array, k: number): number {
    let s = 0;
    for (let i = Math.max(0, this.n - k); i < this.n; i++) s += ring[i % this.cap]!;
    return s;
  }

  /** A ring as per-second rates, oldest first. */
  rates(ring: Float64Array): number[] {
    const out: number[] = [];
    for (let i = Math.max(0, this.n - this.cap); i < this.n; i++) {
      const j = i % this.cap;
      out.push(this.dt[j]! > 0 ? ring[j]! / this.dt[j]! : 0);
    }
    return out;
  }

  times(): number[] {
    const out: number[] = [];
    for (let i = Math.max(0, this.n - this.cap); i < this.n; i++) out.push(this.t[i % this.cap]! / 1000);
    return out;
  }
}

interface Sample {
  at: number;
  acked: number;
  rejected: number;
  rejectedByCode: Map<string, number>;
  late: number;
  rows: number;
  live: EngineLive | null;
}

export class DashboardHub {
  private readonly options: DashboardOptions;
  private readonly deps: HubDeps;
  private readonly now: () => number;
  private readonly rings: Rings;
  private readonly windowTicks: number;
  private readonly board = new AlertBoard();
  private readonly history: HourlyHistory;
  private readonly clients = new Set<DashboardClient>();
  /** Engine sessions of each hour of today as last seen in the live view (today = their sum). */
  private readonly sessionsByHour = new Map<number, number>();
  private readonly startedAt: number;
  private prev: Sample | undefined;
  private seq = 0;
  private tailSeq = 0;
  private last: TickFrame | undefined;
  private init: { seq: number; text: string } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private ticking = false;
  private hour = { start: 0, acked: 0, observedMs: 0 };

  constructor(options: DashboardOptions, deps: HubDeps) {
    this.options = options;
    this.deps = deps;
    this.now = deps.now ?? Date.now;
    this.startedAt = this.now();
    this.rings = new Rings(Math.ceil(SERIES_MS / options.tickMs));
    this.windowTicks = Math.max(1, Math.round((options.rateWindowSeconds * 1000) / options.tickMs));
    const loaded = HourlyHistory.load(options.historyFile);
    if (loaded.problem) deps.log.warn(loaded.problem);
    this.history = loaded.history;
    for (const a of ALERT_NAMES) dashboardMetrics.alert.set({ alert: a }, 0);
  }

  /** Takes the first sample (the baseline of every delta) and starts the timer. */
  async start(): Promise<void> {
    this.prev = await this.sample();
    this.hour = { start: this.prev.at - (this.prev.at % HOUR), acked: 0, observedMs: 0 };
    this.last = this.buildFrame(this.prev, this.prev);
    this.timer = setInterval(() => void this.tick(), this.options.tickMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    dashboardMetrics.clients.set(0);
  }

  get clientCount(): number {
    return this.clients.size;
  }

  addClient(c: DashboardClient): void {
    this.clients.add(c);
    dashboardMetrics.clients.set(this.clients.size);
  }

  removeClient(c: DashboardClient): void {
    this.clients.delete(c);
    dashboardMetrics.clients.set(this.clients.size);
  }

  /** The last tick frame (what GET /dashboard/snapshot serves). */
  snapshot(): TickFrame | undefined {
    return this.last;
  }

  /** The init frame for a new connection: the last tick plus the 15-min series and the whole tail (JSON, cached per tick). */
  initFrame(): string {
    if (this.init?.seq === this.seq) return this.init.text;
    const r = this.rings;
    const frame: InitFrame = {
      ...this.last!,
      kind: 'init',
      tail: this.deps.tap.tail.since(0),
      series: { t: r.times(), acked: r.rates(r.acked), processed: r.rates(r.processed), committed: r.rates(r.committed), invalid: r.rates(r.rejected) },
      config: { tickMs: this.options.tickMs, tailSize: this.options.tailSize, topN: this.options.topN, thresholds: this.options.thresholds, lateAfterMs: this.options.lateAfterMs },
    };
    this.init = { seq: this.seq, text: JSON.stringify(frame) };
    return this.init.text;
  }

  /** One tick: sample, record, evaluate, publish. Skipped while the previous one still runs. */
  async tick(): Promise<void> {
    if (this.ticking || !this.prev) return;
    this.ticking = true;
    try {
      const s = await this.sample();
      const frame = this.buildFrame(this.prev, s);
      this.prev = s;
      this.last = frame;
      this.dropSlowClients();
      if (this.clients.size > 0) this.deps.publish(JSON.stringify(frame));
    } catch (err) {
      this.deps.log.error({ err }, 'dashboard tick failed');
    } finally {
      this.ticking = false;
    }
  }

  private async sample(): Promise<Sample> {
    const [acked, rejectedByCode] = await Promise.all([counterTotal(ingestMetrics.events), counterByLabel(ingestMetrics.rejected, 'code')]);
    // An erased user's events are refused by policy, not invalid (docs/VALIDATION.md): they fired the invalid-rate alert.
    rejectedByCode.delete(ERASED_CODE);
    let rejected = 0;
    for (const v of rejectedByCode.values()) rejected += v;
    const live = (this.deps.live?.() as EngineLive | undefined) ?? null;
    const tap = this.deps.tap;
    return { at: this.now(), acked, rejected, rejectedByCode, late: tap.late, rows: tap.rows, live };
  }

  /** Cuts every client with more than maxBackpressureBytes unsent: it stopped reading. */
  private dropSlowClients(): void {
    for (const c of this.clients) {
      const buffered = c.getBufferedAmount();
      if (buffered <= this.options.maxBackpressureBytes) continue;
      this.removeClient(c);
      dashboardMetrics.disconnects.inc({ reason: 'backpressure' });
      this.deps.log.warn({ buffered, limit: this.options.maxBackpressureBytes }, 'dashboard client disconnected: it stopped reading (backpressure limit)');
      c.close();
    }
  }

  private buildFrame(prev: Sample, s: Sample): TickFrame {
    const r = this.rings;
    const first = prev === s;
    const dtMs = first ? 0 : s.at - prev.at;
    // The engine's totals count since it started: all of them are new when the previous sample had
    // none yet (the engine reported after the hub's first sample), and so are all of them when they
    // went down (the engine process restarted). Either way they used to be dropped.
    const d = (a: number | undefined, b: number | undefined): number => (first || b === undefined ? 0 : a === undefined || b < a ? b : b - a);
    const codes = new Map<string, number>();
    if (!first) for (const [k, v] of s.rejectedByCode) if (v > (prev.rejectedByCode.get(k) ?? 0)) codes.set(k, v - (prev.rejectedByCode.get(k) ?? 0));
    const delta = {
      acked: d(prev.acked, s.acked),
      rejected: d(prev.rejected, s.rejected),
      late: d(prev.late, s.late),
      processed: d(prev.live?.processedTotal, s.live?.processedTotal),
      committed: d(prev.live?.committedTotal, s.live?.committedTotal),
      duplicates: d(prev.live?.duplicatesTotal, s.live?.duplicatesTotal),
      tooLate: d(prev.live?.tooLateTotal, s.live?.tooLateTotal),
    };
    if (!first) {
      const j = r.n % r.cap;
      r.t[j] = s.at;
      r.dt[j] = dtMs / 1000;
      r.acked[j] = delta.acked;
      r.rejected[j] = delta.rejected;
      r.processed[j] = delta.processed;
      r.committed[j] = delta.committed;
      r.duplicates[j] = delta.duplicates;
      r.tooLate[j] = delta.tooLate;
      r.late[j] = delta.late;
      r.codes[j] = codes.size > 0 ? codes : undefined;
      r.n++;
      this.seq++;
      dashboardMetrics.late.inc(delta.late);
      dashboardMetrics.committed.inc(delta.committed);
      this.rollHour(s.at, delta.acked, dtMs);
    }
    const k = this.windowTicks;
    const win = {
      acked: r.sum(r.acked, k),
      rejected: r.sum(r.rejected, k),
      late: r.sum(r.late, k),
      processed: r.sum(r.processed, k),
      duplicates: r.sum(r.duplicates, k),
      tooLate: r.sum(r.tooLate, k),
      seconds: r.sum(r.dt, k),
    };
    const states = evaluateAlerts(
      { ...win, ackedPerSecond: win.seconds > 0 ? win.acked / win.seconds : 0, sameHourHistory: this.history.sameHour(s.at) },
      this.options.thresholds,
    );
    if (!first) this.report(states, s.at);
    const rate = (part: number, whole: number): number | null => (whole > 0 ? part / whole : null);
    const quality: TickFrame['quality'] = {
      windowSeconds: this.options.rateWindowSeconds,
      received: win.acked + win.rejected,
      invalidRate: rate(win.rejected, win.acked + win.rejected),
      lateRate: rate(win.late, win.acked),
      duplicateRate: rate(win.duplicates, win.processed),
      tooLateRate: rate(win.tooLate, win.processed),
      rejectedByCode: this.codesInWindow(s.rejectedByCode),
    };
    for (const [kind, v] of [
      ['invalid', quality.invalidRate],
      ['late', quality.lateRate],
      ['duplicate', quality.duplicateRate],
      ['too_late', quality.tooLateRate],
    ] as const) {
      dashboardMetrics.qualityRate.set({ kind }, v ?? Number.NaN);
    }
    const perSec = (x: number): number => (dtMs > 0 ? (x * 1000) / dtMs : 0);
    const tail = this.deps.tap.tail.since(this.tailSeq);
    this.tailSeq = this.deps.tap.tail.nextSeq;
    const windows = this.windows(s);
    exportWindows(windows, s.live);
    return {
      kind: 'tick',
      seq: this.seq,
      time: s.at,
      tickMs: this.options.tickMs,
      point: { t: s.at / 1000, acked: perSec(delta.acked), processed: perSec(delta.processed), committed: perSec(delta.committed), invalid: perSec(delta.rejected) },
      totals: {
        acked: s.acked,
        rejected: s.rejected,
        late: s.late,
        processed: s.live?.processedTotal ?? null,
        committed: s.live?.committedTotal ?? null,
        accepted: s.live?.acceptedTotal ?? null,
        duplicates: s.live?.duplicatesTotal ?? null,
        tooLate: s.live?.tooLateTotal ?? null,
      },
      engine: s.live,
      hasEngine: this.deps.live !== undefined,
      quality,
      alerts: this.board.firing(states),
      rules: states,
      windows,
      tail,
      clients: this.clients.size,
    };
  }

  private codesInWindow(totals: Map<string, number>): TickFrame['quality']['rejectedByCode'] {
    const r = this.rings;
    const win = new Map<string, number>();
    for (let i = Math.max(0, r.n - this.windowTicks); i < r.n; i++) {
      const m = r.codes[i % r.cap];
      if (m) for (const [k, v] of m) win.set(k, (win.get(k) ?? 0) + v);
    }
    return [...totals]
      .filter(([, total]) => total > 0)
      .map(([code, total]) => ({ code, window: win.get(code) ?? 0, total }))
      .sort((a, b) => b.window - a.window || b.total - a.total || (a.code < b.code ? -1 : 1));
  }

  private windows(s: Sample): TickFrame['windows'] {
    const tap = this.deps.tap;
    tap.prune(s.at);
    const { hour, today } = tap.windows(s.at, this.options.topN);
    const dayStart = s.at - (s.at % DAY);
    const engineHour = s.live?.currentHour ?? null;
    if (engineHour) {
      const start = Date.parse(engineHour.windowStart);
      if (start >= dayStart) this.sessionsByHour.set(start, engineHour.sessions);
    }
    for (const h of this.sessionsByHour.keys()) if (h < dayStart) this.sessionsByHour.delete(h);
    const hourSessions = engineHour && Date.parse(engineHour.windowStart) === hour.start ? engineHour.sessions : null;
    const engineDay = s.live?.currentDay ?? null;
    const todayBounce = engineDay && Date.parse(engineDay.windowStart) === dayStart ? engineDay.bounceRate : null;
    let daySessions: number | null = null;
    for (const v of this.sessionsByHour.values()) daySessions = (daySessions ?? 0) + v;
    return {
      hour: { ...hour, sessions: s.live ? (hourSessions ?? 0) : null, sessionsSince: null, bounceRate: null },
      today: { ...today, sessions: s.live ? (daySessions ?? 0) : null, sessionsSince: this.startedAt > dayStart ? this.startedAt : null, bounceRate: todayBounce },
    };
  }

  /** Logs and counts alert transitions; sets the firing gauges. */
  private report(states: AlertState[], at: number): void {
    const { fired, resolved } = this.board.update(states, at);
    for (const a of fired) {
      dashboardMetrics.alertsFired.inc({ alert: a.name });
      this.deps.log.warn({ alert: a.name, value: a.value, threshold: a.threshold }, `alert firing: ${a.message}`);
    }
    for (const a of resolved) this.deps.log.info({ alert: a.name, value: a.value, threshold: a.threshold }, `alert resolved: ${a.message}`);
    for (const a of states) dashboardMetrics.alert.set({ alert: a.name }, a.firing ? 1 : 0);
  }

  /** Acknowledged events per wall-clock hour; a finished hour observed for at least half of it goes into the history. */
  private rollHour(at: number, acked: number, dtMs: number): void {
    const start = at - (at % HOUR);
    if (start !== this.hour.start) {
      if (this.hour.observedMs >= HOUR / 2) {
        this.history.record(this.hour.start, this.hour.acked / (this.hour.observedMs / 1000));
        const file = this.options.historyFile;
        if (file) void this.history.save(file).catch((err: unknown) => this.deps.log.warn({ err, file }, 'dashboard history not saved'));
      }
      this.hour = { start, acked: 0, observedMs: 0 };
    }
    this.hour.acked += acked;
    this.hour.observedMs += dtMs;
  }

  /** For tests and tools: records a previous day's rate for an hour (the anomaly rule's history). */
  recordHistory(hourStartMs: number, perSecond: number): void {
    this.history.record(hourStartMs, perSecond);
  }
}
