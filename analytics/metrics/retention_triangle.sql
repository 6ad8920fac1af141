-- retention_triangle — the cohort triangle: for each install cohort (defined as in
-- retention.sql) and each day N = 0 … 28 that is not after the newest event in the lake, how
-- many of the cohort were active on cohort day + N, and the share (day 0 is 1 by definition
-- when the cohort is by first event; install cohorts may have users whose install was their
-- only event).
--
-- Parameters and templates: as in retention.sql.
-- @reads events all
WITH first_events AS (
  SELECT user_id, min(event_time) AS first_time{{first_dims}}
  FROM events
  WHERE $cohort_by = 'first_seen' OR list_contains($install_events, event_type)
  GROUP BY user_id
),
cohorts AS (
  SELECT user_id, timezone('UTC', first_time)::DATE AS cohort{{dims}}
  FROM first_events
  WHERE first_time >= $from_time AND first_time < $to_time AND {{filters}}
),
activity AS (
  SELECT DISTINCT user_id, timezone('UTC', event_time)::DATE AS d
  FROM events
  WHERE event_time >= $from_time AND event_time < $to_time + INTERVAL 29 DAY
),
newest AS (SELECT timezone('UTC', max(event_time))::DATE AS last_day FROM events),
sizes AS (SELECT cohort{{dims}}, count(*) AS cohort_size FROM cohorts GROUP BY ALL),
grid AS (
  SELECT sizes.*, n.day_n::INTEGER AS day_n
  FROM sizes, range(0, 29) n(day_n), newest
  WHERE sizes.cohort + n.day_n::INTEGER <= newest.last_day
),
cells AS (
  SELECT cohort{{dims}}, (a.d - c.cohort)::INTEGER AS day_n, count(DISTINCT c.user_id) AS retained
  FROM cohorts c JOIN activity a ON a.user_id = c.user_id AND a.d BETWEEN c.cohort AND c.cohort + 28
  GROUP BY ALL
)
SELECT cohort{{dims}}, day_n, cohort_size,
       coalesce(retained, 0) AS retained,
       round(coalesce(retained, 0) / cohort_size, 4) AS rate
FROM grid LEFT JOIN cells USING (cohort{{dims}}, day_n)
ORDER BY ALL;
