CREATE TABLE IF NOT EXISTS fact_events_v1 (
    event_id       VARCHAR(36) NOT NULL ENCODE ZSTD,
    event_type     VARCHAR(128) NOT NULL ENCODE ZSTD,
    user_key       VARCHAR(256) NOT NULL ENCODE ZSTD,
    user_id        VARCHAR(256) ENCODE ZSTD,
    anonymous_id   VARCHAR(256) ENCODE ZSTD,
    session_id     VARCHAR(256) ENCODE ZSTD,
    ts             TIMESTAMP NOT NULL ENCODE RAW,
    received_at    TIMESTAMP ENCODE AZ64,
    schema_version INTEGER ENCODE AZ64,
    properties     VARCHAR(65535) ENCODE ZSTD,
    context        VARCHAR(65535) ENCODE ZSTD
)
DISTSTYLE KEY
DISTKEY (user_key)
COMPOUND SORTKEY (ts);
