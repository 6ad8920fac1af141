-- Rolling 7-day actives: for each day D in [from, to), distinct users active on D−6 … D.
-- Parameters: {{from}}, {{to}}, {{filters}}, {{dims}} as in dau.sql.
WITH days AS (
  SELECT CAST(d AS DATE) AS day FROM range(CAST({{from}} AT TIME ZONE 'UTC' AS DATE), CAST({{to}} AT TIME ZONE 'UTC' AS DATE), INTERVAL 1 DAY) t(d)
),
act AS (
  SELECT DISTINCT CAST(event_time AT TIME ZONE 'UTC' AS DATE) AS d, user_id{{dims}}
  FROM events
  WHERE event_time >= {{from}} - INTERVAL 6 DAY AND event_time < {{to}} AND {{filters}}
)
SELECT day{{dims}}, count(DISTINCT user_id) AS active7
FROM days JOIN act ON act.d BETWEEN day - 6 AND day
GROUP BY ALL
ORDER BY ALL;
