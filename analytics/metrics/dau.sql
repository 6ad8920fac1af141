-- Daily active users: distinct user_id with at least one valid event on the UTC day.
-- Parameters: {{from}} / {{to}} (timestamps, [from, to)), {{filters}} (dimension filters),
-- {{dims}} (extra group-by columns, each preceded by a comma).
SELECT CAST(event_time AT TIME ZONE 'UTC' AS DATE) AS day{{dims}}, count(DISTINCT user_id) AS dau
FROM events
WHERE event_time >= {{from}} AND event_time < {{to}} AND {{filters}}
GROUP BY ALL
ORDER BY ALL;
