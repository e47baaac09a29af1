-- Hopping windows: 2-minute windows every 30 seconds, per level, with HAVING.
SELECT window_start, level, count(*) AS logs
FROM (SELECT level, unnest(hop(INTERVAL '30 seconds', INTERVAL '2 minutes', log_time)) AS window_start FROM system_logs)
GROUP BY window_start, level
HAVING count(*) > 3
