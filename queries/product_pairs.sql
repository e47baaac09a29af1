-- Products bought together: for each pair of different products, how many times one
-- customer bought both within a day of each other (completed purchases). Read by
-- product_affinity.
-- An interval join of transactions with itself: it keeps each customer's completed purchases
-- of the last day, and a purchase costs as much as the pairs it makes with them. With real
-- shoppers (a few purchases a day) that is little; the built-in generator's customers buy
-- every half minute or so, which makes this the costliest view by far (docs/BENCHMARKS.md).
-- A shorter bound (INTERVAL '1 hour') cuts both state and cost in proportion.
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
