-- A keyed table joined with a view on their shared key, recomputed key by key: rows enter
-- and leave as either side changes (a customer's purchase count grows, their row changes).
-- @key: customer_id
SELECT c.customer_id, c.name, c.location, s.purchases, s.spent
FROM customers c
JOIN customer_spend s ON s.customer_id = c.customer_id
WHERE s.purchases % 3 <> 0 OR c.gender = 'Female'
