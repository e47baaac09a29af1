-- Interval join without an aggregate (test): each purchase paired with the same customer's
-- interactions up to 30 seconds before or after it, appended as they are found, with a
-- lookup of the product's name on one side.
SELECT
    t.transaction_id,
    i.interaction_id,
    i.interaction_type,
    p.name AS product_name,
    i.interaction_time - t.transaction_time AS gap
FROM transactions t
JOIN products p ON p.product_id = t.product_id
JOIN user_interactions i
  ON i.customer_id = t.customer_id
 AND i.interaction_time BETWEEN t.transaction_time - INTERVAL '30 seconds'
                            AND t.transaction_time + INTERVAL '30 seconds'
WHERE t.status = 'completed'
