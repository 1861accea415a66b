CREATE TABLE IF NOT EXISTS agg_metrics_daily_v1 (
    metric        VARCHAR(128) NOT NULL ENCODE ZSTD,
    metric_window VARCHAR(16) NOT NULL ENCODE ZSTD,
    bucket_start  TIMESTAMP NOT NULL ENCODE RAW,
    metric_key    SUPER,
    item          VARCHAR(1024) ENCODE ZSTD,
    item_rank     INTEGER ENCODE AZ64,
    value         DOUBLE PRECISION ENCODE ZSTD
)
DISTSTYLE EVEN
COMPOUND SORTKEY (bucket_start, metric);
