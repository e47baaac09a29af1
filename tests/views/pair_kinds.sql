-- Every kind of aggregate over many groups at once: one group per customer and product, so a
-- large batch touches more groups than the engine merges at a time (its merge works through
-- a batch's groups in chunks, a count(DISTINCT) set included).
SELECT
    customer_id,
    product_id,
    count(*) AS n,
    count(DISTINCT payment_method) AS methods,
    min(total_amount) AS min_amount,
    max(total_amount) AS max_amount,
    sum(quantity) AS units,
    avg(price) AS avg_price,
    max(upper(status)) AS max_status,
    stddev(price) AS price_stddev,
    bool_or(quantity > 5) AS any_big
FROM transactions
GROUP BY customer_id, product_id
