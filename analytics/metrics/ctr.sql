-- ctr — notification click-through rate per UTC day: opens / views, where views are events of
-- the types in $view_events (default 'notification_view', 'Push Notification Received') and
-- opens those in $open_events (default 'notification_open', 'Push Notification Tapped').
-- ctr is NULL on a day with opens but no views; a day with neither has no row (as in dau.sql).
--
-- Parameters: $from_time, $to_time (TIMESTAMPTZ, see dau.sql), $view_events, $open_events
-- (VARCHAR[]); templates {{dims}}, {{filters}} as in dau.sql.
-- @reads events from to
WITH per_day AS (
  SELECT timezone('UTC', event_time)::DATE AS day{{dims}},
         count(*) FILTER (WHERE list_contains($view_events, event_type)) AS views,
         count(*) FILTER (WHERE list_contains($open_events, event_type)) AS opens
  FROM events
  WHERE event_time >= $from_time AND event_time < $to_time
    AND (list_contains($view_events, event_type) OR list_contains($open_events, event_type))
    AND {{filters}}
  GROUP BY ALL
)
SELECT *, round(opens / nullif(views, 0), 4) AS ctr
FROM per_day
ORDER BY ALL;
