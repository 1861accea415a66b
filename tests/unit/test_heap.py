"""`heap.settle`: what a consumer process has built stays out of the collector's scans."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import gc, json
from lambdalake import heap
kept = [[i] for i in range(10_000)]  # what a process keeps: clients, models, the catalogue
before = gc.get_freeze_count()
heap.settle()
gc.collect()  # a full collection no longer scans what settle froze
print(json.dumps({"before": before, "frozen": gc.get_freeze_count(),
                  "threshold": gc.get_threshold(), "young": heap.YOUNG_THRESHOLD}))
"""


def test_settle_freezes_what_exists_and_collects_the_young_generation_less_often() -> None:
    # in a child process: freezing the test runner's own heap would outlive the test
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    found = json.loads(out.stdout)
    assert found["before"] == 0
    assert found["frozen"] >= 10_000  # the kept objects, and the interpreter's own
    assert found["threshold"][0] == found["young"] == 50_000
