-- Monthly active users: distinct users per calendar month (UTC).
-- Parameters: {{from}}, {{to}}, {{filters}}, {{dims}} as in dau.sql.
SELECT CAST(date_trunc('month', event_time AT TIME ZONE 'UTC') AS DATE) AS month{{dims}}, count(DISTINCT user_id) AS mau
FROM events
WHERE event_time >= {{from}} AND event_time < {{to}} AND {{filters}}
GROUP BY ALL
ORDER BY ALL;
