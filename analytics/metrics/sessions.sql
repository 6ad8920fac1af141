-- Session statistics over gold sessions starting in [from, to): count, median and p90 length
-- (seconds, last event − first event) and bounce rate (sessions of one event).
-- Parameters: {{from}}, {{to}}, {{filters}} (on the session's first-event dimensions), {{dims}}.
SELECT CAST(session_start AT TIME ZONE 'UTC' AS DATE) AS day{{dims}},
       count(*) AS sessions,
       median(duration_s) AS median_s,
       quantile_cont(duration_s, 0.9) AS p90_s,
       round(avg(CASE WHEN bounce THEN 1.0 ELSE 0.0 END), 4) AS bounce_rate
FROM sessions
WHERE session_start >= {{from}} AND session_start < {{to}} AND {{filters}}
GROUP BY ALL
ORDER BY ALL;
