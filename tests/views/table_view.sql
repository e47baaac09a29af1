-- A view over a keyed table with a window function.
-- @key: product_id
SELECT product_id, category, price,
       rank() OVER (PARTITION BY category ORDER BY price DESC, product_id) AS price_rank
FROM products
