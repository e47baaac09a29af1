-- Category windows: average price and total stock per category, over the products last
-- updated in each 5-minute window (products is a table: each product counts in the window
-- of its latest update).
-- @key: category, window_start
SELECT
    category,
    date_bin(INTERVAL '5 minutes', updated_at) AS window_start,
    count(*)                                   AS products,
    avg(price)                                 AS avg_price,
    sum(stock_quantity)                        AS total_stock
FROM products
GROUP BY category, date_bin(INTERVAL '5 minutes', updated_at)
