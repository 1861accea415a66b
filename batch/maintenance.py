"""Lake maintenance: retention of the raw and error zones.

Hour partitions older than ``batch_raw_retention_days`` are deleted, oldest first, with their
manifests; clean and curated zones keep their history (they are small and the warehouse loads from
them). A partition is found from the listing, so the job is idempotent and resumable.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

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
