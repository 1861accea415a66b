"""Which hour or day a DAG run covers, with and without a data interval (manual runs in Airflow 3)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from batch.intervals import parse_moment, run_day, run_hour

T = datetime(2026, 3, 4, 10, 37, 12, tzinfo=UTC)


def test_a_scheduled_run_covers_its_data_interval() -> None:
    assert run_hour(datetime(2026, 3, 4, 7, tzinfo=UTC), None, T) == datetime(2026, 3, 4, 7, tzinfo=UTC)
    assert run_day(datetime(2026, 3, 2, tzinfo=UTC), None, T) == datetime(2026, 3, 2, tzinfo=UTC)


def test_a_manual_run_without_interval_covers_the_last_complete_hour_or_day() -> None:
    assert run_hour(None, None, T) == datetime(2026, 3, 4, 9, tzinfo=UTC)
    assert run_day(None, None, T) == datetime(2026, 3, 3, tzinfo=UTC)


def test_the_parameter_wins_and_accepts_short_forms() -> None:
    interval = datetime(2026, 3, 4, 7, tzinfo=UTC)
    assert run_hour(interval, "2026-01-01T10", T) == datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert run_hour(None, "2026-01-01T10:45:00+02:00", T) == datetime(2026, 1, 1, 8, tzinfo=UTC)
    assert run_day(None, "2026-01-05", T) == datetime(2026, 1, 5, tzinfo=UTC)
    assert parse_moment("2026-01-01T10:00:00Z") == datetime(2026, 1, 1, 10, tzinfo=UTC)


def test_nonsense_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not an ISO date or hour"):
        run_hour(None, "yesterday", T)
    with pytest.raises(ValueError, match="neither a data interval"):
        run_hour(None, None, None)
