"""The demo: its batch range (the sample's hours, and the hours earlier demos left unbatched) and how
it reports the speed layer against batch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lambdalake.cli.demo import CATCH_UP_HOURS, _explain_late, _signed, batch_start
from lambdalake.settings import Settings

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


def test_the_speed_vs_batch_difference_carries_the_sign_of_speed_minus_batch() -> None:
    # the drift report's rel_diff is a magnitude; the demo's table says which side is higher
    assert _signed(0.0103, 1443, 1458) == "-1.03%"  # speed dropped late page views
    assert _signed(0.0075, 403, 400) == "+0.75%"  # a HyperLogLog estimate above the exact count
    assert _signed(0.0, 128, 128) == "+0.00%"
    assert _signed(None, 3, 0) == "-"  # no relative difference against a batch of zero


def test_a_sample_mostly_late_for_the_speed_layer_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    _explain_late(settings, 6_104, 19_916)  # a rerun: its older hours were closed by the last demo
    out = capsys.readouterr().out
    assert "6,104 of the sample's events came after the speed layer had closed their hour" in out
    assert "earlier demo" in out
    _explain_late(settings, 12, 19_916)  # a first run: only the generator's own late events
    out = capsys.readouterr().out
    assert "12 of the sample's events" in out
    assert "earlier demo" not in out
