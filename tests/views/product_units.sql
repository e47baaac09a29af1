-- Units sold per product, completed purchases only (feeds unsold_products).
SELECT product_id, sum(quantity) AS units
FROM transactions
WHERE status = 'completed'
GROUP BY product_id
