-- HAVING: products enter the view once they pass 20 completed orders.
SELECT product_id, count(*) AS orders, sum(quantity) AS units
FROM transactions
WHERE status = 'completed'
GROUP BY product_id
HAVING count(*) > 20
