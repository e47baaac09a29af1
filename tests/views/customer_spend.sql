-- Purchases and spend per customer (feeds the key-aligned views below).
SELECT customer_id, count(*) AS purchases, sum(total_amount) AS spent
FROM transactions
GROUP BY customer_id
