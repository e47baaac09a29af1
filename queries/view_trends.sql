-- View trends: product views per category over 15-minute windows that slide every 5 minutes
-- (hopping windows), to spot categories heating up.
-- @key: category, window_start
SELECT
    p.category,
    w.window_start,
    count(*) AS views
FROM (
    SELECT product_id, unnest(hop(INTERVAL '5 minutes', INTERVAL '15 minutes', view_time)) AS window_start
    FROM product_views
) w
JOIN products p ON p.product_id = w.product_id
GROUP BY p.category, w.window_start
