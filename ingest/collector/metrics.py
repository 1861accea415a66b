"""Prometheus metrics of the collector.

With several uvicorn workers each process counts on its own; ``lambdalake collector`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the workers start, and ``/metrics``
then sums every worker's files (prometheus_client's multiprocess mode), whichever worker answers.
Without that variable (one process, e.g. an app built in a test) the default registry is used.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import values as prometheus_values
from prometheus_client.multiprocess import MultiProcessCollector

from ingest.collector import PROMETHEUS_MULTIPROC_ENV

# True only if the variable was set before prometheus_client was imported (it decides then).
MULTIPROCESS = bool(os.environ.get(PROMETHEUS_MULTIPROC_ENV)) and (
    prometheus_values.ValueClass is not prometheus_values.MutexValue
)
PREFIX = "lambdalake_collector"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter(f"{PREFIX}_requests", "HTTP requests by route and status.", ["route", "status"])
EVENTS = Counter(
    f"{PREFIX}_events",
    "Events by outcome (accepted/rejected) and, for rejected ones, the class of their first reason.",
    ["outcome", "reason_class"],
)
LATENCY = Histogram(
    f"{PREFIX}_request_seconds", "Request latency by route.", ["route"], buckets=LATENCY_BUCKETS
)
STREAM_ERRORS = Counter(
    f"{PREFIX}_stream_errors", "Failed writes to the stream, by stream and kind.", ["stream", "kind"]
)

# Reason text (from the contract and the Segment mapping) -> a small, stable label set.
_REASON_CLASSES = (
    ("must be a JSON object", "not_object"),
    ("is a required property", "missing_field"),
    ("user_id or anonymous_id", "missing_identity"),
    ("unknown field", "unknown_field"),
    ("is not of type", "wrong_type"),
    ("is not a valid", "bad_format"),
    ("strict mode", "type_not_allowed"),
    ("has no version", "unknown_schema_version"),
    ("too large", "too_large"),
)
_SEGMENT_PREFIXES = ("type:", "messageId:", "event: a track call")


def reason_class(reason: str) -> str:
    """A low-cardinality label for a rejection reason."""
    if reason.startswith(_SEGMENT_PREFIXES):
        return "segment_message"
    for needle, label in _REASON_CLASSES:
        if needle in reason:
            return label
    return "constraint"


def render() -> tuple[bytes, str]:
    """The exposition text (every worker's, in multiprocess mode) and its content type."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
