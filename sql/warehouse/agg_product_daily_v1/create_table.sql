CREATE TABLE IF NOT EXISTS agg_product_daily_v1 (
    event_date DATE NOT NULL ENCODE RAW,
    product_id VARCHAR(32) NOT NULL ENCODE ZSTD,
    category   VARCHAR(64) ENCODE ZSTD,
    views      BIGINT ENCODE AZ64,
    carts      BIGINT ENCODE AZ64,
    purchases  BIGINT ENCODE AZ64,
    units      BIGINT ENCODE AZ64,
    revenue    DECIMAL(14,2) ENCODE AZ64,
    conversion DOUBLE PRECISION ENCODE ZSTD
)
DISTSTYLE KEY
DISTKEY (product_id)
COMPOUND SORTKEY (event_date);
