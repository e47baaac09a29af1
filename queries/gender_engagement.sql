-- Engagement by gender and category: product views, viewing time and distinct viewers,
-- joining each view with the customer's and the product's current rows.
SELECT
    c.gender,
    p.category,
    count(*)                     AS views,
    sum(v.view_duration)         AS view_seconds,
    avg(v.view_duration)         AS avg_view_seconds,
    count(DISTINCT v.customer_id) AS viewers
FROM product_views v
JOIN customers c ON v.customer_id = c.customer_id
JOIN products p  ON v.product_id = p.product_id
GROUP BY c.gender, p.category
