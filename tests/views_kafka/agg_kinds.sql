-- Every kind of aggregate over a stream, with a CASE and a scalar function.
SELECT
    payment_method,
    count(*) AS n,
    count(DISTINCT customer_id) AS customers,
    min(total_amount) AS min_amount,
    max(total_amount) AS max_amount,
    avg(quantity) AS avg_qty,
    sum(CASE WHEN status = 'refunded' THEN 1 ELSE 0 END) AS refunds,
    max(upper(status)) AS max_status,
    stddev(price) AS price_stddev,
    bool_or(quantity > 5) AS any_big
FROM transactions
GROUP BY payment_method
