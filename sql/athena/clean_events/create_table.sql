CREATE EXTERNAL TABLE IF NOT EXISTS clean_events (
  `event_id` STRING,
  `event_type` STRING,
  `user_id` STRING,
  `anonymous_id` STRING,
  `user_key` STRING,
  `session_id` STRING,
  `ts` TIMESTAMP,
  `received_at` TIMESTAMP,
  `schema_version` INT,
  `properties` STRING,
  `context` STRING,
  `shard_id` STRING,
  `sequence_number` STRING,
  `arrival_ts` TIMESTAMP
)
PARTITIONED BY (`year` STRING, `month` STRING, `day` STRING, `hour` STRING)
STORED AS PARQUET
LOCATION '{lake_uri}/clean/events/'
TBLPROPERTIES ('classification' = 'parquet')
