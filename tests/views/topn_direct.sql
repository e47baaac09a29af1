-- ORDER BY .. LIMIT straight over a streaming GROUP BY (split into a hidden view).
-- @key: customer_id
SELECT customer_id, count(*) AS views, sum(view_duration) AS seconds
FROM product_views
GROUP BY customer_id
ORDER BY count(*) DESC, customer_id
LIMIT 5
