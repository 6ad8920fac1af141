/**
 * A synthetic lake with a known ground truth, for the analytics tests.
 *
 * `generateFixture` makes seeded engagement traffic (users with an install day, sessions of a
 * few events, dimensions, properties), then what the engine would have produced from it: bronze
 * (every copy received, retries included, with shard and log offset), silver (first copies),
 * late events (received hours after they happened), DLQ rows, gold sessions (30-min gap) and
 * hourly/daily metrics with all 8 'ALL' roll-ups — all computed here in plain TypeScript.
 * `writeFixtureLake` writes it in the exact lake layout and schemas (storage/parquet.ts encoder,
 * the store's `put`) with commit records like the engine's: one 'flush' record per shard and
 * 6-hour receive period with `stats`, one for the DLQ, one 'reconcile' record for gold.
 */
import { makeData, RecordBatch, Struct, vectorFromArray, type Schema } from 'apache-arrow';
import { partitionStart, partKey, partName, TABLES, type TableName } from '../../common/lake-layout.js';
import { bronzeSchema, dailyMetricsSchema, dlqSchema, hourlyMetricsSchema, sessionAliasesSchema, sessionsSchema, silverSchema } from '../../common/schema.js';
import { writeCommitRecord, type CommitFile, type CommitRecord } from '../../storage/commit-record.js';
import type { ObjectStore } from '../../storage/object-store.js';
import { encodeParquet } from '../../storage/parquet.js';

export const HOUR = 3_600_000;
export const DAY = 86_400_000;
export const SESSION_GAP = 30 * 60_000;

/** Mulberry32. */
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

/** One silver event (plus where its first copy sat in bronze). Times in epoch ms. */
export interface TruthEvent {
  event_id: string;
  user_id: string;
  anonymous_id: string | null;
  event_type: string;
  event_time: number;
  received_at: number;
  session_id: string;
  device_type: string | null;
  os: string | null;
  app_version: string | null;
  country: string | null;
  source: string;
  properties: string | null;
  /** Arrived after its window closed (counted as too late in the flush stats). */
  late: boolean;
  shard: number;
}

export interface BronzeRow extends TruthEvent {
  log_offset: number;
  duplicate: boolean;
}

export interface DlqRow {
  received_at: number;
  source: string;
  write_key_id: string;
  code: string;
  message: string;
  raw: string;
}

export interface SessionRow {
  session_id: string;
  user_id: string;
  session_start: number;
  session_end: number;
  duration_s: number;
  event_count: number;
  bounce: boolean;
  first_screen: string | null;
  last_screen: string | null;
  device_type: string;
  app_version: string;
  country: string;
}

export interface MetricRow {
  window_start: number;
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
  avg_session_s?: number | null;
  bounce_rate?: number | null;
  notification_ctr?: number | null;
}

export interface Fixture {
  start: number;
  days: number;
  events: TruthEvent[];
  bronze: BronzeRow[];
  dlq: DlqRow[];
  sessions: SessionRow[];
  hourly: MetricRow[];
  daily: MetricRow[];
  /** Newest receive time of anything in the lake. */
  lastReceived: number;
}

export interface FixtureOptions {
  seed?: number;
  users?: number;
  days?: number;
  /** 00:00 UTC of the first day. Default 2026-03-02 (a Monday). */
  start?: number;
  /** Share of events received 2.5–4 h after they happened. Default 0.02. */
  lateRate?: number;
  /** Share of events received twice. Default 0.03. */
  duplicateRate?: number;
  /** Rejected events per valid event. Default 0.01. */
  invalidRate?: number;
  /** Adds this many extra events (a burst by one bot user) in the hour starting here. */
  spike?: { hour: number; events: number };
  shards?: number;
}

const DEVICES: Array<[string | null, string | null]> = [
  ['ios', 'iOS'],
  ['android', 'Android'],
  ['web', 'macOS'],
  [null, null],
];
const COUNTRIES = ['US', 'DE', 'IN', 'BR'];
const VERSIONS = ['1.0.0', '1.1.0'];
const SCREENS = ['Home', 'Search', 'Product', 'Cart'];
const BROWSE = ['screen', 'Product Viewed', 'screen', 'Button Clicked', 'Push Notification Received', 'Push Notification Tapped', 'Order Completed'];

export function generateFixture(options: FixtureOptions = {}): Fixture {
  const o = { seed: 7, users: 160, days: 10, start: Date.UTC(2026, 2, 2), lateRate: 0.02, duplicateRate: 0.03, invalidRate: 0.01, shards: 2, ...options };
  const r = rng(o.seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const events: TruthEvent[] = [];
  let nextId = 0;
  for (let u = 0; u < o.users; u++) {
    const user = `u${String(u).padStart(4, '0')}`;
    const [device, os] = u % 23 === 5 ? DEVICES[3]! : pick(DEVICES.slice(0, 3));
    const country = pick(COUNTRIES);
    const version = pick(VERSIONS);
    // 75 % install during the period (day 0–6); the rest are existing users (no install event).
    const installDay = r() < 0.75 ? Math.floor(r() * 7) : -1;
    const loyalty = 0.25 + 0.6 * r();
    const shard = u % o.shards;
    for (let d = Math.max(0, installDay); d < o.days; d++) {
      const isInstall = d === installDay;
      if (!isInstall && r() > loyalty) continue;
      const sessions = 1 + Math.floor(r() * 2);
      for (let s = 0; s < sessions; s++) {
        // Diurnal: sessions mostly between 06:00 and 23:00.
        let t = o.start + d * DAY + Math.floor((6 + r() * 17) * HOUR) + Math.floor(r() * 3_600) * 1000;
        const types: string[] = [];
        if (isInstall && s === 0) types.push('Application Installed');
        types.push('Application Opened');
        const n = r() < 0.15 ? 0 : 1 + Math.floor(r() * 6);
        for (let i = 0; i < n; i++) types.push(pick(BROWSE));
        if (isInstall && s === 0 && types.length === 2) types.push('screen');
        for (const type of types) {
          const props =
            type === 'screen'
              ? { name: pick(SCREENS) }
              : type === 'Product Viewed'
                ? { product_id: `p${Math.floor(r() * 50)}`, price: Math.round(r() * 10_000) / 100 }
                : type === 'Order Completed'
                  ? { order_id: `o${nextId}`, total: Math.round(r() * 20_000) / 100 }
                  : null;
          const late = r() < o.lateRate;
          events.push({
            event_id: `e${String(nextId++).padStart(6, '0')}`,
            user_id: user,
            anonymous_id: r() < 0.5 ? `anon-${user}` : null,
            event_type: type,
            event_time: t,
            received_at: late ? t + Math.floor((2.5 + 1.5 * r()) * HOUR) : t + Math.floor(r() * 5_000),
            session_id: '',
            device_type: device,
            os,
            app_version: device === null ? null : version,
            country: device === null ? null : country,
            source: 'segment',
            properties: props === null ? null : JSON.stringify(props),
            late,
            shard,
          });
          t += 5_000 + Math.floor(r() * 8 * 60_000);
        }
      }
    }
  }
  if (o.spike) {
    for (let i = 0; i < o.spike.events; i++) {
      const t = o.spike.hour + Math.floor((i / o.spike.events) * HOUR);
      events.push({
        event_id: `spike${String(i).padStart(6, '0')}`,
        user_id: 'bot',
        anonymous_id: null,
        event_type: 'Button Clicked',
        event_time: t,
        received_at: t + 1000,
        session_id: '',
        device_type: 'web',
        os: 'Linux',
        app_version: '1.1.0',
        country: 'US',
        source: 'segment',
        properties: null,
        late: false,
        shard: 0,
      });
    }
  }
  events.sort((a, b) => a.event_time - b.event_time || (a.event_id < b.event_id ? -1 : 1));

  // Sessions by event time with the 30-min gap; the session id is stamped on the events.
  const sessions: SessionRow[] = [];
  const byUser = new Map<string, TruthEvent[]>();
  for (const e of events) {
    let list = byUser.get(e.user_id);
    if (!list) byUser.set(e.user_id, (list = []));
    list.push(e);
  }
  for (const [user, list] of byUser) {
    let cur: TruthEvent[] = [];
    const close = (): void => {
      if (cur.length === 0) return;
      const first = cur[0]!;
      const last = cur[cur.length - 1]!;
      const id = `${user}-${first.event_time}`;
      for (const e of cur) e.session_id = id;
      const screens = cur.filter((e) => e.event_type === 'screen').map((e) => (JSON.parse(e.properties!) as { name: string }).name);
      sessions.push({
        session_id: id,
        user_id: user,
        session_start: first.event_time,
        session_end: last.event_time,
        duration_s: (last.event_time - first.event_time) / 1000,
        event_count: cur.length,
        bounce: cur.length === 1,
        first_screen: screens[0] ?? null,
        last_screen: screens[screens.length - 1] ?? null,
        device_type: first.device_type ?? 'unknown',
        app_version: first.app_version ?? 'unknown',
        country: first.country ?? 'unknown',
      });
      cur = [];
    };
    for (const e of list) {
      if (cur.length > 0 && e.event_time - cur[cur.length - 1]!.event_time >= SESSION_GAP) close();
      cur.push(e);
    }
    close();
  }

  // Bronze: every copy, in receive order per shard, with log offsets.
  const copies: BronzeRow[] = [];
  for (const e of events) {
    copies.push({ ...e, log_offset: 0, duplicate: false });
    if (r() < o.duplicateRate) copies.push({ ...e, received_at: e.received_at + 30_000 + Math.floor(r() * 90_000), log_offset: 0, duplicate: true });
  }
  copies.sort((a, b) => a.received_at - b.received_at || (a.event_id < b.event_id ? -1 : 1) || Number(a.duplicate) - Number(b.duplicate));
  const offsets = new Array<number>(o.shards).fill(0);
  for (const c of copies) c.log_offset = offsets[c.shard]!++;

  const dlq: DlqRow[] = [];
  const invalid = Math.round(events.length * o.invalidRate);
  for (let i = 0; i < invalid; i++) {
    const t = o.start + Math.floor(r() * o.days * DAY);
    dlq.push({ received_at: t, source: 'segment', write_key_id: 'abc123', code: 'missing_user', message: 'event has neither userId nor anonymousId', raw: JSON.stringify({ type: 'track', event: 'x', n: i }) });
  }
  dlq.sort((a, b) => a.received_at - b.received_at);

  const lastReceived = [...copies, ...dlq].reduce((m, c) => Math.max(m, c.received_at), 0);
  return { start: o.start, days: o.days, events, bronze: copies, dlq, sessions, hourly: metrics(events, sessions, HOUR), daily: metrics(events, sessions, DAY), lastReceived };
}

/** Gold metric rows with all 8 roll-ups, as the design defines them. */
function metrics(events: TruthEvent[], sessions: SessionRow[], size: number): MetricRow[] {
  const rows = new Map<string, MetricRow & { users: Set<string>; durations: number[]; bounces: number }>();
  const keyDims = (w: number, d: string, v: string, c: string, mask: number): [string, string, string, string] => [
    String(w),
    mask & 1 ? 'ALL' : d,
    mask & 2 ? 'ALL' : v,
    mask & 4 ? 'ALL' : c,
  ];
  const row = (w: number, dims: [string, string, string, string]): MetricRow & { users: Set<string>; durations: number[]; bounces: number } => {
    const k = dims.join('|');
    let m = rows.get(k);
    if (!m) {
      m = { window_start: w, device_type: dims[1], app_version: dims[2], country: dims[3], events: 0, active_users: 0, installs: 0, sessions: 0, screen_views: 0, notification_views: 0, notification_opens: 0, users: new Set(), durations: [], bounces: 0 };
      rows.set(k, m);
    }
    return m;
  };
  for (const e of events) {
    const w = Math.floor(e.event_time / size) * size;
    for (let mask = 0; mask < 8; mask++) {
      const m = row(w, keyDims(w, e.device_type ?? 'unknown', e.app_version ?? 'unknown', e.country ?? 'unknown', mask));
      m.events++;
      m.users.add(e.user_id);
      if (e.event_type === 'Application Installed' || e.event_type === 'install') m.installs++;
      if (e.event_type === 'screen' || e.event_type === 'screen_view') m.screen_views++;
      if (e.event_type === 'Push Notification Received' || e.event_type === 'notification_view') m.notification_views++;
      if (e.event_type === 'Push Notification Tapped' || e.event_type === 'notification_open') m.notification_opens++;
    }
  }
  for (const s of sessions) {
    const w = Math.floor(s.session_start / size) * size;
    for (let mask = 0; mask < 8; mask++) {
      const m = row(w, keyDims(w, s.device_type, s.app_version, s.country, mask));
      m.sessions++;
      m.durations.push(s.duration_s);
      if (s.bounce) m.bounces++;
    }
  }
  return [...rows.values()]
    .map(({ users, durations, bounces, ...m }) => ({
      ...m,
      active_users: users.size,
      ...(size === DAY
        ? {
            avg_session_s: durations.length === 0 ? null : durations.reduce((a, b) => a + b, 0) / durations.length,
            bounce_rate: durations.length === 0 ? null : bounces / durations.length,
            notification_ctr: m.notification_views === 0 ? null : m.notification_opens / m.notification_views,
          }
        : {}),
    }))
    .sort((a, b) => a.window_start - b.window_start || (a.device_type + a.app_version + a.country < b.device_type + b.app_version + b.country ? -1 : 1));
}

/** An Arrow batch of `schema` from row objects (times as epoch ms, Int64 as number). */
export function rowsToBatch(schema: Schema, rows: Array<Record<string, unknown>>): RecordBatch {
  const children = schema.fields.map((f) => {
    const values = rows.map((row) => {
      const v = row[f.name];
      if (v === null || v === undefined) return null;
      if (f.name === 'log_offset' || String(f.type) === 'Int64') return BigInt(v as number);
      return v;
    });
    return vectorFromArray(values, f.type).data[0]!;
  });
  return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: rows.length, nullCount: 0, children }));
}

const SCHEMAS: Record<TableName, Schema> = {
  bronze_events: bronzeSchema,
  events: silverSchema,
  late_events: silverSchema,
  sessions: sessionsSchema,
  session_aliases: sessionAliasesSchema,
  hourly_metrics: hourlyMetricsSchema,
  daily_metrics: dailyMetricsSchema,
  dlq: dlqSchema,
};

const TIME_COLUMN: Record<TableName, string> = {
  bronze_events: 'received_at',
  events: 'event_time',
  late_events: 'event_time',
  sessions: 'session_start',
  session_aliases: 'session_start',
  hourly_metrics: 'window_start',
  daily_metrics: 'window_start',
  dlq: 'received_at',
};

/** Writes rows partitioned by the table's time column; returns the files added. */
async function writeTable(store: ObjectStore, table: TableName, rows: Array<Record<string, unknown>>, name: (start: number) => string): Promise<CommitFile[]> {
  const parts = new Map<number, Array<Record<string, unknown>>>();
  for (const row of rows) {
    const start = partitionStart(row[TIME_COLUMN[table]] as number, TABLES[table].granularity);
    let list = parts.get(start);
    if (!list) parts.set(start, (list = []));
    list.push(row);
  }
  const added: CommitFile[] = [];
  for (const [start, list] of [...parts].sort((a, b) => a[0] - b[0])) {
    const key = partKey(table, start, name(start));
    const body = encodeParquet([rowsToBatch(SCHEMAS[table], list)]);
    await store.put(key, body);
    added.push({ key, rows: list.length, bytes: body.byteLength });
  }
  return added;
}

export interface WriteOptions {
  /** Receive-time span of one flush per shard. Default 6 h. */
  flushMs?: number;
  /** Leave these events out of gold (gold then is stale for their windows). */
  goldExcludes?: (e: TruthEvent) => boolean;
}

/** Writes the fixture as a lake into `store`, with commit records. Returns the records written. */
export async function writeFixtureLake(store: ObjectStore, f: Fixture, options: WriteOptions = {}): Promise<CommitRecord[]> {
  const flushMs = options.flushMs ?? 6 * HOUR;
  const records: CommitRecord[] = [];
  const periods = new Map<string, BronzeRow[]>();
  for (const b of f.bronze) {
    const k = `${b.shard}|${Math.floor((b.received_at - f.start) / flushMs)}`;
    let list = periods.get(k);
    if (!list) periods.set(k, (list = []));
    list.push(b);
  }
  for (const [k, rows] of [...periods].sort((a, b) => Number(a[0].split('|')[1]) - Number(b[0].split('|')[1]) || (a[0] < b[0] ? -1 : 1))) {
    const [shard, period] = k.split('|').map(Number) as [number, number];
    const first = rows[0]!.log_offset;
    const last = rows[rows.length - 1]!.log_offset;
    const name = partName(shard, first, last);
    const silver = rows.filter((b) => !b.duplicate);
    const bronzeRows = rows.map(({ duplicate: _d, late: _l, ...b }) => ({ ...b, session_id: null }));
    const silverRows = silver.map(({ duplicate: _d, late: _l, shard: _s, log_offset: _o, ...e }) => e);
    const added = [...(await writeTable(store, 'bronze_events', bronzeRows, () => name)), ...(await writeTable(store, 'events', silverRows, () => name))];
    const record: CommitRecord = {
      id: `s${shard}-${first}-${last}`,
      time: new Date(f.start + (period + 1) * flushMs).toISOString(),
      kind: 'flush',
      shard,
      offsets: { first, last },
      added,
      removed: [],
      stats: { bronzeRows: rows.length, silverRows: silver.length, duplicates: rows.length - silver.length, tooLate: silver.filter((e) => e.late).length },
    };
    await writeCommitRecord(store, record);
    records.push(record);
  }
  if (f.dlq.length > 0) {
    const name = `part-dlq-0-${f.dlq.length - 1}.parquet`;
    const added = await writeTable(store, 'dlq', f.dlq as unknown as Array<Record<string, unknown>>, () => name);
    const record: CommitRecord = { id: `dlq-0-${f.dlq.length - 1}`, time: new Date(f.lastReceived).toISOString(), kind: 'flush', offsets: { first: 0, last: f.dlq.length - 1 }, added, removed: [] };
    await writeCommitRecord(store, record);
    records.push(record);
  }
  const goldEvents = options.goldExcludes ? f.events.filter((e) => !options.goldExcludes!(e)) : f.events;
  const hourly = options.goldExcludes ? metricsFor(goldEvents, f.sessions, HOUR) : f.hourly;
  const daily = options.goldExcludes ? metricsFor(goldEvents, f.sessions, DAY) : f.daily;
  const gold = [
    ...(await writeTable(store, 'sessions', f.sessions as unknown as Array<Record<string, unknown>>, () => 'part-s0-0-0.parquet')),
    ...(await writeTable(store, 'hourly_metrics', hourly as unknown as Array<Record<string, unknown>>, (w) => `part-w${w}.parquet`)),
    ...(await writeTable(store, 'daily_metrics', daily as unknown as Array<Record<string, unknown>>, (w) => `part-w${w}.parquet`)),
  ];
  const record: CommitRecord = { id: 'gold-fixture', time: new Date(f.lastReceived + 1).toISOString(), kind: 'reconcile', added: gold, removed: [] };
  await writeCommitRecord(store, record);
  records.push(record);
  return records;
}

/** Gold metric rows for a subset of events (the stale-gold fixture). */
export function metricsFor(events: TruthEvent[], sessions: SessionRow[], size: number): MetricRow[] {
  return metrics(events, sessions, size);
}
