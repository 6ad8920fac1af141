-- Retention by install cohort: a user's cohort is the UTC day of their first install event
-- ('install' or 'Application Installed'); day-N retention = share of the cohort active on
-- cohort day + N. Cohorts with install day in [from, to); activity is read up to to + 28 days.
-- Parameters: {{from}}, {{to}}, {{filters}}, {{dims}} as in dau.sql.
WITH installs AS (
  SELECT user_id{{dims}}, min(CAST(event_time AT TIME ZONE 'UTC' AS DATE)) AS cohort
  FROM events
  WHERE event_type IN ('install', 'Application Installed') AND event_time >= {{from}} AND event_time < {{to}} AND {{filters}}
  GROUP BY ALL
),
act AS (
  SELECT DISTINCT user_id, CAST(event_time AT TIME ZONE 'UTC' AS DATE) AS d
  FROM events WHERE event_time >= {{from}} AND event_time < {{to}} + INTERVAL 29 DAY
)
SELECT cohort{{dims}},
       count(DISTINCT i.user_id) AS cohort_size,
       round(count(DISTINCT i.user_id) FILTER (WHERE act.d = cohort + 1) / count(DISTINCT i.user_id), 4) AS d1,
       round(count(DISTINCT i.user_id) FILTER (WHERE act.d = cohort + 7) / count(DISTINCT i.user_id), 4) AS d7,
       round(count(DISTINCT i.user_id) FILTER (WHERE act.d = cohort + 28) / count(DISTINCT i.user_id), 4) AS d28
FROM installs i LEFT JOIN act USING (user_id)
GROUP BY ALL
ORDER BY ALL;
