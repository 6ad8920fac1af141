-- funnel — users who did the event types $steps in order, within $within_s seconds.
-- A user enters at their first step-1 event in [from, to]; each next step is the earliest event
-- of that type at or after the previous step's time and at most $within_s seconds after the
-- entry. Steps must be distinct event types. --where filters every event considered; --by groups
-- users by the dimensions of their entry event (a missing value is 'unknown').
-- Output per step: users reaching it, conversion from step 1, and from the previous step.
--
-- Parameters: $from_time, $to_time (TIMESTAMPTZ, see dau.sql), $steps (VARCHAR[], in order),
-- $within_s (INTEGER seconds).
-- Templated: {{dims}}, {{filters}} as in dau.sql; {{first_dims}} as in retention.sql.
-- @reads events from to+within
WITH RECURSIVE
ev AS (
  SELECT *, list_position($steps, event_type) AS idx
  FROM events
  WHERE list_contains($steps, event_type)
    AND event_time >= $from_time AND event_time < $to_time + to_seconds($within_s)
    AND {{filters}}
),
entries AS (
  SELECT user_id, min(event_time) AS t0{{first_dims}}
  FROM ev
  WHERE idx = 1 AND event_time < $to_time
  GROUP BY user_id
),
f(user_id, step, t0, t) AS (
  SELECT user_id, 1, t0, t0 FROM entries
  UNION ALL
  SELECT f.user_id, f.step + 1, f.t0, min(e.event_time)
  FROM f JOIN ev e ON e.user_id = f.user_id AND e.idx = f.step + 1
   AND e.event_time >= f.t AND e.event_time <= f.t0 + to_seconds($within_s)
  GROUP BY f.user_id, f.step, f.t0
),
steps AS (SELECT unnest($steps) AS event_type, generate_subscripts($steps, 1) AS step),
groups AS (SELECT DISTINCT 1 AS all_users{{dims}} FROM (SELECT 1) one LEFT JOIN entries ON TRUE),
grid AS (SELECT steps.*, groups.* FROM steps, groups),
reached AS (
  SELECT f.step{{dims}}, count(*) AS users
  FROM f JOIN entries USING (user_id)
  GROUP BY ALL
),
counted AS (
  SELECT grid.step, grid.event_type{{dims}}, grid.all_users, coalesce(reached.users, 0) AS users
  FROM grid LEFT JOIN reached USING (step{{dims}})
)
SELECT step, event_type{{dims}}, users,
       round(users / nullif(first_value(users) OVER w, 0), 4) AS conversion,
       round(users / nullif(lag(users) OVER w, 0), 4) AS step_conversion
FROM counted
WINDOW w AS (PARTITION BY all_users{{dims}} ORDER BY step)
ORDER BY ALL;
