"""Every Redis key pattern and TTL of the speed layer, in one place.

Views are one key per (metric, window, bucket, key): a string for count/sum/min/max, a
HyperLogLog for count_distinct, a sorted set for top_k/last_n/co_occurrence, a hash for last.
One key per series keeps TTLs per series (a bucket expires ``retention`` after it ends; a lifetime
series ``retention`` after its last update) and spreads well over a Redis Cluster later.

::

    {p}:v:{metric}:{window}:{bucket}[:{by1}:{by2}...]      tumbling bucket (bucket = start, epoch s)
    {p}:v:{metric}:lifetime[:{by1}...]                     lifetime series
    {p}:v:{metric}:stagger_{size}:{start}:{by1}[:{by2}...]  stagger window (start: epoch s, to the µs)
    {p}:stagger:{metric}:stagger_{size}:{by1}[:{by2}...]   sorted set: the key's window starts (score µs)
    {p}:v:{metric}:{window...}[:{by...}]:{item}            co_occurrence: one sorted set per item
    {p}:scope:{metric}:{window...}[:{by...}]:{scope}       co_occurrence: items seen in one scope
    {p}:{group}:shard:{stream}:{shard_id}                  hash: hwm (sequence), maxts (event time)
    {p}:{group}:seen:{hour}                                set of event_ids by event-time hour
    {p}:{group}:stats                                      hash: applied, duplicates, late_events...
    {p}:alerts / {p}:orders                                streams written by the alerts / enrich groups
    {p}:alerts:user:{user} / {p}:traits:{user}             keyed state of alerts / enrich
    {p}:alerts:webhook                                     hash: the webhook sender's cursor
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lambdalake.metrics.catalogue import STAGGER_PREFIX, Metric, parse_duration
from lambdalake.metrics.evaluate import MICROS

LIFETIME = "lifetime"
SEEN_BUCKET_S = 3600  # dedupe sets are split by event-time hour: a resend carries the same `ts`
SCOPE_TTL_S = 2 * 86400  # co_occurrence: how long a scope (session) remembers its items
ALERT_STATE_TTL_S = 90 * 86400  # a user's alert state (averages, recent purchases) after their last event
# A window with no retention in the metric or in settings keeps this many of its own sizes, and
# at least two days, so a sliding span over it is always answerable.
FALLBACK_RETENTION_BUCKETS = 100
FALLBACK_RETENTION_MIN_S = 2 * 86400


def retention_s(metric: Metric, window: str, defaults: Mapping[str, str]) -> int:
    """Seconds a window's data is kept: the metric's own retention, else the settings default.

    A stagger window (``stagger_1m``) falls back to the default of its size (``1m``)."""
    size_label = window.removeprefix(STAGGER_PREFIX)
    text = metric.retention.get(window) or defaults.get(window) or defaults.get(size_label)
    if text:
        return parse_duration(text)
    size = 0 if window == LIFETIME else parse_duration(size_label)
    return max(FALLBACK_RETENTION_MIN_S, FALLBACK_RETENTION_BUCKETS * size)


def format_start(start_us: int) -> str:
    """A stagger window's start in its key: epoch seconds, with the fraction only when there is one."""
    seconds, fraction = divmod(start_us, MICROS)
    return f"{seconds}.{fraction:06d}".rstrip("0") if fraction else str(seconds)


class SpeedKeys:
    """Builds every key from one prefix (setting ``speed_key_prefix``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    # --- views ------------------------------------------------------------------------------
    def view_base(self, metric: str, window: str) -> str:
        """Everything before the bucket: the compiler appends ``:{bucket}`` and the key parts."""
        return f"{self.prefix}:v:{metric}:{window}"

    def view(self, metric: str, window: str, bucket: int | None, key: Sequence[str] = ()) -> str:
        head = self.view_base(metric, window)
        if bucket is not None:
            head = f"{head}:{bucket}"
        return ":".join((head, *key)) if key else head

    def scope_base(self, metric: str, window: str) -> str:
        return f"{self.prefix}:scope:{metric}:{window}"

    def stagger_starts_base(self, metric: str, window: str) -> str:
        """Everything before the key of the sorted set of a key's stagger window starts."""
        return f"{self.prefix}:stagger:{metric}:{window}"

    def stagger_starts(self, metric: str, window: str, key: Sequence[str]) -> str:
        return ":".join((self.stagger_starts_base(metric, window), *key))

    # --- effectively-once state, per consumer group ----------------------------------------------
    def shard_state(self, group: str, stream: str, shard_id: str) -> str:
        return f"{self.prefix}:{group}:shard:{stream}:{shard_id}"

    def seen(self, group: str, hour: int) -> str:
        return f"{self.prefix}:{group}:seen:{hour}"

    def stats(self, group: str) -> str:
        return f"{self.prefix}:{group}:stats"

    # --- alerts and enrichment ---------------------------------------------------------------
    @property
    def alerts(self) -> str:
        return f"{self.prefix}:alerts"

    def alert_user(self, user: str) -> str:
        return f"{self.prefix}:alerts:user:{user}"

    @property
    def webhook_cursor(self) -> str:
        return f"{self.prefix}:alerts:webhook"

    @property
    def orders(self) -> str:
        return f"{self.prefix}:orders"

    def traits(self, user: str) -> str:
        return f"{self.prefix}:traits:{user}"
