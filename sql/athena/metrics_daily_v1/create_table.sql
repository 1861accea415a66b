CREATE EXTERNAL TABLE IF NOT EXISTS metrics_daily_v1 (
  `metric` STRING,
  `window` STRING,
  `bucket_start` TIMESTAMP,
  `key` array<string>,
  `item` STRING,
  `rank` INT,
  `value` DOUBLE
)
PARTITIONED BY (`year` STRING, `month` STRING, `day` STRING)
STORED AS PARQUET
LOCATION '{lake_uri}/curated/metrics_daily_v1/'
TBLPROPERTIES ('classification' = 'parquet')
