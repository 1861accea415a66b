"""The garbage collector's settings for long-running, allocation-heavy processes (stream consumers).

A speed-layer worker allocates a few dozen short-lived containers per event (parsed events, the
batch's dictionaries and sets, the script payload). With CPython's defaults (a young collection every
700 allocations) that triggers hundreds of collections per second, and the older generations' ones
scan every object the process keeps for its lifetime — botocore's service models alone are tens of
thousands. Measured in `lambdalake bench speed` (docs/benchmarks.md), four alternating runs of one
worker over 20,000 events: 0.38–0.51 s of collections with the defaults, 0.17–0.19 s after
``settle`` (its own full collection included); Python CPU per event 98–115 µs → 87–97 µs.
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
