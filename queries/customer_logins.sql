-- Customer logins: customers by gender whose latest login falls in each 5-minute window,
-- with the latest login in the window. `customers` is a table (latest row per customer), so a
-- customer who logs in again moves to the newer window.
-- @key: gender, window_start
SELECT
    gender,
    date_bin(INTERVAL '5 minutes', last_login) AS window_start,
    count(*)                                   AS logins,
    max(last_login)                            AS latest_login
FROM customers
GROUP BY gender, date_bin(INTERVAL '5 minutes', last_login)
