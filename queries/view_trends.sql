-- View trends: product views per category over 15-minute windows that slide every 5 minutes
-- (hopping windows), to spot categories heating up.
-- @key: category, window_start
SELECT
    w.category,
    w.window_start,
    count(*) AS views
FROM (
    SELECT p.category, unnest(hop(INTERVAL '5 minutes', INTERVAL '15 minutes', v.view_time)) AS window_start
    FROM product_views v
    JOIN products p ON p.product_id = v.product_id
) w
GROUP BY w.category, w.window_start
