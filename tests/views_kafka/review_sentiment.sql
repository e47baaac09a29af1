-- Review sentiment: average polarity of review texts per product (sentiment() runs from -1,
-- negative, to 1, positive) and how many reviews were positive, negative or neutral.
SELECT
    product_id,
    count(*)                                                       AS reviews,
    avg(sentiment(review_text))                                    AS avg_sentiment,
    sum(CASE WHEN sentiment(review_text) > 0 THEN 1 ELSE 0 END)    AS positive,
    sum(CASE WHEN sentiment(review_text) < 0 THEN 1 ELSE 0 END)    AS negative,
    sum(CASE WHEN sentiment(review_text) = 0 THEN 1 ELSE 0 END)    AS neutral
FROM user_interactions
WHERE interaction_type = 'review' AND review_text IS NOT NULL
GROUP BY product_id
