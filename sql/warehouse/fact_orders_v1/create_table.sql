CREATE TABLE IF NOT EXISTS fact_orders_v1 (
    order_id           VARCHAR(64) NOT NULL ENCODE ZSTD,
    event_id           VARCHAR(36) NOT NULL ENCODE ZSTD,
    ts                 TIMESTAMP NOT NULL ENCODE RAW,
    user_key           VARCHAR(256) NOT NULL ENCODE ZSTD,
    user_id            VARCHAR(256) ENCODE ZSTD,
    session_id         VARCHAR(256) ENCODE ZSTD,
    currency           VARCHAR(3) ENCODE ZSTD,
    amount             DECIMAL(14,2) ENCODE AZ64,
    payment_method     VARCHAR(32) ENCODE ZSTD,
    promo_code         VARCHAR(64) ENCODE ZSTD,
    promo_discount_pct SMALLINT ENCODE AZ64,
    promo_valid        BOOLEAN ENCODE RAW,
    items_count        INTEGER ENCODE AZ64,
    units              INTEGER ENCODE AZ64,
    items              SUPER,
    categories         SUPER,
    country            VARCHAR(8) ENCODE ZSTD,
    device             VARCHAR(32) ENCODE ZSTD
)
DISTSTYLE KEY
DISTKEY (user_key)
COMPOUND SORTKEY (ts);
