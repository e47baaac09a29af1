-- Category prices: average price per category against the average over all products.
SELECT
    category,
    count(*)                                     AS products,
    avg(price)                                   AS avg_price,
    (SELECT avg(price) FROM products)            AS overall_avg_price,
    avg(price) - (SELECT avg(price) FROM products) AS diff_from_overall
FROM products
GROUP BY category
