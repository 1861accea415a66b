CREATE OR REPLACE VIEW v_daily_kpis AS
SELECT
    u.event_date,
    u.active_users,
    u.buyers,
    u.events,
    u.page_views,
    u.orders,
    u.revenue,
    CASE WHEN u.orders > 0 THEN u.revenue / u.orders END AS avg_order_value,
    s.sessions,
    s.converted_sessions,
    CAST(s.converted_sessions AS DOUBLE PRECISION) / NULLIF(s.sessions, 0) AS session_conversion_rate
FROM (
    SELECT
        event_date,
        COUNT(*) AS active_users,
        SUM(CASE WHEN orders > 0 THEN 1 ELSE 0 END) AS buyers,
        SUM(events) AS events,
        SUM(page_views) AS page_views,
        SUM(orders) AS orders,
        SUM(revenue) AS revenue
    FROM user_daily_facts_v1
    GROUP BY event_date
) AS u
LEFT JOIN (
    SELECT
        CAST(session_start AS DATE) AS event_date,
        COUNT(*) AS sessions,
        SUM(CASE WHEN converted THEN 1 ELSE 0 END) AS converted_sessions
    FROM fact_sessions_v1
    GROUP BY CAST(session_start AS DATE)
) AS s ON s.event_date = u.event_date;
