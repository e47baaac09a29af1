-- Sales velocity: units sold and revenue per product per hour of transaction time, and the
-- daily rate that pace amounts to. Completed purchases only.
-- @key: product_id, window_start
SELECT
    product_id,
    date_bin(INTERVAL '1 hour', transaction_time) AS window_start,
    sum(quantity)                                 AS units,
    sum(total_amount)                             AS revenue,
    count(*)                                      AS orders,
    sum(quantity) * 24                            AS units_per_day_at_this_pace
FROM transactions
WHERE status = 'completed'
GROUP BY product_id, date_bin(INTERVAL '1 hour', transaction_time)
