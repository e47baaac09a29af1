-- Products bought together: for each pair of different products, how many times one
-- customer bought both within a day of each other (completed purchases).
-- @key: product_id, also_bought
SELECT
    a.product_id,
    b.product_id AS also_bought,
    count(*)     AS pair_count
FROM transactions a
JOIN transactions b
  ON a.customer_id = b.customer_id
 AND a.product_id <> b.product_id
 AND b.transaction_time BETWEEN a.transaction_time - INTERVAL '1 day'
                            AND a.transaction_time + INTERVAL '1 day'
WHERE a.status = 'completed' AND b.status = 'completed'
GROUP BY a.product_id, b.product_id
