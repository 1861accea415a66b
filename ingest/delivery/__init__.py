"""Lake delivery (Firehose-like): the stream to the raw zone as Parquet, exactly once per record,
with hour manifests; the DLQ stream to the errors zone; and replays of both."""
