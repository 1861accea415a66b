-- One row of totals over [start_date, end_date): the headline tiles of a dashboard.
SELECT
    SUM(orders) AS orders,
    SUM(revenue) AS revenue,
    SUM(revenue) / NULLIF(SUM(orders), 0) AS avg_order_value,
    SUM(sessions) AS sessions,
    CAST(SUM(converted_sessions) AS DOUBLE PRECISION) / NULLIF(SUM(sessions), 0) AS session_conversion_rate
FROM v_daily_kpis
WHERE event_date >= {start_date} AND event_date < {end_date};
