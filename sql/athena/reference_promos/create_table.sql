CREATE EXTERNAL TABLE IF NOT EXISTS reference_promos (
  `promo_code` STRING,
  `discount_pct` INT,
  `category` STRING,
  `valid_from` STRING,
  `valid_to` STRING
)
ROW FORMAT SERDE 'org.apache.hadoop.hive.serde2.OpenCSVSerde'
STORED AS TEXTFILE
LOCATION '{lake_uri}/reference/promos/'
TBLPROPERTIES ('classification' = 'csv', 'skip.header.line.count' = '1')
