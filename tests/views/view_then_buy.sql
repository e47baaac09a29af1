-- Interval join of two streams (test): product views followed, within two minutes, by a
-- purchase of the same product by the same customer. Short bound: state is evicted while the
-- data set runs.
-- @key: product_id
SELECT
    v.product_id,
    count(*)            AS converted_views,
    sum(t.total_amount) AS revenue,
    max(t.transaction_time - v.view_time) AS longest_wait
FROM product_views v
JOIN transactions t
  ON t.customer_id = v.customer_id
 AND t.product_id = v.product_id
 AND t.transaction_time >= v.view_time
 AND t.transaction_time <= v.view_time + INTERVAL '2 minutes'
GROUP BY v.product_id
