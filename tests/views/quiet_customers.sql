-- The customers with the fewest purchases, none included: a keyed table LEFT JOIN a view,
-- ranked on columns of both. Most changed customers sort far after the ranking and are set
-- aside without a run.
-- @key: customer_id
SELECT
    row_number() OVER (ORDER BY coalesce(s.purchases, 0), c.customer_id) AS rank,
    c.customer_id,
    c.name,
    coalesce(s.purchases, 0) AS purchases
FROM customers c
LEFT JOIN customer_spend s ON s.customer_id = c.customer_id
ORDER BY coalesce(s.purchases, 0), c.customer_id
LIMIT 5
