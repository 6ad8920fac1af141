/**
 * `sluice quality`: data-quality checks over a lake, each pass / warn / fail with a message.
 *
 * - files: every file the commit records name exists, and every Parquet file is named by one
 *   (a deleted file, or a copied file, fails with its key);
 * - completeness: per hour of receive time, bronze rows = silver rows + duplicates dropped
 *   (a duplicate is a bronze row whose event id was first received earlier); DLQ rows are the
 *   rejected rest; totals also match the flush commit records' stats;
 * - uniqueness: no event_id twice in silver;
 * - freshness: newest committed time per layer vs now (threshold `maxStalenessMs`);
 * - gold coverage: every silver hour older than `goldDelayMs` has its hourly gold window;
 * - late and invalid rates against thresholds;
 * - anomalies: hourly event counts vs the same hour of previous days (robust z-score, median/MAD);
 * - schema drift: event types and property keys first seen in the last `driftWindowMs` (warn).
 */
import { TABLES } from '../common/lake-layout.js';
import { listCommitRecords } from '../storage/commit-record.js';
import { openObjectStore } from '../storage/open-store.js';
import { openLakeQuery } from './query.js';

export type CheckStatus = 'pass' | 'warn' | 'fail';

export interface CheckResult {
  name: string;
  status: CheckStatus;
  message: string;
  details?: unknown;
}

export interface QualityReport {
  lake: string;
  now: string;
  ok: boolean;
  checks: CheckResult[];
}

export interface QualityOptions {
  lake: string;
  s3Endpoint?: string;
  now?: number;
  /** Newest committed data older than this fails freshness. Default 1 h. */
  maxStalenessMs?: number;
  /** Silver hours older than this must have gold. Default 3 h (2 h lateness + 1 h). */
  goldDelayMs?: number;
  maxLateRate?: number;
  maxInvalidRate?: number;
  /** |robust z| above this flags an hourly anomaly. Default 3.5. */
  anomalyZ?: number;
  driftWindowMs?: number;
}

const num = (v: unknown): number => (typeof v === 'bigint' ? Number(v) : Number(v ?? 0));

export async function runQualityChecks(o: QualityOptions): Promise<QualityReport> {
  const now = o.now ?? Date.now();
  const checks: CheckResult[] = [];
  const store = await openObjectStore(o.lake, { s3Endpoint: o.s3Endpoint });
  const records = await listCommitRecords(store);
  try {
    // Files vs commit records.
    const live = new Map<string, number>();
    for (const r of records) {
      for (const f of r.removed) live.delete(f.key);
      for (const f of r.added) live.set(f.key, f.rows);
    }
    const present = new Set<string>();
    for (const spec of Object.values(TABLES)) for (const obj of await store.list(`${spec.prefix}/`)) if (obj.key.endsWith('.parquet')) present.add(obj.key);
    const missing = [...live.keys()].filter((k) => !present.has(k) && !k.startsWith('_sluice/'));
    const unknown = [...present].filter((k) => !live.has(k));
    checks.push(
      missing.length + unknown.length === 0
        ? { name: 'files', status: 'pass', message: `${present.size} files, all named by commit records` }
        : {
            name: 'files',
            status: 'fail',
            message: [
              ...missing.map((k) => `missing file (committed but not in the lake): ${k}`),
              ...unknown.map((k) => `file not in any commit record (stray or duplicated): ${k}`),
            ].join('; '),
            details: { missing, unknown },
          },
    );
  } finally {
    await store.close();
  }

  // Queries read the files actually present (not only committed ones), so damage shows up in the numbers too.
  const q = await openLakeQuery({ lake: o.lake, s3Endpoint: o.s3Endpoint, honourCommits: false });
  try {
    const rows = async (sql: string): Promise<Array<Record<string, unknown>>> => {
      const r = await q.run(sql);
      return r.rows.map((row) => Object.fromEntries(r.columns.map((c, i) => [c, row[i]])));
    };

    const completeness = await rows(`
      WITH b AS (
        SELECT date_trunc('hour', received_at) AS h,
               row_number() OVER (PARTITION BY event_id ORDER BY received_at, shard, log_offset) AS copy
        FROM bronze_events),
      bh AS (SELECT h, count(*) AS bronze, count(*) FILTER (WHERE copy > 1) AS duplicates FROM b GROUP BY h),
      sh AS (SELECT date_trunc('hour', received_at) AS h, count(*) AS silver FROM events GROUP BY h)
      SELECT bh.h, bh.bronze, coalesce(sh.silver, 0) AS silver, bh.duplicates
      FROM bh LEFT JOIN sh USING (h)
      ORDER BY bh.h`);
    const broken = completeness.filter((r) => num(r.bronze) !== num(r.silver) + num(r.duplicates));
    const stats = records.filter((r) => r.kind === 'flush' && r.stats).map((r) => r.stats!);
    const totals = {
      bronze: completeness.reduce((n, r) => n + num(r.bronze), 0),
      silver: completeness.reduce((n, r) => n + num(r.silver), 0),
      duplicates: completeness.reduce((n, r) => n + num(r.duplicates), 0),
    };
    const statBronze = stats.reduce((n, s) => n + s.bronzeRows, 0);
    const statSilver = stats.reduce((n, s) => n + s.silverRows, 0);
    const statDup = stats.reduce((n, s) => n + s.duplicates, 0);
    const statsAgree = stats.length === 0 || (statBronze === totals.bronze && statSilver === totals.silver && statDup === totals.duplicates);
    checks.push(
      broken.length === 0 && statsAgree
        ? { name: 'completeness', status: 'pass', message: `bronze ${totals.bronze} = silver ${totals.silver} + duplicates ${totals.duplicates}, hour by hour` }
        : {
            name: 'completeness',
            status: 'fail',
            message: [
              ...broken.map((r) => `hour ${new Date(r.h as Date).toISOString()}: bronze ${num(r.bronze)} ≠ silver ${num(r.silver)} + duplicates ${num(r.duplicates)}`),
              ...(statsAgree ? [] : [`commit records count bronze ${statBronze}, silver ${statSilver}, duplicates ${statDup}; the files hold bronze ${totals.bronze}, silver ${totals.silver}, duplicates ${totals.duplicates}`]),
            ].join('; '),
          },
    );

    const dups = await rows(`SELECT event_id, count(*) AS n FROM events GROUP BY event_id HAVING count(*) > 1 ORDER BY n DESC, event_id LIMIT 10`);
    checks.push(
      dups.length === 0
        ? { name: 'uniqueness', status: 'pass', message: 'no event_id appears twice in silver' }
        : { name: 'uniqueness', status: 'fail', message: `duplicate event_id in silver: ${dups.map((d) => `${String(d.event_id)} ×${num(d.n)}`).join(', ')}` },
    );

    const maxStale = o.maxStalenessMs ?? 3_600_000;
    const fresh = await rows(`SELECT 'silver' AS layer, max(received_at) AS newest FROM events UNION ALL SELECT 'bronze', max(received_at) FROM bronze_events`);
    const stale = fresh.filter((r) => r.newest === null || now - (r.newest as Date).getTime() > maxStale);
    checks.push(
      stale.length === 0
        ? { name: 'freshness', status: 'pass', message: fresh.map((r) => `${String(r.layer)} newest ${(r.newest as Date).toISOString()}`).join(', ') }
        : {
            name: 'freshness',
            status: 'fail',
            message: stale.map((r) => (r.newest === null ? `${String(r.layer)} has no data` : `${String(r.layer)} is stale: newest data received ${(r.newest as Date).toISOString()}, more than ${maxStale / 60_000} min ago`)).join('; '),
          },
    );

    const goldDelay = o.goldDelayMs ?? 3 * 3_600_000;
    const uncovered = await rows(`
      SELECT DISTINCT date_trunc('hour', event_time) AS h FROM events
      WHERE event_time < ${`TIMESTAMPTZ '${new Date(now - goldDelay).toISOString()}'`}
        AND date_trunc('hour', event_time) NOT IN (SELECT DISTINCT window_start FROM hourly_metrics)
      ORDER BY h LIMIT 20`);
    checks.push(
      uncovered.length === 0
        ? { name: 'gold coverage', status: 'pass', message: 'every closed silver hour has its gold hourly window' }
        : { name: 'gold coverage', status: 'fail', message: `stale partition: silver hours without gold: ${uncovered.map((r) => (r.h as Date).toISOString()).join(', ')}` },
    );

    const tooLate = records.reduce((n, r) => n + (r.stats?.tooLate ?? 0), 0);
    const [counts] = await rows(`SELECT (SELECT count(*) FROM events) AS silver, (SELECT count(*) FROM dlq) AS dlq, (SELECT count(*) FROM bronze_events) AS bronze`);
    const lateRate = num(counts!.silver) > 0 ? tooLate / num(counts!.silver) : 0;
    const invalidRate = num(counts!.bronze) + num(counts!.dlq) > 0 ? num(counts!.dlq) / (num(counts!.bronze) + num(counts!.dlq)) : 0;
    const maxLate = o.maxLateRate ?? 0.05;
    const maxInvalid = o.maxInvalidRate ?? 0.05;
    checks.push({
      name: 'late rate',
      status: lateRate > maxLate ? 'fail' : 'pass',
      message: `${(lateRate * 100).toFixed(2)} % of events arrived too late (threshold ${(maxLate * 100).toFixed(1)} %)`,
    });
    checks.push({
      name: 'invalid rate',
      status: invalidRate > maxInvalid ? 'fail' : 'pass',
      message: `${(invalidRate * 100).toFixed(2)} % of received events were rejected (threshold ${(maxInvalid * 100).toFixed(1)} %)`,
    });

    const z = o.anomalyZ ?? 3.5;
    const hourly = await rows(`SELECT window_start AS w, events FROM hourly_metrics WHERE device_type = 'ALL' AND app_version = 'ALL' AND country = 'ALL' ORDER BY w`);
    const byHourOfDay = new Map<number, Array<{ w: number; v: number }>>();
    for (const r of hourly) {
      const w = (r.w as Date).getTime();
      const hod = new Date(w).getUTCHours();
      const list = byHourOfDay.get(hod) ?? [];
      list.push({ w, v: num(r.events) });
      byHourOfDay.set(hod, list);
    }
    const anomalies: string[] = [];
    for (const list of byHourOfDay.values()) {
      for (let i = 3; i < list.length; i++) {
        const history = list.slice(Math.max(0, i - 14), i).map((x) => x.v);
        const med = median(history);
        const mad = median(history.map((x) => Math.abs(x - med))) * 1.4826;
        const score = mad === 0 ? (list[i]!.v === med ? 0 : Infinity) : (list[i]!.v - med) / mad;
        if (Math.abs(score) > z && Math.abs(list[i]!.v - med) > 0.2 * med) {
          anomalies.push(`${new Date(list[i]!.w).toISOString()}: ${list[i]!.v} events vs typical ${med} (z ${Number.isFinite(score) ? score.toFixed(1) : '∞'})`);
        }
      }
    }
    checks.push(
      anomalies.length === 0
        ? { name: 'anomalies', status: 'pass', message: `hourly event counts within ${z} robust z of the same hour on previous days` }
        : { name: 'anomalies', status: 'fail', message: `spike or drop: ${anomalies.join('; ')}` },
    );

    const since = `TIMESTAMPTZ '${new Date(now - (o.driftWindowMs ?? 86_400_000)).toISOString()}'`;
    const newTypes = await rows(`SELECT DISTINCT event_type FROM events WHERE event_time >= ${since} EXCEPT SELECT DISTINCT event_type FROM events WHERE event_time < ${since}`);
    const newKeys = await rows(`
      WITH k AS (SELECT event_time, unnest(json_keys(properties)) AS key FROM events WHERE properties IS NOT NULL AND json_valid(properties) AND json_type(properties) = 'OBJECT')
      SELECT DISTINCT key FROM k WHERE event_time >= ${since} EXCEPT SELECT DISTINCT key FROM k WHERE event_time < ${since}`);
    const hasHistory = (await rows(`SELECT count(*) AS n FROM events WHERE event_time < ${since}`))[0]!;
    checks.push(
      num(hasHistory.n) === 0 || newTypes.length + newKeys.length === 0
        ? { name: 'schema drift', status: 'pass', message: 'no new event types or property keys in the drift window' }
        : {
            name: 'schema drift',
            status: 'warn',
            message: `new event types: ${newTypes.map((r) => String(r.event_type)).join(', ') || 'none'}; new property keys: ${newKeys.map((r) => String(r.key)).join(', ') || 'none'}`,
          },
    );
  } finally {
    await q.close();
  }
  return { lake: o.lake, now: new Date(now).toISOString(), ok: !checks.some((c) => c.status === 'fail'), checks };
}

function median(xs: number[]): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function formatReport(r: QualityReport): string {
  const mark = { pass: 'PASS', warn: 'WARN', fail: 'FAIL' } as const;
  return [`Data quality of ${r.lake} at ${r.now}: ${r.ok ? 'OK' : 'FAILED'}`, ...r.checks.map((c) => `  ${mark[c.status]}  ${c.name.padEnd(13)} ${c.message}`)].join('\n');
}
