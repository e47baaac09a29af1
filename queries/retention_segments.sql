-- Engagement segmentation: how many customers are Occasional, Frequent or Loyal buyers
-- (segments defined in customer_retention).
-- @key: segment
SELECT segment, count(*) AS customers
FROM customer_retention
GROUP BY segment
