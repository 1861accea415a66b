CREATE TABLE IF NOT EXISTS user_daily_facts_v1 (
    event_date    DATE NOT NULL ENCODE RAW,
    user_key      VARCHAR(256) NOT NULL ENCODE ZSTD,
    user_id       VARCHAR(256) ENCODE ZSTD,
    events        INTEGER ENCODE AZ64,
    sessions      INTEGER ENCODE AZ64,
    page_views    INTEGER ENCODE AZ64,
    product_views INTEGER ENCODE AZ64,
    add_to_carts  INTEGER ENCODE AZ64,
    orders        INTEGER ENCODE AZ64,
    revenue       DECIMAL(14,2) ENCODE AZ64,
    first_ts      TIMESTAMP ENCODE AZ64,
    last_ts       TIMESTAMP ENCODE AZ64
)
DISTSTYLE KEY
DISTKEY (user_key)
COMPOUND SORTKEY (event_date);
