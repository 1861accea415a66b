CREATE OR REPLACE VIEW v_top_products AS
SELECT
    a.event_date,
    a.product_id,
    p.name,
    COALESCE(p.category, a.category) AS category,
    p.brand,
    a.views,
    a.carts,
    a.purchases,
    a.units,
    a.revenue,
    a.conversion,
    RANK() OVER (PARTITION BY a.event_date ORDER BY a.revenue DESC) AS revenue_rank,
    RANK() OVER (PARTITION BY a.event_date ORDER BY a.views DESC) AS views_rank
FROM agg_product_daily_v1 AS a
LEFT JOIN dim_products_v1 AS p ON p.product_id = a.product_id;
