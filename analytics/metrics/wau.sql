-- wau — weekly active users: distinct user_id with a valid event in the ISO week (Monday 00:00
-- UTC to the next Monday). Every week that overlaps [from, to] is counted whole, so the first
-- and last rows are complete weeks even when --from/--to fall mid-week.
--
-- Parameters: $from_time, $to_time (TIMESTAMPTZ, see dau.sql); templates {{dims}}, {{filters}}
-- as in dau.sql.
-- @reads events from-6d to+6d
SELECT timezone('UTC', date_trunc('week', timezone('UTC', event_time)))::DATE AS week{{dims}},
       count(DISTINCT user_id) AS wau
FROM events
WHERE event_time >= timezone('UTC', date_trunc('week', timezone('UTC', $from_time)))
  AND event_time < timezone('UTC', date_trunc('week', timezone('UTC', $to_time - INTERVAL 1 MILLISECOND)) + INTERVAL 7 DAY)
  AND {{filters}}
GROUP BY ALL
ORDER BY ALL;
