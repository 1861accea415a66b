CREATE EXTERNAL TABLE IF NOT EXISTS category_daily_v1 (
  `date` DATE,
  `category` STRING,
  `products_viewed` BIGINT,
  `views` BIGINT,
  `carts` BIGINT,
  `purchases` BIGINT,
  `units` BIGINT,
  `revenue` DOUBLE,
  `conversion` DOUBLE
)
PARTITIONED BY (`year` STRING, `month` STRING, `day` STRING)
STORED AS PARQUET
LOCATION '{lake_uri}/curated/category_daily_v1/'
TBLPROPERTIES ('classification' = 'parquet')
