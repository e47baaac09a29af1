-- A stateless view: big orders, enriched by a lookup join, appended as they come.
SELECT t.transaction_id, t.total_amount, p.category, c.gender
FROM transactions t
JOIN products p ON t.product_id = p.product_id
JOIN customers c ON c.customer_id = t.customer_id
WHERE t.total_amount > 1500
