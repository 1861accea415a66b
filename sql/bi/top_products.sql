-- The 20 products with the most revenue over [start_date, end_date).
SELECT
    product_id,
    MAX(name) AS name,
    MAX(category) AS category,
    SUM(views) AS views,
    SUM(units) AS units,
    SUM(revenue) AS revenue
FROM v_top_products
WHERE event_date >= {start_date} AND event_date < {end_date}
GROUP BY product_id
ORDER BY revenue DESC, product_id
LIMIT 20;
