"""The collector: HTTP in (native API and the Segment tracking API), the stream out.

``app`` is the HTTP layer, ``pipeline`` turns request bodies into stream and DLQ records,
``segment`` maps Segment messages onto the event contract, ``pii`` masks, ``auth`` checks write
keys, ``metrics`` counts, ``buses`` picks the stream bus, ``process`` runs a collector as a child
process (benchmarks, tests, demos).
"""

# prometheus_client's multiprocess directory variable. Here, not in ``metrics``, so the CLI can set
# it before anything imports prometheus_client (which reads it at import time).
PROMETHEUS_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
