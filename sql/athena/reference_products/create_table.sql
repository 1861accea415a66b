CREATE EXTERNAL TABLE IF NOT EXISTS reference_products (
  `product_id` STRING,
  `name` STRING,
  `category` STRING,
  `price` DOUBLE,
  `brand` STRING
)
ROW FORMAT SERDE 'org.apache.hadoop.hive.serde2.OpenCSVSerde'
STORED AS TEXTFILE
LOCATION '{lake_uri}/reference/products/'
TBLPROPERTIES ('classification' = 'csv', 'skip.header.line.count' = '1')
