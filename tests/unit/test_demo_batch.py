"""The demo's batch range: the sample's hours, and the hours earlier demos left unbatched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lambdalake.cli.demo import CATCH_UP_HOURS, batch_start

H = timedelta(hours=1)
NOW = datetime(2026, 12, 3, 19, 14, tzinfo=UTC)
FIRST = datetime(2026, 12, 3, 16, tzinfo=UTC)  # the sample's first hour


def test_a_first_demo_batches_the_sample_hours() -> None:
    assert batch_start(FIRST, None, NOW) == FIRST


def test_hours_since_the_watermark_are_batched_too() -> None:
    # a demo this morning published up to 06; delivery closed 07-15 since, and nothing batched them
    assert batch_start(FIRST, datetime(2026, 12, 3, 6, tzinfo=UTC), NOW) == datetime(
        2026, 12, 3, 7, tzinfo=UTC
    )


def test_a_watermark_at_or_past_the_sample_changes_nothing() -> None:
    assert batch_start(FIRST, FIRST - H, NOW) == FIRST
    assert batch_start(FIRST, FIRST + 2 * H, NOW) == FIRST


def test_catching_up_goes_back_a_week_at_most() -> None:
    months_ago = datetime(2026, 8, 1, tzinfo=UTC)
    assert batch_start(FIRST, months_ago, NOW) == datetime(2026, 12, 3, 19, tzinfo=UTC) - CATCH_UP_HOURS * H
