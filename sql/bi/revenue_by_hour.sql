-- Revenue, orders and buyers per hour over [start_date, end_date).
SELECT hour_start, orders, buyers, revenue
FROM v_revenue_hourly
WHERE hour_start >= {start_date} AND hour_start < {end_date}
ORDER BY hour_start;
