CREATE EXTERNAL TABLE IF NOT EXISTS product_daily_v1 (
  `date` DATE,
  `product_id` STRING,
  `category` STRING,
  `views` BIGINT,
  `carts` BIGINT,
  `purchases` BIGINT,
  `units` BIGINT,
  `revenue` DOUBLE,
  `conversion` DOUBLE
)
PARTITIONED BY (`year` STRING, `month` STRING, `day` STRING)
STORED AS PARQUET
LOCATION '{lake_uri}/curated/product_daily_v1/'
TBLPROPERTIES ('classification' = 'parquet')
