CREATE TABLE IF NOT EXISTS fact_sessions_v1 (
    session_key   VARCHAR(256) NOT NULL ENCODE ZSTD,
    user_key      VARCHAR(256) NOT NULL ENCODE ZSTD,
    session_start TIMESTAMP NOT NULL ENCODE RAW,
    session_end   TIMESTAMP ENCODE AZ64,
    duration_s    DOUBLE PRECISION ENCODE ZSTD,
    events        INTEGER ENCODE AZ64,
    page_views    INTEGER ENCODE AZ64,
    unique_pages  INTEGER ENCODE AZ64,
    converted     BOOLEAN ENCODE RAW,
    orders        INTEGER ENCODE AZ64,
    revenue       DECIMAL(14,2) ENCODE AZ64
)
DISTSTYLE KEY
DISTKEY (user_key)
COMPOUND SORTKEY (session_start);
