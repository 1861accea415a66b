CREATE TABLE IF NOT EXISTS agg_funnel_daily_v1 (
    event_date         DATE NOT NULL ENCODE RAW,
    step               VARCHAR(32) NOT NULL ENCODE ZSTD,
    step_index         SMALLINT NOT NULL ENCODE AZ64,
    sessions           BIGINT ENCODE AZ64,
    rate_from_previous DOUBLE PRECISION ENCODE ZSTD,
    rate_from_first    DOUBLE PRECISION ENCODE ZSTD
)
DISTSTYLE ALL
COMPOUND SORTKEY (event_date);
