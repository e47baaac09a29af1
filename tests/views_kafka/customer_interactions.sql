-- Customer interactions: per customer, all interactions, wishlist additions, reviews, ratings.
SELECT
    customer_id,
    count(*) AS total_interactions,
    sum(CASE WHEN interaction_type = 'wishlist_addition' THEN 1 ELSE 0 END) AS wishlist_additions,
    sum(CASE WHEN interaction_type = 'review' THEN 1 ELSE 0 END)            AS reviews,
    sum(CASE WHEN interaction_type = 'rating' THEN 1 ELSE 0 END)            AS ratings
FROM user_interactions
GROUP BY customer_id
