"""Lake maintenance: compaction of small raw files, and retention of the raw and error zones.

Compaction (``batch.compaction``) merges the small files of the closed raw hours of the last
``batch_compaction_lookback_days``. Retention deletes hour partitions older than
``batch_raw_retention_days``, oldest first, with their manifests; clean and curated zones keep their
history (they are small and the warehouse loads from them). Both work from the listing, so they are
idempotent and resumable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from batch.compaction import CompactionReport, compact_hours
from batch.watermark import hour_start
from ingest.delivery.layout import parse_hour_partition
from lambdalake import lake
from lambdalake.settings import Settings
from spark_jobs.schemas import ERRORS_CLEAN, RAW_EVENTS

log = logging.getLogger(__name__)
ZONES = (RAW_EVENTS, "errors")


def expired_files(settings: Settings, now: datetime) -> list[str]:
    """Files of hour partitions that ended before the retention cut-off."""
    cutoff = now - timedelta(days=settings.batch_raw_retention_days)
    out = []
    for zone in ZONES:
        for uri, _size in lake.list_files(lake.join(settings.lake_uri, zone) + "/", settings):
            hour = parse_hour_partition(uri)
            if hour is not None and hour + timedelta(hours=1) <= cutoff:
                out.append(uri)
    return out


def apply_retention(settings: Settings, now: datetime) -> int:
    """Delete expired raw/error files (a manifest last, so a half-done hour still reads as closed)."""
    files = sorted(
        expired_files(settings, now), key=lambda uri: (uri.rsplit("/", 1)[0], uri.endswith(".json"))
    )
    for uri in files:
        lake.delete(uri, settings)
    log.info(
        "retention: deleted %d files older than %d days (%s, %s)",
        len(files),
        settings.batch_raw_retention_days,
        RAW_EVENTS,
        ERRORS_CLEAN,
    )
    return len(files)


def compact_recent(
    settings: Settings, now: datetime, progress: Callable[[str], None] = lambda _msg: None
) -> CompactionReport:
    """Compact the closed raw hours of the ``batch_compaction_lookback_days`` before ``now``."""
    end = hour_start(now)
    start = end - timedelta(days=settings.batch_compaction_lookback_days)
    report = compact_hours(settings, start, end, now, progress)
    log.info(
        "compaction %s .. %s: %d hours compacted, %d up to date, %d skipped, %d old files purged",
        f"{start:%Y-%m-%dT%H}",
        f"{end:%Y-%m-%dT%H}",
        report.count("compacted"),
        report.count("current"),
        report.count("skipped"),
        report.purged,
    )
    return report
