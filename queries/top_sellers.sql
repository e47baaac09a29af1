-- Top sellers: the 10 products with the most units sold (completed purchases).
-- @key: product_id
SELECT
    row_number() OVER (ORDER BY s.units DESC, s.product_id) AS rank,
    s.product_id,
    p.name,
    p.category,
    s.units,
    s.revenue
FROM product_sales s
JOIN products p ON p.product_id = s.product_id
ORDER BY s.units DESC, s.product_id
LIMIT 10
