-- Customer activity: customers by the hour of their last login, and gender.
SELECT
    date_trunc('hour', last_login) AS login_hour,
    gender,
    count(*)                       AS customers
FROM customers
GROUP BY date_trunc('hour', last_login), gender
