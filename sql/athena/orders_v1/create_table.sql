CREATE EXTERNAL TABLE IF NOT EXISTS orders_v1 (
  `order_id` STRING,
  `event_id` STRING,
  `ts` TIMESTAMP,
  `user_key` STRING,
  `user_id` STRING,
  `session_id` STRING,
  `currency` STRING,
  `amount` DOUBLE,
  `payment_method` STRING,
  `promo_code` STRING,
  `promo_discount_pct` INT,
  `promo_valid` BOOLEAN,
  `items_count` INT,
  `units` BIGINT,
  `items` array<struct<product_id:string,quantity:bigint,price:double,category:string>>,
  `categories` array<string>,
  `country` STRING,
  `device` STRING
)
PARTITIONED BY (`year` STRING, `month` STRING, `day` STRING, `hour` STRING)
STORED AS PARQUET
LOCATION '{lake_uri}/curated/orders_v1/'
TBLPROPERTIES ('classification' = 'parquet')
