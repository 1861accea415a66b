CREATE OR REPLACE VIEW v_cart_abandonment_daily AS
SELECT
    event_date,
    SUM(CASE WHEN step = 'add_to_cart' THEN sessions ELSE 0 END) AS cart_sessions,
    SUM(CASE WHEN step = 'purchase' THEN sessions ELSE 0 END) AS purchase_sessions,
    1 - CAST(SUM(CASE WHEN step = 'purchase' THEN sessions ELSE 0 END) AS DOUBLE PRECISION)
        / NULLIF(SUM(CASE WHEN step = 'add_to_cart' THEN sessions ELSE 0 END), 0) AS abandonment_rate
FROM agg_funnel_daily_v1
GROUP BY event_date;
