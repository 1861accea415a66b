CREATE OR REPLACE VIEW v_revenue_hourly AS
SELECT
    DATE_TRUNC('hour', ts) AS hour_start,
    COUNT(*) AS orders,
    COUNT(DISTINCT user_key) AS buyers,
    SUM(units) AS units,
    SUM(amount) AS revenue,
    SUM(CASE WHEN promo_valid THEN amount ELSE 0 END) AS promo_revenue
FROM fact_orders_v1
GROUP BY DATE_TRUNC('hour', ts);
