CREATE EXTERNAL TABLE IF NOT EXISTS product_hourly_v1 (
  `hour_start` TIMESTAMP,
  `product_id` STRING,
  `category` STRING,
  `views` BIGINT,
  `carts` BIGINT,
  `purchases` BIGINT,
  `units` BIGINT,
  `revenue` DOUBLE,
  `conversion` DOUBLE
)
PARTITIONED BY (`year` STRING, `month` STRING, `day` STRING, `hour` STRING)
STORED AS PARQUET
LOCATION '{lake_uri}/curated/product_hourly_v1/'
TBLPROPERTIES ('classification' = 'parquet')
