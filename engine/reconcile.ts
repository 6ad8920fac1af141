/**
 * Reconciliation: folds too-late events (late/) into the gold windows they belong to.
 *
 * A too-late event is in silver already (exactly once) and also in late/. Once its hourly and
 * daily gold windows have been merged, those windows are recomputed from silver with DuckDB
 * (engine/gold-sql.ts, the same definitions as the streaming aggregates) and rewritten in place
 * under their deterministic names (an atomic overwrite), a 'reconcile' commit record is written,
 * and only then are the late/ files removed. A crash at any step leaves late/ files behind, and
 * the next run recomputes the same windows with the same result.
 *
 * An hour is rewritten as soon as it is merged, but its late files stay until its day is ready
 * too (up to a day): `_sluice/reconciled.json` names the late files already folded into their
 * hours, so a run rewrites only the hours that got new ones. (Without it every run — once a
 * minute in `serve` — rewrote every hour holding late files, reading up to three days of silver
 * each time: under a steady trickle of late events from phones that were offline, most of a day.)
 * The list is written after the gold files; a crash before it only repeats the same rewrite.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { partKey, partitionTimeOfKey, TABLES } from '../common/lake-layout.js';
import type { ObjectStore } from '../storage/object-store.js';
import { encodeParquet } from '../storage/parquet.js';
import { writeCommitRecord } from '../storage/commit-record.js';
import { withoutCompactedInputs } from '../storage/compact.js';
import { DEFAULT_METRIC_EVENT_TYPES, goldMetricsSql, NO_SESSION_ALIASES, resolveSessionIds, type MetricEventTypes } from './gold-sql.js';
import { metricRowsToBatch } from './gold-merge.js';

const HOUR = 3_600_000;
const DAY = 86_400_000;

export interface ReconcileResult {
  hourlyWindows: number[];
  dailyWindows: number[];
  lateFilesRemoved: number;
}

/** Key of the merged gold file of a window (deterministic: rewrites overwrite it). */
export const goldWindowKey = (granularity: 'hourly' | 'daily', windowStart: number): string =>
  partKey(granularity === 'hourly' ? 'hourly_metrics' : 'daily_metrics', windowStart, `part-w${windowStart}.parquet`);

/** Where the coordinator records how far every shard has committed its window partials. */
export const FRONTIER_KEY = '_sluice/frontier.json';

export interface Frontier {
  /** Min over shards of the event time up to which window partials are committed (ms); daily ones (absent: emittedMs). */
  emittedMs: number;
  emittedDailyMs?: number;
  /** The session gap the lake is built with (a start with another one is refused). */
  sessionGapMs: number;
  /** The allowed lateness of the engine that wrote it (absent in lakes from before it was recorded). */
  allowedLatenessMs?: number;
  /**
   * Set by a single-node engine's graceful stop, after its last commit, merge and reconciliation:
   * nothing writes the lake until the next start, whose first write clears it (`sluice compact`
   * and `reconcile` go ahead at once instead of waiting for the frontier to age).
   */
  stoppedAtMs?: number;
}

export async function writeFrontier(store: ObjectStore, f: Frontier): Promise<void> {
  await store.put(FRONTIER_KEY, new TextEncoder().encode(JSON.stringify(f)));
}

export async function readFrontier(store: ObjectStore): Promise<Frontier | undefined> {
  const b = await store.get(FRONTIER_KEY);
  return b ? (JSON.parse(new TextDecoder().decode(b)) as Frontier) : undefined;
}

/** Late files already folded into their hourly gold windows (they stay in late/ until their day is rewritten). */
export const RECONCILED_KEY = '_sluice/reconciled.json';

async function readReconciled(store: ObjectStore): Promise<Set<string>> {
  const b = await store.get(RECONCILED_KEY);
  return new Set(b ? (JSON.parse(new TextDecoder().decode(b)) as { hourly: string[] }).hourly : []);
}

export async function reconcileLate(
  store: ObjectStore,
  options: { compression?: 'zstd' | 'snappy' | 'none'; types?: MetricEventTypes; now?: number; frontier?: Frontier } = {},
): Promise<ReconcileResult> {
  const late = (await store.list(`${TABLES.late_events.prefix}/`)).filter((o) => o.key.endsWith('.parquet'));
  const result: ReconcileResult = { hourlyWindows: [], dailyWindows: [], lateFilesRemoved: 0 };
  if (late.length === 0) return result;
  const frontier = options.frontier ?? (await readFrontier(store));
  if (!frontier) return result;
  const pendingPartials = new Set((await store.list('_sluice/partials/')).map((o) => o.key.split('/').slice(2, 4).join('/')));
  const applied = await readReconciled(store);
  const hours = new Map<number, string[]>();
  for (const o of late) {
    const h = partitionTimeOfKey(o.key);
    if (h === undefined) continue;
    let keys = hours.get(h);
    if (!keys) hours.set(h, (keys = []));
    keys.push(o.key);
  }
  // A window is ready once every shard has committed past it (so no partial of it can still come)
  // and its partials, if any, are merged. A window with no gold yet (all its rows were too late) is ready too.
  const ready = (g: 'hourly' | 'daily', start: number): boolean =>
    !pendingPartials.has(`${g}/${start}`) &&
    (g === 'hourly' ? frontier.emittedMs >= start + HOUR : (frontier.emittedDailyMs ?? frontier.emittedMs) >= start + DAY + frontier.sessionGapMs);
  // Hourly windows are rewritten as soon as they are merged and hold late files not folded in yet;
  // a late file goes once its day is rewritten too (its hour was, now or before: readiness only grows).
  const readyHours = [...hours].filter(([hour, keys]) => keys.some((k) => !applied.has(k)) && ready('hourly', hour)).map(([hour]) => hour);
  const readyDays = [...new Set([...hours.keys()].map((h) => Math.floor(h / DAY) * DAY))].filter((day) => ready('daily', day));
  const folded = (hour: number, keys: string[]): boolean => readyHours.includes(hour) || keys.every((k) => applied.has(k));
  const work = [...hours].filter(([hour, keys]) => folded(hour, keys) && readyDays.includes(Math.floor(hour / DAY) * DAY)).map(([hour, keys]) => ({ hour, keys }));
  if (readyHours.length === 0 && readyDays.length === 0) return result;

  const silverKeys = (await store.list(`${TABLES.events.prefix}/`)).map((o) => o.key).filter((k) => k.endsWith('.parquet'));
  const scratch = await mkdtemp(join(tmpdir(), 'sluice-reconcile-'));
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  try {
    const spans = [...readyHours, ...readyDays];
    const lo = Math.min(...spans) - DAY;
    const hi = Math.max(...spans) + 2 * DAY;
    const paths: string[] = [];
    const inRange = silverKeys.filter((key) => {
      const t = partitionTimeOfKey(key);
      return t !== undefined && t >= lo && t < hi;
    });
    // A compaction's merged file and its inputs can both be present for a while: read each row once.
    for (const key of await withoutCompactedInputs(store, inRange)) {
      let path = store.localPath(key);
      if (!path) {
        path = join(scratch, `${paths.length}.parquet`);
        await writeFile(path, (await store.get(key))!);
      }
      paths.push(path);
    }
    const aliasPaths: string[] = [];
    for (const o of await store.list(`${TABLES.session_aliases.prefix}/`)) {
      if (!o.key.endsWith('.parquet')) continue;
      let path = store.localPath(o.key);
      if (!path) {
        path = join(scratch, `a${aliasPaths.length}.parquet`);
        await writeFile(path, (await store.get(o.key))!);
      }
      aliasPaths.push(path);
    }
    const parquet = (files: string[]): string => `read_parquet([${files.map((p) => `'${p.replaceAll("'", "''")}'`).join(', ')}], union_by_name = true)`;
    // Session ids resolved through the aliases, as the `events` view does.
    const silver = `(${resolveSessionIds(`(SELECT * FROM ${parquet(paths)})`, aliasPaths.length > 0 ? parquet(aliasPaths) : NO_SESSION_ALIASES)})`;
    const types = options.types ?? DEFAULT_METRIC_EVENT_TYPES;
    const added: Array<{ key: string; rows: number; bytes: number }> = [];
    const rewrite = async (g: 'hourly' | 'daily', start: number): Promise<void> => {
      const reader = await conn.runAndReadAll(goldMetricsSql(g, silver, start, start + (g === 'hourly' ? HOUR : DAY), types, { sessionGapMs: frontier.sessionGapMs }));
      const batch = metricRowsToBatch(g, reader.getRowObjectsJS() as Array<Record<string, unknown>>);
      const body = encodeParquet([batch], { compression: options.compression ?? 'zstd' });
      await store.put(goldWindowKey(g, start), body);
      added.push({ key: goldWindowKey(g, start), rows: batch.numRows, bytes: body.byteLength });
    };
    for (const hour of readyHours) {
      await rewrite('hourly', hour);
      result.hourlyWindows.push(hour);
    }
    for (const day of readyDays) {
      await rewrite('daily', day);
      result.dailyWindows.push(day);
    }
    const removed = work.flatMap((w) => w.keys.map((key) => ({ key, rows: 0 })));
    await writeCommitRecord(store, {
      id: `reconcile-${options.now ?? Date.now()}`,
      time: new Date(options.now ?? Date.now()).toISOString(),
      kind: 'reconcile',
      added,
      removed,
    });
    for (const r of removed) await store.delete(r.key);
    result.lateFilesRemoved = removed.length;
    // What stays in late/ and is in gold now: the files of every hour rewritten, and those folded before.
    const gone = new Set(removed.map((r) => r.key));
    const nowApplied = [...hours].flatMap(([hour, keys]) => (readyHours.includes(hour) ? keys : keys.filter((k) => applied.has(k)))).filter((k) => !gone.has(k));
    await store.put(RECONCILED_KEY, new TextEncoder().encode(JSON.stringify({ hourly: nowApplied.sort() })));
    return result;
  } finally {
    conn.closeSync();
    db.closeSync();
    await rm(scratch, { recursive: true, force: true });
  }
}
