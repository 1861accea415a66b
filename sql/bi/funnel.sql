-- Sessions reaching each funnel step over [start_date, end_date), with the rate from the first step.
SELECT
    step_index,
    step,
    SUM(sessions) AS sessions,
    CAST(SUM(sessions) AS DOUBLE PRECISION)
        / NULLIF(MAX(SUM(CASE WHEN step_index = 0 THEN sessions ELSE 0 END)) OVER (), 0) AS rate_from_first
FROM v_funnel_daily
WHERE event_date >= {start_date} AND event_date < {end_date}
GROUP BY step_index, step
ORDER BY step_index;
