-- A global aggregate: one row, no GROUP BY.
SELECT count(*) AS transactions, sum(total_amount) AS revenue, count(DISTINCT product_id) AS products
FROM transactions
