"""Reads and writes of the batch layer, by lake URI and interval (``file://`` here, ``s3://`` on EMR).

Outputs replace whole partitions: every partition of the processed interval is deleted, then the
interval's rows are written, one file per partition with rows in a fixed order, so a rerun
leaves identical data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lambdalake.lake import join
from spark_jobs.schemas import RAW_COLUMNS

HOUR = timedelta(hours=1)


def hours(start: datetime, end: datetime) -> list[datetime]:
    """The hour starts in [start, end), UTC."""
    first = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    out = []
    while first < end:
        out.append(first)
        first += HOUR
    return out


def hour_path(root: str, hour: datetime) -> str:
    return join(root, f"year={hour:%Y}/month={hour:%m}/day={hour:%d}/hour={hour:%H}")


def day_path(root: str, day: datetime) -> str:
    return join(root, f"year={day:%Y}/month={day:%m}/day={day:%d}")


def _filesystem(spark: SparkSession, uri: str) -> tuple[Any, Any]:
    jvm = spark.sparkContext._jvm  # Hadoop's FileSystem: the one client of file://, s3:// and s3a://
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), path


def existing(spark: SparkSession, uris: Iterable[str]) -> list[str]:
    """The URIs that exist, listing each parent once (one LIST per day, not one HEAD per hour)."""
    wanted = list(uris)
    by_parent: dict[str, set[str]] = {}
    for uri in wanted:
        by_parent.setdefault(uri.rsplit("/", 1)[0], set()).add(uri.rsplit("/", 1)[1])
    found: set[str] = set()
    for parent, names in by_parent.items():
        fs, path = _filesystem(spark, parent)
        if not fs.exists(path):
            continue
        present = {status.getPath().getName() for status in fs.listStatus(path)}
        found |= {f"{parent}/{name}" for name in names & present}
    return [uri for uri in wanted if uri in found]


def delete(spark: SparkSession, uris: Iterable[str]) -> None:
    for uri in existing(spark, uris):
        fs, path = _filesystem(spark, uri)
        fs.delete(path, True)


def read_hours(spark: SparkSession, root: str, interval: Sequence[datetime]) -> DataFrame | None:
    """Rows of the interval's hour partitions under ``root``, with ``source_file``; None if none."""
    paths = existing(spark, [hour_path(root, h) for h in interval])
    if not paths:
        return None
    frame = spark.read.parquet(*paths)
    return frame.select("*", F.col("_metadata.file_path").alias("source_file"))


def read_raw(spark: SparkSession, lake_uri: str, interval: Sequence[datetime]) -> DataFrame:
    """Raw events of the hours (an empty frame of the raw schema when none landed)."""
    from spark_jobs.schemas import RAW_EVENTS

    frame = read_hours(spark, join(lake_uri, RAW_EVENTS), interval)
    if frame is not None:
        return frame
    schema = ", ".join(f"{name} {kind.simpleString()}" for name, kind in RAW_COLUMNS.items())
    return spark.createDataFrame([], f"{schema}, source_file string")


def write_partitions(
    frame: DataFrame,
    uri: str,
    partition_by: Sequence[str],
    replaced: Iterable[str],
    order_by: Sequence[str],
) -> None:
    """Replace the ``replaced`` partition URIs by the frame's rows: one file per partition, sorted.

    Dynamic partition overwrite stages the job's files under a directory of its own
    (``.spark-staging-<job>``) and moves each written partition into place, so jobs writing other
    partitions of the same table at the same time (concurrent DAG runs of different hours) do not
    share, and delete, each other's ``_temporary`` directory. Partitions of ``replaced`` the frame
    has no rows for are deleted first (an hour that became empty)."""
    spark = frame.sparkSession
    delete(spark, replaced)
    (
        frame.repartition(*partition_by)
        .sortWithinPartitions(*partition_by, *order_by)
        .write.mode("overwrite")
        .option("partitionOverwriteMode", "dynamic")  # never the whole table: only what is written
        .partitionBy(*partition_by)
        .parquet(uri)
    )
