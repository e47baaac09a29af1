-- Product sales to date: units, revenue and average daily sales per product (completed
-- purchases). Read by low_stock, top_sellers and slow_movers.
-- @key: product_id
SELECT
    product_id,
    sum(quantity)          AS units,
    sum(total_amount)      AS revenue,
    count(*)               AS orders,
    min(transaction_time)  AS first_sale,
    max(transaction_time)  AS last_sale,
    sum(quantity) / greatest(
        (CAST(max(transaction_time) AS BIGINT) - CAST(min(transaction_time) AS BIGINT)) / 86400000.0,
        1.0)               AS avg_daily_sales
FROM transactions
WHERE status = 'completed'
GROUP BY product_id
