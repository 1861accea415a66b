"""Sessions from clean events: a user's session ends after 30 minutes without an event.

Client session ids are unreliable (tabs, apps, clocks), so the batch layer derives sessions from
event time per user. A session belongs to the day it starts; the job feeds the day's events plus
a margin on both sides, so sessions crossing midnight are whole.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from spark_jobs.schemas import DAY_PARTITION, SESSION_COLUMNS

SESSION_GAP_S = 30 * 60


def sessionize(events: DataFrame, gap_s: int = SESSION_GAP_S) -> DataFrame:
    """One row per session (``SESSION_COLUMNS``)."""
    by_user = Window.partitionBy("user_key").orderBy("ts", "event_id")
    seconds = F.unix_micros("ts") / F.lit(1e6)
    previous = F.lag(seconds).over(by_user)
    starts = events.withColumn("_new", (previous.isNull() | (seconds - previous > gap_s)).cast("int"))
    numbered = starts.withColumn(
        "_session", F.sum("_new").over(by_user.rowsBetween(Window.unboundedPreceding, Window.currentRow))
    )
    is_page_view = F.col("event_type") == "page_view"
    is_purchase = F.col("event_type") == "purchase"
    sessions = numbered.groupBy("user_key", "_session").agg(
        F.min("ts").alias("session_start"),
        F.max("ts").alias("session_end"),
        F.count("*").alias("events"),
        F.count(F.when(is_page_view, 1)).alias("page_views"),
        F.count_distinct(F.when(is_page_view, F.get_json_object("properties", "$.path"))).alias(
            "unique_pages"
        ),
        F.count(F.when(is_purchase, 1)).alias("orders"),
        F.sum(F.when(is_purchase, F.get_json_object("properties", "$.amount").try_cast("double"))).alias(
            "revenue"
        ),
    )
    return sessions.select(
        F.sha2(
            F.concat_ws("|", "user_key", F.date_format("session_start", "yyyy-MM-dd'T'HH:mm:ss.SSSSSS")), 256
        )
        .substr(1, 32)
        .alias("session_key"),
        "user_key",
        "session_start",
        "session_end",
        ((F.unix_micros("session_end") - F.unix_micros("session_start")) / F.lit(1e6)).alias("duration_s"),
        "events",
        "page_views",
        "unique_pages",
        (F.col("orders") > 0).alias("converted"),
        "orders",
        F.coalesce("revenue", F.lit(0.0)).alias("revenue"),
        *[
            F.date_format("session_start", fmt).alias(n)
            for n, fmt in zip(DAY_PARTITION, ("yyyy", "MM", "dd"), strict=True)
        ],
    ).select(*SESSION_COLUMNS)
