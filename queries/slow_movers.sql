-- Slow movers: the 10 products with the fewest units sold, including products never sold.
-- @key: product_id
SELECT
    row_number() OVER (ORDER BY coalesce(s.units, 0), p.product_id) AS rank,
    p.product_id,
    p.name,
    p.category,
    coalesce(s.units, 0) AS units,
    p.stock_quantity
FROM products p
LEFT JOIN product_sales s ON p.product_id = s.product_id
ORDER BY coalesce(s.units, 0), p.product_id
LIMIT 10
