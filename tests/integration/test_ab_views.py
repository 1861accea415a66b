"""scripts/ab_views.py, the interleaved A/B of the views processor, runs and compares Redis states."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_ab_views_against_head_reports_both_sides_and_an_equal_state() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/ab_views.py", "--against", "HEAD", "--events", "1500", "--passes", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "A (HEAD): Python" in done.stdout
    assert "B (working tree): Python" in done.stdout
    (state,) = [line for line in done.stdout.splitlines() if line.startswith("Redis state:")]
    keys = int(state.split()[2])
    assert keys > 1000  # the views of 1,500 events, not an empty Redis
    assert state.endswith("0 differ []")
