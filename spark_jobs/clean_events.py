"""raw → clean: conform types, validate, drop duplicate event_ids across a lookback of earlier hours.

The delivery keeps every copy a client sent (at-least-once from the stream, retries from clients);
this is where the platform becomes effectively-once. A copy is dropped when a *kept* copy of the
same event_id exists in the same hour or in a clean partition at most ``lookback_hours`` earlier.
Within an hour the kept copy is the first by (received_at, arrival_ts, shard_id, sequence_number,
row hash): a total order, so reruns keep the same copy. Processing many hours in one job gives
exactly what processing them one by one, oldest first, gives.

Invalid rows (no UUID event_id, no event time, no user, properties not a JSON object, event time
outside the raw partition they were read from) go to ``errors/`` with every reason.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from spark_jobs.schemas import (
    ARRIVAL_TS,
    CLEAN_COLUMNS,
    ERROR_COLUMNS,
    HOUR_PARTITION,
    RAW_COLUMNS,
    SEQUENCE_NUMBER,
    SHARD_ID,
)

DEFAULT_LOOKBACK_HOURS = 7 * 24
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_SOURCE_HOUR = r"year=(\d{4})/month=(\d{2})/day=(\d{2})/hour=(\d{2})/"


def epoch_hour(ts: Column) -> Column:
    """Hours since the epoch: a time-zone-free hour number."""
    return F.floor(F.unix_micros(ts) / F.lit(3_600_000_000)).cast("long")


def hour_partition(ts: Column) -> list[Column]:
    """year/month/day/hour strings of an event time (the session time zone is UTC)."""
    return [
        F.date_format(ts, fmt).alias(name)
        for name, fmt in zip(HOUR_PARTITION, ("yyyy", "MM", "dd", "HH"), strict=True)
    ]


def conform(raw: DataFrame) -> DataFrame:
    """Every raw column present with its contract type; columns an older writer lacked are null."""
    present = set(raw.columns)
    columns = [
        (F.col(name).try_cast(kind) if name in present else F.lit(None).cast(kind)).alias(name)
        for name, kind in RAW_COLUMNS.items()
    ]
    source = F.col("source_file") if "source_file" in present else F.lit(None).cast("string")
    return raw.select(*columns, source.alias("source_file"))


def _source_hour(source_file: Column) -> Column:
    """The epoch hour of the raw partition a row was read from (null when not read from the lake)."""
    parts = [F.regexp_extract(source_file, _SOURCE_HOUR, i) for i in range(1, 5)]
    stamp = F.concat(
        parts[0], F.lit("-"), parts[1], F.lit("-"), parts[2], F.lit(" "), parts[3], F.lit(":00:00")
    )
    return F.when(F.regexp_extract(source_file, _SOURCE_HOUR, 1) != "", epoch_hour(F.to_timestamp(stamp)))


def with_reasons(conformed: DataFrame) -> DataFrame:
    """Adds ``reason``: every problem of the row joined by '; ', null when the row is valid."""
    checks = [
        (
            F.col("event_id").isNull() | ~F.col("event_id").rlike(UUID_PATTERN),
            "event_id: missing or not a UUID",
        ),
        (F.coalesce(F.length("event_type"), F.lit(0)) == 0, "event_type: missing"),
        (F.col("ts").isNull(), "ts: missing or not a timestamp"),
        (F.col("user_id").isNull() & F.col("anonymous_id").isNull(), "user_id or anonymous_id is required"),
        (F.json_object_keys("properties").isNull(), "properties: not a JSON object"),
        (
            F.col("context").isNotNull() & F.json_object_keys("context").isNull(),
            "context: not a JSON object",
        ),
        (
            F.col("ts").isNotNull()
            & _source_hour(F.col("source_file")).isNotNull()
            & (epoch_hour(F.col("ts")) != _source_hour(F.col("source_file"))),
            "ts: outside the hour of the raw partition it was read from",
        ),
    ]
    reasons = F.array_compact(F.array(*[F.when(test, F.lit(text)) for test, text in checks]))
    return conformed.withColumn("reason", F.when(F.size(reasons) > 0, F.array_join(reasons, "; ")))


def errors(checked: DataFrame) -> DataFrame:
    """Invalid rows, partitioned by the raw hour they came from (so rerunning that hour replaces them)."""
    hour = F.coalesce(
        F.timestamp_seconds(_source_hour(F.col("source_file")) * 3600),
        F.col("ts"),
        F.timestamp_seconds(F.lit(0)),
    )
    return checked.where(F.col("reason").isNotNull()).select(
        *[c for c in ERROR_COLUMNS if c not in HOUR_PARTITION], *hour_partition(hour)
    )


def _copy_order() -> list[Column]:
    """Which copy of an event_id wins: earliest hour, then earliest receipt and stream position."""
    row_hash = F.xxhash64(*[F.col(c) for c in RAW_COLUMNS])
    return [
        F.col("_hour").asc(),
        F.col("received_at").asc_nulls_last(),
        F.col(ARRIVAL_TS).asc_nulls_last(),
        F.col(SHARD_ID).asc_nulls_last(),
        F.length(SEQUENCE_NUMBER).asc_nulls_last(),  # Kinesis sequence numbers exceed decimal(38)
        F.col(SEQUENCE_NUMBER).asc_nulls_last(),
        row_hash.asc(),
    ]


def deduplicate(valid: DataFrame, prior: DataFrame, lookback_hours: int) -> DataFrame:
    """Valid rows minus copies of an event_id already kept in the same hour or ``lookback_hours`` before.

    ``prior`` holds clean rows (event_id, ts) of the hours before the first processed one. Each row
    folds over the copies ordered before it: a copy is kept when no kept copy lies within the
    lookback, the rule that one-hour-at-a-time processing applies.
    """
    candidates = valid.withColumn("_hour", epoch_hour(F.col("ts"))).withColumn("_prior", F.lit(False))
    earlier = prior.select("event_id", epoch_hour(F.col("ts")).alias("_hour"), F.lit(True).alias("_prior"))
    both = candidates.unionByName(earlier, allowMissingColumns=True)
    ordered = Window.partitionBy("event_id").orderBy(*_copy_order())
    history = F.collect_list(F.struct("_hour", "_prior")).over(
        ordered.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    start = F.struct(F.lit(None).cast("long").alias("last"), F.lit(False).alias("kept"))

    def step(state: Column, copy: Column) -> Column:
        kept = copy["_prior"] | state["last"].isNull() | (copy["_hour"] - state["last"] > lookback_hours)
        return F.struct(
            F.when(kept, copy["_hour"]).otherwise(state["last"]).alias("last"), kept.alias("kept")
        )

    folded = both.withColumn("_kept", F.aggregate(history, start, step)["kept"])
    return folded.where(~F.col("_prior") & F.col("_kept")).drop("_hour", "_prior", "_kept")


def clean_events(
    raw: DataFrame, prior: DataFrame, lookback_hours: int = DEFAULT_LOOKBACK_HOURS
) -> tuple[DataFrame, DataFrame]:
    """(clean rows, error rows) of the raw rows of the processed hours."""
    checked = with_reasons(conform(raw))
    valid = checked.where(F.col("reason").isNull())
    kept = deduplicate(valid, prior, lookback_hours)
    clean = kept.select(
        *[c for c in CLEAN_COLUMNS if c not in HOUR_PARTITION and c != "user_key"],
        F.coalesce("user_id", "anonymous_id").alias("user_key"),
        *hour_partition(F.col("ts")),
    ).select(*CLEAN_COLUMNS)
    return clean, errors(checked)
