CREATE OR REPLACE VIEW v_active_users_hourly AS
SELECT
    bucket_start AS hour_start,
    value AS active_users
FROM agg_metrics_hourly_v1
WHERE metric = 'active_users' AND metric_window = '1h';
