-- A GROUP BY over a keyed table, run on the table's changelog: products move between
-- categories' totals, in and out of the WHERE, and categories pass and fail the HAVING as
-- products change. count(rating) and avg(rating) skip NULL ratings.
SELECT
    category,
    count(*)            AS products,
    sum(stock_quantity) AS stock,
    avg(price)          AS avg_price,
    count(rating)       AS rated,
    avg(rating)         AS avg_rating
FROM products
WHERE price > 20
GROUP BY category
HAVING sum(stock_quantity) > 500
