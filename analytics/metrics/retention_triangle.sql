-- Cohort triangle: for each install cohort (see retention.sql) and each day N = 0 … 28 that has
-- already happened, how many of the cohort were active on cohort day + N, and the share.
-- Parameters: {{from}}, {{to}}, {{filters}}, {{dims}} as in dau.sql.
WITH installs AS (
  SELECT user_id{{dims}}, min(CAST(event_time AT TIME ZONE 'UTC' AS DATE)) AS cohort
  FROM events
  WHERE event_type IN ('install', 'Application Installed') AND event_time >= {{from}} AND event_time < {{to}} AND {{filters}}
  GROUP BY ALL
),
sizes AS (SELECT cohort{{dims}}, count(*) AS cohort_size FROM installs GROUP BY ALL),
act AS (
  SELECT DISTINCT user_id, CAST(event_time AT TIME ZONE 'UTC' AS DATE) AS d
  FROM events WHERE event_time >= {{from}} AND event_time < {{to}} + INTERVAL 29 DAY
),
cells AS (
  SELECT i.cohort{{dims_i}}, CAST(act.d - i.cohort AS INTEGER) AS day_n, count(DISTINCT i.user_id) AS retained
  FROM installs i JOIN act USING (user_id)
  WHERE act.d >= i.cohort AND act.d <= i.cohort + 28
  GROUP BY ALL
)
SELECT cells.*, sizes.cohort_size, round(retained / cohort_size, 4) AS rate
FROM cells JOIN sizes USING (cohort{{dims}})
ORDER BY ALL;
