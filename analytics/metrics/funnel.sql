-- Funnel: users who did {{steps}} (a list of event types) in order, each step after the previous
-- one and all within {{within_s}} seconds of the user's first step-1 event in [from, to).
-- Output: step number, event type, users reaching it, conversion from step 1.
-- Parameters: {{from}}, {{to}}, {{filters}}, {{steps}} (VARCHAR[] literal), {{within_s}}.
WITH RECURSIVE
steps AS (SELECT unnest({{steps}}) AS name, generate_subscripts({{steps}}, 1) AS idx),
ev AS (
  SELECT e.user_id, e.event_time, s.idx
  FROM events e JOIN steps s ON e.event_type = s.name
  WHERE e.event_time >= {{from}} AND e.event_time < {{to}} + INTERVAL ({{within_s}}) SECOND AND {{filters}}
),
f(user_id, idx, t0, t) AS (
  SELECT user_id, 1, min(event_time), min(event_time) FROM ev WHERE idx = 1 AND event_time < {{to}} GROUP BY user_id
  UNION ALL
  SELECT f.user_id, f.idx + 1, f.t0, min(e.event_time)
  FROM f JOIN ev e ON e.user_id = f.user_id AND e.idx = f.idx + 1 AND e.event_time >= f.t AND e.event_time <= f.t0 + INTERVAL ({{within_s}}) SECOND
  GROUP BY f.user_id, f.idx, f.t0
)
SELECT s.idx AS step, s.name AS event_type, count(DISTINCT f.user_id) AS users,
       round(count(DISTINCT f.user_id) / max(count(DISTINCT f.user_id)) OVER (), 4) AS conversion
FROM steps s LEFT JOIN f ON f.idx = s.idx
GROUP BY s.idx, s.name
ORDER BY s.idx;
