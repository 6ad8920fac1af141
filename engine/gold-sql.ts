/**
 * Gold metrics as DuckDB SQL over silver: the definition reconciliation uses to rewrite windows
 * that late events touched, and the independent check the end-to-end tests compare the
 * streaming aggregates against (invariant 4: gold equals a recomputation from silver).
 *
 * Definitions (same as the aggregate operator):
 * - a window is [window_start, window_start + 1 h or 1 d) of event_time, UTC;
 * - dimensions device_type, app_version, country; a missing value is 'unknown'; all 8 grouping
 *   sets, with 'ALL' standing for "any value";
 * - events: valid unique events in the window; active_users: distinct user_id;
 * - sessions: sessions whose first event (min event_time over the session_id, looking back one
 *   day) falls in the window, grouped by the dimensions of that first event;
 * - daily avg_session_s / bounce_rate over those sessions (duration = last − first event time);
 *   notification_ctr = notification_opens / notification_views (null when no views).
 *
 * The daily ratios are computed from exact integer sums, in a fixed order of double operations —
 * avg_session_s = (Σ duration ms / sessions) / 1000, bounce_rate = bounces / sessions — not with
 * avg() (whose double sum depends on the scan order, and over DECIMAL divides in long double): so
 * anyone holding the sums (erasure's gold subtraction, engine/erasure-job.ts) gets the same bits.
 */
import { ALL, UNKNOWN } from '../common/schema.js';

export interface MetricEventTypes {
  installs: string[];
  screen_views: string[];
  notification_views: string[];
  notification_opens: string[];
}

export const DEFAULT_METRIC_EVENT_TYPES: MetricEventTypes = {
  installs: ['install', 'Application Installed'],
  screen_views: ['screen', 'screen_view'],
  notification_views: ['notification_view', 'Push Notification Received'],
  notification_opens: ['notification_open', 'Push Notification Tapped'],
};

const quote = (s: string): string => `'${s.replaceAll("'", "''")}'`;

/** A relation with session_aliases' columns and no rows (a lake whose sessions never moved). */
export const NO_SESSION_ALIASES = '(SELECT NULL::VARCHAR AS alias_id, NULL::VARCHAR AS session_id WHERE false)';

/**
 * Silver rows (relation or subquery `silver`) with each session_id resolved to its session's final
 * id through `aliases` (a relation with alias_id, session_id: gold/session_aliases). Silver rows
 * keep the id they were stamped with while their session was open; a session whose start moved (a
 * late event, a merge) lists those earlier ids as aliases. This is the `events` view.
 */
export function resolveSessionIds(silver: string, aliases: string): string {
  return `SELECT e.* REPLACE (coalesce(a.session_id, e.session_id) AS session_id) FROM ${silver} e LEFT JOIN (SELECT alias_id, session_id FROM ${aliases}) a ON a.alias_id = e.session_id`;
}
const list = (xs: string[]): string => xs.map(quote).join(', ');

/**
 * The `sess` CTE (over a CTE `ev` of event_id, user_id, t, session_id): per session id, its first and last event time, event count and first
 * event. With `gapMs`, ids of one user less than the gap apart are one session: an open session
 * whose start moved (an out-of-order event) takes a new id, its rows written before keep the old
 * one, and the alias linking them is written only when the session closes — so a window recomputed
 * while it is open (reconciliation, erasure) counted it twice. Sessions the engine closed are at
 * least the gap apart, so nothing else merges.
 */
export function sessionsSql(gapMs: number | undefined): string {
  const perId = `SELECT session_id, any_value(user_id) AS user_id, min(t) AS first_t, max(t) AS last_t, count(*) AS n,
         arg_min(event_id, (t, event_id)) AS first_event_id
  FROM ev WHERE session_id IS NOT NULL GROUP BY session_id`;
  if (gapMs === undefined) return `sess AS (\n  ${perId}\n)`;
  if (!(Number.isSafeInteger(gapMs) && gapMs > 0)) throw new RangeError(`sessionGapMs must be a positive integer, got ${gapMs}`);
  return `pieces AS (
  ${perId}
),
starts AS (
  SELECT *, CASE WHEN date_diff('millisecond', max(last_t) OVER (PARTITION BY user_id ORDER BY first_t, session_id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), first_t) < ${gapMs}
                 THEN 0 ELSE 1 END AS opens
  FROM pieces
),
islands AS (
  SELECT *, sum(opens) OVER (PARTITION BY user_id ORDER BY first_t, session_id ROWS UNBOUNDED PRECEDING) AS island FROM starts
),
sess AS (
  SELECT session_id,
         min(first_t) OVER w AS first_t, max(last_t) OVER w AS last_t, sum(n) OVER w AS n,
         arg_min(first_event_id, (first_t, first_event_id)) OVER w AS first_event_id
  FROM islands WINDOW w AS (PARTITION BY user_id, island)
)`;
}

/**
 * SQL computing hourly or daily metric rows for windows starting in [fromMs, toMs), over a
 * relation (view or `read_parquet(...)`) of silver events named by `silver`, whose session ids are
 * resolved (the `events` view, or `(${'${resolveSessionIds(…)}'})`). `sums` adds, per row,
 * session_ms (Σ duration in ms of the sessions counted in `sessions`) and bounces (those of them
 * with one event): the integers the daily ratios derive from.
 */
export function goldMetricsSql(
  granularity: 'hourly' | 'daily',
  silver: string,
  fromMs: number,
  toMs: number,
  types: MetricEventTypes = DEFAULT_METRIC_EVENT_TYPES,
  options: { sums?: boolean; sessionGapMs?: number } = {},
): string {
  const unit = granularity === 'hourly' ? 'hour' : 'day';
  const dim = (c: string): string => `coalesce(${c}, ${quote(UNKNOWN)})`;
  const roll = (c: string): string => `CASE WHEN grouping(${c}) = 1 THEN ${quote(ALL)} ELSE ${c} END`;
  const from = `epoch_ms(${fromMs})`;
  const to = `epoch_ms(${toMs})`;
  const starts = 'count(*) FILTER (WHERE s.is_start)';
  const sums = options.sums
    ? `,
    coalesce(sum(s.duration_ms) FILTER (WHERE s.is_start), 0)::BIGINT AS session_ms,
    count(*) FILTER (WHERE s.is_start AND s.bounce) AS bounces`
    : '';
  const daily =
    granularity === 'daily'
      ? `,
    CASE WHEN ${starts} = 0 THEN NULL ELSE (sum(s.duration_ms) FILTER (WHERE s.is_start))::DOUBLE / ${starts} / 1000.0::DOUBLE END AS avg_session_s,
    CASE WHEN ${starts} = 0 THEN NULL ELSE (count(*) FILTER (WHERE s.is_start AND s.bounce))::DOUBLE / ${starts} END AS bounce_rate,
    CASE WHEN count(*) FILTER (WHERE event_type IN (${list(types.notification_views)})) = 0 THEN NULL
         ELSE (count(*) FILTER (WHERE event_type IN (${list(types.notification_opens)})))::DOUBLE
              / count(*) FILTER (WHERE event_type IN (${list(types.notification_views)})) END AS notification_ctr`
      : '';
  return `
WITH ev AS (
  SELECT event_id, user_id, event_type, event_time::TIMESTAMP AS t, session_id,
         ${dim('device_type')} AS device_type, ${dim('app_version')} AS app_version, ${dim('country')} AS country
  FROM ${silver}
  WHERE event_time::TIMESTAMP >= ${from}::TIMESTAMP - INTERVAL 1 DAY AND event_time::TIMESTAMP < ${to}::TIMESTAMP + INTERVAL 1 DAY
),
${sessionsSql(options.sessionGapMs)},
s AS (
  SELECT ev.*, (sess.first_event_id = ev.event_id) AS is_start,
         date_diff('millisecond', sess.first_t, sess.last_t) AS duration_ms, sess.n = 1 AS bounce
  FROM ev LEFT JOIN sess USING (session_id)
  WHERE ev.t >= ${from}::TIMESTAMP AND ev.t < ${to}::TIMESTAMP
)
SELECT
    date_trunc('${unit}', t) AS window_start,
    ${roll('device_type')} AS device_type,
    ${roll('app_version')} AS app_version,
    ${roll('country')} AS country,
    count(*) AS events,
    count(DISTINCT user_id) AS active_users,
    count(*) FILTER (WHERE event_type IN (${list(types.installs)})) AS installs,
    count(*) FILTER (WHERE s.is_start) AS sessions,
    count(*) FILTER (WHERE event_type IN (${list(types.screen_views)})) AS screen_views,
    count(*) FILTER (WHERE event_type IN (${list(types.notification_views)})) AS notification_views,
    count(*) FILTER (WHERE event_type IN (${list(types.notification_opens)})) AS notification_opens${daily}${sums}
FROM s
GROUP BY GROUPING SETS (
  (window_start, device_type, app_version, country),
  (window_start, device_type, app_version), (window_start, device_type, country), (window_start, app_version, country),
  (window_start, device_type), (window_start, app_version), (window_start, country),
  (window_start)
)
ORDER BY window_start, device_type, app_version, country`;
}
