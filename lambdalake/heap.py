"""The garbage collector's settings for long-running, allocation-heavy processes (stream consumers).

A speed-layer worker allocates a few dozen short-lived containers per event (parsed events, the
batch's dictionaries and sets, the script payload). With CPython's defaults (a young collection every
700 allocations) that triggers hundreds of collections per second, and the older generations' ones
scan every object the process keeps for its lifetime — botocore's service models alone are tens of
thousands. Measured in `lambdalake bench speed` (docs/benchmarks.md): 0.52 s of collections in a
2.7 s run, and one worker's Python CPU per event 110 µs with the defaults, 54 µs after ``settle``.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000  # allocations between collections of the young generation (default 700)


def settle() -> None:
    """Call once the process has built what it keeps (clients, models, the compiled catalogue),
    before its threads start: what exists now moves out of the collector's sight for good
    (``gc.freeze``), and the young generation is collected every ``YOUNG_THRESHOLD`` allocations."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
