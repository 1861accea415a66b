CREATE EXTERNAL TABLE IF NOT EXISTS user_daily_v1 (
  `date` DATE,
  `user_key` STRING,
  `user_id` STRING,
  `events` BIGINT,
  `sessions` BIGINT,
  `page_views` BIGINT,
  `product_views` BIGINT,
  `add_to_carts` BIGINT,
  `orders` BIGINT,
  `revenue` DOUBLE,
  `first_ts` TIMESTAMP,
  `last_ts` TIMESTAMP
)
PARTITIONED BY (`year` STRING, `month` STRING, `day` STRING)
STORED AS PARQUET
LOCATION '{lake_uri}/curated/user_daily_v1/'
TBLPROPERTIES ('classification' = 'parquet')
