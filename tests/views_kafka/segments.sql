-- A view over a view: customers per purchase segment, as an analyst would write it.
SELECT segment, count(*) AS customers
FROM (
    SELECT customer_id,
           CASE WHEN count(*) >= 5 THEN 'Loyal' WHEN count(*) >= 2 THEN 'Frequent' ELSE 'Occasional' END AS segment
    FROM transactions
    WHERE status = 'completed'
    GROUP BY customer_id
) per_customer
GROUP BY segment
