-- sessions — session statistics per UTC day of session start, from gold `sessions` (closed
-- sessions only: a session closes after the inactivity gap, default 30 min).
-- Length = duration_s = last event time − first event time, in seconds (a one-event session
-- has length 0). median_s and p90_s interpolate linearly (quantile_cont); bounce_rate = share of
-- sessions with exactly one event. --where/--by: device_type, app_version, country (of the
-- session's first event).
--
-- Parameters: $from_time, $to_time (TIMESTAMPTZ, see dau.sql); templates {{dims}}, {{filters}}
-- as in dau.sql.
-- @reads sessions from to
SELECT timezone('UTC', session_start)::DATE AS day{{dims}},
       count(*) AS sessions,
       round(median(duration_s), 3) AS median_s,
       round(quantile_cont(duration_s, 0.9), 3) AS p90_s,
       round(avg(duration_s), 3) AS avg_s,
       round(avg(CASE WHEN bounce THEN 1.0 ELSE 0.0 END), 4) AS bounce_rate
FROM sessions
WHERE session_start >= $from_time AND session_start < $to_time AND {{filters}}
GROUP BY ALL
ORDER BY ALL;
