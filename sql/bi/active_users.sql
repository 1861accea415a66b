-- Active users per day (and buyers among them) over [start_date, end_date).
SELECT event_date, active_users, buyers, sessions
FROM v_daily_kpis
WHERE event_date >= {start_date} AND event_date < {end_date}
ORDER BY event_date;
