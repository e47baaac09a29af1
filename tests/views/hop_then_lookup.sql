-- Hopping windows unnested first, then joined with both keyed tables (a lookup join on each
-- side: products inner, customers outer). The engine moves the joins below the unnest; the
-- rows must be those of the query as written.
SELECT w.window_start, p.category, c.gender, count(*) AS views, sum(w.view_duration) AS seconds
FROM (
    SELECT product_id, customer_id, view_duration,
           unnest(hop(INTERVAL '1 minute', INTERVAL '3 minutes', view_time)) AS window_start
    FROM product_views
) w
JOIN products p ON p.product_id = w.product_id
LEFT JOIN customers c ON w.customer_id = c.customer_id
GROUP BY w.window_start, p.category, c.gender
