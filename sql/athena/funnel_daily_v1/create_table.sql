CREATE EXTERNAL TABLE IF NOT EXISTS funnel_daily_v1 (
  `date` DATE,
  `step` STRING,
  `step_index` INT,
  `sessions` BIGINT,
  `rate_from_previous` DOUBLE,
  `rate_from_first` DOUBLE
)
PARTITIONED BY (`year` STRING, `month` STRING, `day` STRING)
STORED AS PARQUET
LOCATION '{lake_uri}/curated/funnel_daily_v1/'
TBLPROPERTIES ('classification' = 'parquet')
