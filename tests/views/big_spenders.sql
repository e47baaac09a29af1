-- The customers who spent most, with their gender: a view joined with a keyed table, ranked
-- on the view's columns. The best customers buy again and again, so few rows of the ranking
-- stay unchanged from one round to the next; the rows that sort before the ranking's last
-- one are confirmed all the same.
-- @key: customer_id
SELECT
    rank() OVER (ORDER BY s.spent DESC, s.customer_id) AS rank,
    s.customer_id,
    c.gender,
    s.purchases,
    s.spent
FROM customer_spend s
JOIN customers c ON c.customer_id = s.customer_id
ORDER BY s.spent DESC, s.customer_id
LIMIT 8
