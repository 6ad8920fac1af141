-- active7 — rolling 7-day actives: for each UTC day D in [from, to], the distinct users active
-- on any of the 7 days D−6 … D (active as in dau.sql). Reads 6 days before --from.
--
-- Parameters: $from_time, $to_time (TIMESTAMPTZ, see dau.sql); templates {{dims}}, {{filters}}
-- as in dau.sql.
-- @reads events from-6d to
WITH days AS (
  SELECT d::DATE AS day
  FROM range(timezone('UTC', $from_time)::DATE, timezone('UTC', $to_time)::DATE, INTERVAL 1 DAY) t(d)
),
act AS (
  SELECT DISTINCT timezone('UTC', event_time)::DATE AS d, user_id{{dims}}
  FROM events
  WHERE event_time >= $from_time - INTERVAL 6 DAY AND event_time < $to_time AND {{filters}}
)
SELECT day{{dims}}, count(DISTINCT user_id) AS active7
FROM days JOIN act ON act.d BETWEEN day - 6 AND day
GROUP BY ALL
ORDER BY ALL;
