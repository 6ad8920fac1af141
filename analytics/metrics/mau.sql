-- mau — monthly active users: distinct user_id with a valid event in the calendar month (UTC).
-- Every month that overlaps [from, to] is counted whole.
--
-- Parameters: $from_time, $to_time (TIMESTAMPTZ, see dau.sql); templates {{dims}}, {{filters}}
-- as in dau.sql.
-- @reads events from-31d to+31d
SELECT timezone('UTC', date_trunc('month', timezone('UTC', event_time)))::DATE AS month{{dims}},
       count(DISTINCT user_id) AS mau
FROM events
WHERE event_time >= timezone('UTC', date_trunc('month', timezone('UTC', $from_time)))
  AND event_time < timezone('UTC', date_trunc('month', timezone('UTC', $to_time - INTERVAL 1 MILLISECOND)) + INTERVAL 1 MONTH)
  AND {{filters}}
GROUP BY ALL
ORDER BY ALL;
