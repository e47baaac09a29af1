-- Distinct counts per tumbling minute: each window's sets go when the watermark closes it,
-- and the ids of values no open window holds any more are given back and reused.
SELECT date_bin(INTERVAL '1 minute', view_time) AS minute,
       count(*) AS views,
       count(DISTINCT customer_id) AS viewers,
       count(DISTINCT product_id) AS products_viewed
FROM product_views
GROUP BY date_bin(INTERVAL '1 minute', view_time)
