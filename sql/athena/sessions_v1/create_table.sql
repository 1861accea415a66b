CREATE EXTERNAL TABLE IF NOT EXISTS sessions_v1 (
  `session_key` STRING,
  `user_key` STRING,
  `session_start` TIMESTAMP,
  `session_end` TIMESTAMP,
  `duration_s` DOUBLE,
  `events` BIGINT,
  `page_views` BIGINT,
  `unique_pages` BIGINT,
  `converted` BOOLEAN,
  `orders` BIGINT,
  `revenue` DOUBLE
)
PARTITIONED BY (`year` STRING, `month` STRING, `day` STRING)
STORED AS PARQUET
LOCATION '{lake_uri}/curated/sessions_v1/'
TBLPROPERTIES ('classification' = 'parquet')
