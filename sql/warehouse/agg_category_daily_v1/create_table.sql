CREATE TABLE IF NOT EXISTS agg_category_daily_v1 (
    event_date      DATE NOT NULL ENCODE RAW,
    category        VARCHAR(64) NOT NULL ENCODE ZSTD,
    products_viewed BIGINT ENCODE AZ64,
    views           BIGINT ENCODE AZ64,
    carts           BIGINT ENCODE AZ64,
    purchases       BIGINT ENCODE AZ64,
    units           BIGINT ENCODE AZ64,
    revenue         DECIMAL(14,2) ENCODE AZ64,
    conversion      DOUBLE PRECISION ENCODE ZSTD
)
DISTSTYLE ALL
COMPOUND SORTKEY (event_date);
