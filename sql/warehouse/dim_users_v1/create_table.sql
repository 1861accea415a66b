CREATE TABLE IF NOT EXISTS dim_users_v1 (
    user_key      VARCHAR(256) NOT NULL ENCODE RAW,
    user_id       VARCHAR(256) ENCODE ZSTD,
    anonymous_id  VARCHAR(256) ENCODE ZSTD,
    first_seen_at TIMESTAMP NOT NULL ENCODE AZ64,
    last_seen_at  TIMESTAMP NOT NULL ENCODE AZ64,
    country       VARCHAR(8) ENCODE ZSTD,
    device        VARCHAR(32) ENCODE ZSTD,
    plan          VARCHAR(32) ENCODE ZSTD,
    events        BIGINT NOT NULL ENCODE AZ64
)
DISTSTYLE KEY
DISTKEY (user_key)
COMPOUND SORTKEY (user_key);
