-- Customer retention: completed purchases per customer, and a segment an analyst can edit:
-- Occasional (1 purchase), Frequent (2-4), Loyal (5 or more).
-- @key: customer_id
SELECT
    customer_id,
    count(*) AS purchases,
    CASE
        WHEN count(*) >= 5 THEN 'Loyal'
        WHEN count(*) >= 2 THEN 'Frequent'
        ELSE 'Occasional'
    END      AS segment
FROM transactions
WHERE status = 'completed'
GROUP BY customer_id
