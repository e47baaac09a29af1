-- Products with little stock: rows enter and leave this view as stock changes.
-- @key: product_id
SELECT product_id, category, stock_quantity
FROM products
WHERE stock_quantity < 50
