-- Notification click-through rate per UTC day: opens / views ('Push Notification Tapped' or
-- 'notification_open' over 'Push Notification Received' or 'notification_view').
-- Parameters: {{from}}, {{to}}, {{filters}}, {{dims}} as in dau.sql.
SELECT CAST(event_time AT TIME ZONE 'UTC' AS DATE) AS day{{dims}},
       count(*) FILTER (WHERE event_type IN ('Push Notification Received', 'notification_view')) AS views,
       count(*) FILTER (WHERE event_type IN ('Push Notification Tapped', 'notification_open')) AS opens,
       round(count(*) FILTER (WHERE event_type IN ('Push Notification Tapped', 'notification_open'))
             / nullif(count(*) FILTER (WHERE event_type IN ('Push Notification Received', 'notification_view')), 0), 4) AS ctr
FROM events
WHERE event_time >= {{from}} AND event_time < {{to}} AND {{filters}}
GROUP BY ALL
ORDER BY ALL;
