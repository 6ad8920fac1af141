-- Weekly active users: distinct users per ISO week (weeks start on Monday, UTC).
-- Parameters: {{from}}, {{to}}, {{filters}}, {{dims}} as in dau.sql.
SELECT CAST(date_trunc('week', event_time AT TIME ZONE 'UTC') AS DATE) AS week{{dims}}, count(DISTINCT user_id) AS wau
FROM events
WHERE event_time >= {{from}} AND event_time < {{to}} AND {{filters}}
GROUP BY ALL
ORDER BY ALL;
