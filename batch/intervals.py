"""Which hour or day a DAG run covers: its data interval, else the one asked for, else the last one.

A scheduled or backfilled run has a data interval. A run triggered by hand (the UI's Trigger
button, ``airflow dags trigger``, the REST API) in Airflow 3 may have none: it then covers the
hour (day) given in its ``hour`` (``day``) parameter, or by default the last complete hour (day)
before it was triggered.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from batch.watermark import HOUR, hour_start

DAY = timedelta(days=1)


def parse_moment(text: str) -> datetime:
    """``2026-01-01T10``, ``2026-01-01T10:00``, ``2026-01-01`` or a full ISO time; naive is UTC."""
    text = text.strip().replace("Z", "+00:00")
    if len(text) == 13 and text[10] == "T":  # 2026-01-01T10
        text += ":00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"not an ISO date or hour: {text!r} (e.g. 2026-01-01T10)") from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def run_hour(interval_start: datetime | None, requested: str | None, run_after: datetime | None) -> datetime:
    """The hour a run of the hourly DAG processes."""
    if requested:
        return hour_start(parse_moment(requested))
    if interval_start is not None:
        return hour_start(interval_start)
    if run_after is None:
        raise ValueError("a run with neither a data interval, an `hour` parameter nor a run_after time")
    return hour_start(run_after) - HOUR


def run_day(interval_start: datetime | None, requested: str | None, run_after: datetime | None) -> datetime:
    """The UTC day (its midnight) a run of the daily DAG processes."""
    if requested:
        return hour_start(parse_moment(requested)).replace(hour=0)
    if interval_start is not None:
        return hour_start(interval_start).replace(hour=0)
    if run_after is None:
        raise ValueError("a run with neither a data interval, a `day` parameter nor a run_after time")
    return hour_start(run_after).replace(hour=0) - DAY
