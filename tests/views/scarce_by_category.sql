-- A GROUP BY over a view whose rows come and go (scarce_rows), run on that view's changelog:
-- a category's group leaves when its last scarce product is restocked.
SELECT category, count(*) AS products, avg(stock_quantity) AS avg_units, count(stock_quantity) AS counted
FROM scarce_rows
GROUP BY category
