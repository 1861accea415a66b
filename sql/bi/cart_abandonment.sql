-- Cart abandonment per day over [start_date, end_date).
SELECT event_date, cart_sessions, purchase_sessions, abandonment_rate
FROM v_cart_abandonment_daily
WHERE event_date >= {start_date} AND event_date < {end_date}
ORDER BY event_date;
