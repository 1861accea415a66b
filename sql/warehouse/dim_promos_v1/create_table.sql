CREATE TABLE IF NOT EXISTS dim_promos_v1 (
    promo_code   VARCHAR(64) NOT NULL ENCODE RAW,
    discount_pct SMALLINT ENCODE AZ64,
    category     VARCHAR(64) ENCODE ZSTD,
    valid_from   DATE ENCODE AZ64,
    valid_to     DATE ENCODE AZ64
)
DISTSTYLE ALL
COMPOUND SORTKEY (promo_code);
