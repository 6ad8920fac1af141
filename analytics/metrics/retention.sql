-- retention — day-1/7/28 retention by install cohort.
-- A user's cohort is the UTC day of their first install event ever (event types in
-- $install_events, default 'install' and 'Application Installed'); with $cohort_by =
-- 'first_seen' it is the day of their first event of any type instead. Only cohorts whose day is
-- in [from, to] are listed. Day-N retention = share of the cohort with a valid event on cohort
-- day + N (UTC). A rate is NULL while that day is still after the newest event in the lake.
-- --where/--by apply to the user's first (install) event; a missing dimension is 'unknown'.
--
-- Parameters: $from_time, $to_time (TIMESTAMPTZ, see dau.sql), $install_events (VARCHAR[]),
-- $cohort_by (VARCHAR: 'install' | 'first_seen').
-- Templated: {{dims}} (as in dau.sql), {{first_dims}} (", coalesce(arg_min(device_type,
-- (event_time, event_id)), 'unknown') AS device_type" for each --by and --where dimension),
-- {{filters}} (as in dau.sql, applied to the cohort).
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
counts AS (
  SELECT cohort{{dims}},
         count(DISTINCT c.user_id) AS cohort_size,
         count(DISTINCT c.user_id) FILTER (WHERE a.d = cohort + 1) AS d1_users,
         count(DISTINCT c.user_id) FILTER (WHERE a.d = cohort + 7) AS d7_users,
         count(DISTINCT c.user_id) FILTER (WHERE a.d = cohort + 28) AS d28_users
  FROM cohorts c LEFT JOIN activity a USING (user_id)
  GROUP BY ALL
),
newest AS (SELECT timezone('UTC', max(event_time))::DATE AS last_day FROM events)
SELECT counts.*,
       CASE WHEN cohort + 1 <= last_day THEN round(d1_users / cohort_size, 4) END AS d1,
       CASE WHEN cohort + 7 <= last_day THEN round(d7_users / cohort_size, 4) END AS d7,
       CASE WHEN cohort + 28 <= last_day THEN round(d28_users / cohort_size, 4) END AS d28
FROM counts, newest
ORDER BY ALL;
