/**
 * What the dashboard counts itself on the ingest thread, for the figures the engine's live view
 * does not carry (installs, screen views, notifications, today's users, breakdowns, lateness at
 * arrival), plus the sampled event tail. Called once per acknowledged request with its rows.
 *
 * Per row the work is O(1) and allocation-free (bar the sampled tail entries): one comparison for
 * lateness, one hour-bucket lookup (cached for runs of the same hour), one Map lookup for the
 * metric mapping, one string hash into a HyperLogLog, three capped Map increments.
 *
 *   rows ─▶ late? (received − event time > lateAfterMs)
 *        ─▶ bucket of the event's UTC hour (only hours of the current UTC day up to now + 1 h)
 *             events, installs, screen views, notification views/opens, users (HLL),
 *             device_type / app_version / country counts (≤ maxDimensionValues each, rest → "(other)")
 *        ─▶ tail (sampled)
 *
 * Counts are of acknowledged events as received: before deduplication and before the engine's
 * watermark (the engine's own counts — processed, duplicates, too late, the current hour's
 * events, users and sessions — come from /v1/live, not from here).
 */
import type { IngestRow } from '../batch-builder.js';
import { HyperLogLog, hashString } from './hll.js';
import { TailRing } from './tail.js';
import { UNKNOWN } from '../../common/schema.js';

const HOUR = 3_600_000;
const DAY = 86_400_000;

/** Event types counted as each metric (the engine's mapping, engine/gold-sql.ts DEFAULT_METRIC_EVENT_TYPES, unless configured). */
export interface MetricTypes {
  installs: string[];
  screen_views: string[];
  notification_views: string[];
  notification_opens: string[];
}

const INSTALL = 1;
const SCREEN = 2;
const NOTIF_VIEW = 4;
const NOTIF_OPEN = 8;

export const OTHER = '(other)';
/** A missing dimension value: labelled as gold labels it (common/schema.ts), so the page and `sluice metrics` agree. */
export const NONE = UNKNOWN;

/** Event counts by value of one dimension, at most `cap` values (then "(other)"). */
class CappedCounts {
  /** value → a mutable count (one Map lookup per row, no set). */
  readonly counts = new Map<string, { n: number }>();
  constructor(private readonly cap: number) {}

  add(value: string | null, n = 1): void {
    const k = value ?? NONE;
    const c = this.counts.get(k);
    if (c !== undefined) c.n += n;
    else if (this.counts.size < this.cap) this.counts.set(k, { n });
    else {
      const other = this.counts.get(OTHER);
      if (other !== undefined) other.n += n;
      else this.counts.set(OTHER, { n });
    }
  }

  mergeInto(target: CappedCounts): void {
    for (const [k, v] of this.counts) target.add(k === NONE ? null : k, v.n);
  }

  top(n: number): Array<[string, number]> {
    return [...this.counts].map(([k, v]): [string, number] => [k, v.n]).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, n);
  }
}

/** Counters of one UTC hour (by event time). */
export class Bucket {
  events = 0;
  installs = 0;
  screenViews = 0;
  notificationViews = 0;
  notificationOpens = 0;
  readonly users = new HyperLogLog();
  readonly device: CappedCounts;
  readonly version: CappedCounts;
  readonly country: CappedCounts;

  constructor(
    readonly start: number,
    cap: number,
  ) {
    this.device = new CappedCounts(cap);
    this.version = new CappedCounts(cap);
    this.country = new CappedCounts(cap);
  }

  addAll(b: Bucket): void {
    this.events += b.events;
    this.installs += b.installs;
    this.screenViews += b.screenViews;
    this.notificationViews += b.notificationViews;
    this.notificationOpens += b.notificationOpens;
    this.users.merge(b.users);
    b.device.mergeInto(this.device);
    b.version.mergeInto(this.version);
    b.country.mergeInto(this.country);
  }
}

/** A window's ingest-side figures as the page shows them. */
export interface TapWindow {
  start: number;
  events: number;
  /** Distinct user_id, HyperLogLog estimate (~3 %; near exact below ~2,500). */
  activeUsers: number;
  installs: number;
  screenViews: number;
  notificationViews: number;
  notificationOpens: number;
  /** opens / views, null without views. */
  notificationCtr: number | null;
  breakdown: { device_type: Array<[string, number]>; app_version: Array<[string, number]>; country: Array<[string, number]> };
}

export interface TapOptions {
  lateAfterMs: number;
  maxDimensionValues: number;
  tailSize: number;
  tailPerSecond: number;
  metricTypes: MetricTypes;
}

export class IngestTap {
  /** Rows seen (acknowledged events) and, of those, late ones, since start. */
  rows = 0;
  late = 0;
  readonly tail: TailRing;
  private readonly buckets = new Map<number, Bucket>();
  private readonly metricBits = new Map<string, number>();
  private lastHour = -1;
  private lastBucket: Bucket | undefined;
  /** Bucket range accepted now: [day start, now + 1 h]; set once per call. */
  private minHour = 0;
  private maxHour = 0;

  constructor(private readonly options: TapOptions) {
    this.tail = new TailRing(options.tailSize, options.tailPerSecond);
    const bits: Array<[string[], number]> = [
      [options.metricTypes.installs, INSTALL],
      [options.metricTypes.screen_views, SCREEN],
      [options.metricTypes.notification_views, NOTIF_VIEW],
      [options.metricTypes.notification_opens, NOTIF_OPEN],
    ];
    for (const [types, bit] of bits) for (const t of types) this.metricBits.set(t, (this.metricBits.get(t) ?? 0) | bit);
  }

  /** One acknowledged request's rows (after PII masking). `nowMs`: wall clock, read once by the caller. */
  add(rows: readonly IngestRow[], nowMs: number): void {
    this.minHour = nowMs - (nowMs % DAY);
    this.maxHour = nowMs + HOUR;
    this.lastHour = -1;
    this.lastBucket = undefined;
    this.tail.startBatch(nowMs);
    const lateAfter = this.options.lateAfterMs;
    this.rows += rows.length;
    for (let i = 0; i < rows.length; i++) {
      const row = rows[i]!;
      const t = row.event_time;
      if (row.received_at - t > lateAfter) this.late++;
      const hour = t - (t % HOUR);
      const b = hour === this.lastHour ? this.lastBucket : this.bucketOf(hour);
      if (b !== undefined) {
        b.events++;
        const bits = this.metricBits.get(row.event_type);
        if (bits !== undefined) {
          if (bits & INSTALL) b.installs++;
          if (bits & SCREEN) b.screenViews++;
          if (bits & NOTIF_VIEW) b.notificationViews++;
          if (bits & NOTIF_OPEN) b.notificationOpens++;
        }
        b.users.addHash(hashString(row.user_id));
        b.device.add(row.device_type);
        b.version.add(row.app_version);
        b.country.add(row.country);
      }
      this.tail.offer(row);
    }
  }

  private bucketOf(hour: number): Bucket | undefined {
    this.lastHour = hour;
    if (hour < this.minHour || hour > this.maxHour) return (this.lastBucket = undefined);
    let b = this.buckets.get(hour);
    if (b === undefined) this.buckets.set(hour, (b = new Bucket(hour, this.options.maxDimensionValues)));
    return (this.lastBucket = b);
  }

  /** Drops the buckets of previous days (called once per tick). */
  prune(nowMs: number): void {
    const dayStart = nowMs - (nowMs % DAY);
    for (const h of this.buckets.keys()) if (h < dayStart) this.buckets.delete(h);
  }

  /** The current UTC hour's and day's figures (by event time), with the top `topN` of each dimension. */
  windows(nowMs: number, topN: number): { hour: TapWindow; today: TapWindow } {
    const hourStart = nowMs - (nowMs % HOUR);
    const dayStart = nowMs - (nowMs % DAY);
    const hour = this.buckets.get(hourStart) ?? new Bucket(hourStart, 1);
    const today = new Bucket(dayStart, this.options.maxDimensionValues);
    for (const b of this.buckets.values()) if (b.start >= dayStart && b.start < dayStart + DAY) today.addAll(b);
    return { hour: view(hour, topN), today: view(today, topN) };
  }
}

function view(b: Bucket, topN: number): TapWindow {
  return {
    start: b.start,
    events: b.events,
    activeUsers: b.users.estimate(),
    installs: b.installs,
    screenViews: b.screenViews,
    notificationViews: b.notificationViews,
    notificationOpens: b.notificationOpens,
    notificationCtr: b.notificationViews > 0 ? b.notificationOpens / b.notificationViews : null,
    breakdown: { device_type: b.device.top(topN), app_version: b.version.top(topN), country: b.country.top(topN) },
  };
}
