-- System health: log lines per level per minute. Append mode: each minute's row is written
-- once, when the watermark has passed the end of the minute.
-- @mode: append
SELECT
    date_bin(INTERVAL '1 minute', log_time) AS minute,
    level,
    count(*) AS logs
FROM system_logs
GROUP BY date_bin(INTERVAL '1 minute', log_time), level
