CREATE OR REPLACE VIEW v_funnel_daily AS
SELECT
    event_date,
    step_index,
    step,
    sessions,
    rate_from_previous,
    rate_from_first
FROM agg_funnel_daily_v1;
