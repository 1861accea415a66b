"""Speed views of published hours expire: once batch holds an hour exactly, Redis need not keep it long.

A bucket key ``{p}:v:{metric}:{window}:{bucket}[:...]`` is given a TTL of
``serving_speed_retention_after_publish_s`` counted from when the last of the hours it covers was
published, when every hour it covers is published (and none is being reprocessed). Never touched:
keys of hours not published (or being reprocessed), lifetime series, metrics the batch layer does
not recompute (``batch: false``) or windows no batch table holds, and keys whose own TTL is
already shorter (the check and the PEXPIRE are one Lua call per key).

One SCAN pass over the view keys per run (``serving_maintenance_interval_s``): cost grows with the
number of view keys, not with requests.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from lambdalake.metrics.catalogue import Catalogue, parse_duration
from lambdalake.settings import Settings
from serving.batch_view import BatchView, hours_of
from speed_layer.keys import LIFETIME

log = logging.getLogger(__name__)

# PEXPIRE only if the key has no TTL or a longer one; 1 when set, 0 otherwise (missing key too).
EXPIRE_NOT_SHORTER = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then return 0 end
if ttl == -1 or ttl > tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class ExpiryResult:
    keys_seen: int
    keys_expired: int


def batch_windows(catalogue: Catalogue) -> dict[str, set[str]]:
    """Windows the batch layer holds, per metric it recomputes (hourly and daily tables)."""
    held: dict[str, set[str]] = {}
    for metric in catalogue.aggregated():
        if not metric.batch or metric.is_lifetime:
            continue
        windows = set()
        for window in metric.windows:
            size = parse_duration(window)
            if (size <= 3600 and 3600 % size == 0) or (3600 < size <= 86400 and 86400 % size == 0):
                windows.add(window)
        if windows:
            held[metric.name] = windows
    return held


def parse_view_key(prefix: str, key: str) -> tuple[str, str, int] | None:
    """(metric, window, bucket start) of a tumbling view key; None for anything else."""
    head = f"{prefix}:v:"
    if not key.startswith(head):
        return None
    parts = key[len(head) :].split(":")
    if len(parts) < 3 or parts[1] == LIFETIME:
        return None
    try:
        return parts[0], parts[1], int(parts[2])
    except ValueError:
        return None


def expiry_ms(
    published: dict[int, float | None], bucket: int, size: int, retention_s: int, now: float
) -> int | None:
    """Milliseconds left for a bucket covering only published hours; None if one is not published."""
    latest = 0.0
    for hour in hours_of(bucket, bucket + size):
        if hour not in published:
            return None
        latest = max(latest, published[hour] or now)
    return max(1, int((latest + retention_s - now) * 1000))


def expire_published(
    settings: Settings,
    redis: Any,
    batch: BatchView,
    catalogue: Catalogue,
    now: float | None = None,
    scan_count: int = 1000,
) -> ExpiryResult:
    """Set the retention TTL on every speed view key of published hours (see the module docstring)."""
    now = time.time() if now is None else now
    published = {p.hour: p.published_at for p in batch.published(0, int(now) + 3600)}
    if not published:
        return ExpiryResult(0, 0)
    held = batch_windows(catalogue)
    prefix = settings.speed_key_prefix
    retention = settings.serving_speed_retention_after_publish_s
    script = redis.register_script(EXPIRE_NOT_SHORTER)
    seen = expired = 0
    for page in _pages(redis, f"{prefix}:v:*", scan_count):
        pipe = redis.pipeline(transaction=False)
        queued = 0
        for raw in page:
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            seen += 1
            parsed = parse_view_key(prefix, key)
            if parsed is None or parsed[1] not in held.get(parsed[0], ()):
                continue
            ms = expiry_ms(published, parsed[2], parse_duration(parsed[1]), retention, now)
            if ms is None:
                continue
            script(keys=[key], args=[ms], client=pipe)
            queued += 1
        if queued:
            expired += sum(int(r) for r in pipe.execute())
    if expired:
        log.info("retention: %d speed view keys of published hours set to expire", expired)
    return ExpiryResult(seen, expired)


def _pages(redis: Any, match: str, count: int) -> Any:
    cursor = 0
    while True:
        cursor, keys = redis.scan(cursor, match=match, count=count)
        if keys:
            yield keys
        if int(cursor) == 0:
            return
