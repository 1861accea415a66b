CREATE EXTERNAL TABLE IF NOT EXISTS raw_events (
  `event_id` STRING,
  `event_type` STRING,
  `schema_version` INT,
  `user_id` STRING,
  `anonymous_id` STRING,
  `session_id` STRING,
  `ts` TIMESTAMP,
  `received_at` TIMESTAMP,
  `properties` STRING,
  `context` STRING,
  `shard_id` STRING,
  `sequence_number` STRING,
  `arrival_ts` TIMESTAMP
)
PARTITIONED BY (`year` STRING, `month` STRING, `day` STRING, `hour` STRING)
STORED AS PARQUET
LOCATION '{lake_uri}/raw/events/'
TBLPROPERTIES ('classification' = 'parquet')
