-- Tumbling 1-minute windows with a lookup join, append mode.
-- @mode: append
SELECT date_bin(INTERVAL '1 minute', v.view_time) AS minute, c.gender, count(*) AS views,
       max(v.view_duration) AS longest
FROM product_views v JOIN customers c ON c.customer_id = v.customer_id
GROUP BY date_bin(INTERVAL '1 minute', v.view_time), c.gender
