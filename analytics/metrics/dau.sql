-- dau — daily active users.
-- An active user is a distinct user_id with at least one valid event (silver `events`) whose
-- event_time falls in the UTC day. One row per day (and per --by dimension value; a user active
-- on two platforms counts once on each). Days without events have no row.
--
-- Parameters (DuckDB prepared-statement parameters; `sluice query --metric` binds them):
--   $from_time  TIMESTAMPTZ  00:00 UTC of the first day (inclusive)
--   $to_time    TIMESTAMPTZ  00:00 UTC after the last day (exclusive)
-- Templated by sluice (validated identifiers only):
--   {{dims}}     ", device_type, country" from --by (empty without)
--   {{filters}}  "(device_type IN ($where_0))" from --where, else TRUE
-- Reuse in DuckDB: delete {{dims}}, replace {{filters}} with TRUE, then
--   PREPARE dau AS <the query>;
--   EXECUTE dau(from_time := TIMESTAMPTZ '2026-03-01', to_time := TIMESTAMPTZ '2026-04-01');
-- @reads events from to
SELECT timezone('UTC', event_time)::DATE AS day{{dims}},
       count(DISTINCT user_id) AS dau
FROM events
WHERE event_time >= $from_time AND event_time < $to_time AND {{filters}}
GROUP BY ALL
ORDER BY ALL;
