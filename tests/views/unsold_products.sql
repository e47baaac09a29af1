-- Products with no completed sale yet (an anti join on the key): rows leave as products
-- sell, and new products arrive unsold.
-- @key: product_id
SELECT p.product_id, p.name, p.stock_quantity
FROM products p
WHERE NOT EXISTS (SELECT 1 FROM product_units u WHERE u.product_id = p.product_id)
