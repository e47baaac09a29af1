-- Customers who bought this also bought: for each product, the 5 products that the same
-- customers most often bought within a day of it, with the pair count (from product_pairs).
-- @key: product_id, rank
SELECT product_id, rank, also_bought, name, category, pair_count
FROM (
    SELECT
        pp.product_id,
        pp.also_bought,
        p.name,
        p.category,
        pp.pair_count,
        row_number() OVER (
            PARTITION BY pp.product_id
            ORDER BY pp.pair_count DESC, pp.also_bought
        ) AS rank
    FROM product_pairs pp
    LEFT JOIN products p ON p.product_id = pp.also_bought
)
WHERE rank <= 5
