-- Low stock alerts: products whose stock is below twice their average daily sales
-- (threshold 10 for products that have not sold yet).
-- @key: product_id
SELECT
    p.product_id,
    p.name,
    p.category,
    p.stock_quantity,
    coalesce(2 * s.avg_daily_sales, 10.0) AS threshold,
    concat('Low stock: ', p.name, ' (', p.product_id, ') has ', p.stock_quantity,
           ' left, below ', CAST(ceil(coalesce(2 * s.avg_daily_sales, 10.0)) AS BIGINT)) AS alert
FROM products p
LEFT JOIN product_sales s ON p.product_id = s.product_id
WHERE p.stock_quantity < coalesce(2 * s.avg_daily_sales, 10.0)
