-- stickiness — DAU / MAU per UTC day, with MAU taken as the rolling 28-day actives (see
-- active28.sql): the share of the last 28 days' users who were active that day.
--
-- Parameters: $from_time, $to_time (TIMESTAMPTZ, see dau.sql); templates {{dims}}, {{filters}}
-- as in dau.sql.
-- @reads events from-27d to
WITH days AS (
  SELECT d::DATE AS day
  FROM range(timezone('UTC', $from_time)::DATE, timezone('UTC', $to_time)::DATE, INTERVAL 1 DAY) t(d)
),
act AS (
  SELECT DISTINCT timezone('UTC', event_time)::DATE AS d, user_id{{dims}}
  FROM events
  WHERE event_time >= $from_time - INTERVAL 27 DAY AND event_time < $to_time AND {{filters}}
),
per_day AS (
  SELECT day{{dims}},
         count(DISTINCT user_id) FILTER (WHERE act.d = day) AS dau,
         count(DISTINCT user_id) AS active28
  FROM days JOIN act ON act.d BETWEEN day - 27 AND day
  GROUP BY ALL
)
SELECT *, round(dau / active28, 4) AS stickiness
FROM per_day
ORDER BY ALL;
