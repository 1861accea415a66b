"""The `views` consumer group: the metric catalogue, compiled, applied to Redis effectively once.

Windows are by event time. The watermark is per shard: the greatest event time applied on the
shard (capped at arrival + ``speed_max_future_skew_s``) minus ``allowed_lateness_s``. It advances
record by record in shard order, so what is late does not depend on how records were batched. A
tumbling window is closed once its end is at or before the watermark; an event for a closed window
is not applied to it (it still counts in larger, open windows and in lifetime series) and is
counted in ``late_events``: the batch layer, which reads the lake, corrects that hour.

Stagger windows are opened per key by the key's events (``evaluate.stagger_window``): the starts
each key has opened live in Redis (a sorted set per key), are read once per batch for the keys the
batch touches, carried in memory from chunk to chunk, and the starts a chunk opens are written by
the chunk's own script call, fenced by the shard's high-water mark like every other update. A
stagger key always holds the partition key (catalogue rule), so one shard, and one writer, owns it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any

from lambdalake.metrics.catalogue import Catalogue, load_catalogue
from lambdalake.metrics.evaluate import MICROS, micros
from lambdalake.settings import Settings
from speed_layer.apply import EffectivelyOnceProcessor, Lookups
from speed_layer.compiler import CompiledViews, ViewOps, compile_views
from speed_layer.keys import SpeedKeys
from speed_layer.metrics import SpeedMetrics
from speed_layer.records import ParsedRecord

REFRESHED_MAX_KEYS = 500_000  # sliding keys remembered per processor (≈60 MB at most)


class ViewsBatch:
    def __init__(self, views: CompiledViews, refreshed: dict[str, float] | None = None) -> None:
        self.views = views
        self.starts: dict[str, list[int]] = {}  # stagger window starts: loaded, then opened here
        self.refreshed = refreshed  # sliding key -> when its TTL was last refreshed (applied chunks only)
        self.collected = ViewOps(starts=self.starts)

    def merge(self, prefetched: dict[str, list[int]] | None) -> None:
        """Add the starts read for a chunk to those held: a key held already may miss older starts
        (read for a later event of an earlier chunk), and its read may miss this batch's openings
        (sent after it was read), so each key keeps the union. A start is only ever valid: it was
        applied, or opened by this batch."""
        starts = self.starts
        for index, loaded in (prefetched or {}).items():
            held = starts.get(index)
            if held is None:
                starts[index] = loaded
            elif loaded and not set(loaded) <= set(held):
                starts[index] = sorted({*held, *loaded})

    def add(self, parsed: ParsedRecord, watermark: float) -> Collection[str]:
        event = parsed.event
        assert event is not None  # only valid records reach a builder
        late: set[str] = set()
        self.views.sink_for(event.get("event_type"))(self.collected, event, parsed.ts, watermark, late)
        return late

    def drain(self) -> tuple[list[Any], tuple[float, list[str]]]:
        now = time.time()
        ops = self.collected.payload(self.refreshed, now)
        note = (now, self.collected.refreshing)
        self.collected = ViewOps(starts=self.starts)
        return ops, note


def load_starts(
    views: CompiledViews, fresh: list[ParsedRecord], lookups: Lookups
) -> Callable[[list[Any]], dict[str, list[int]]] | None:
    """Queue the reads of the stagger window starts that can take the events, per key they touch;
    return what turns the replies into {sorted-set key: starts (µs)}.

    A window can take an event at ``t`` only if it starts in ``(t - size, t]``, so each key's starts
    after its earliest event in the chunk minus the size are enough (a window opened in the batch
    starts later still, and ``ViewsBatch.merge`` keeps the older ones an earlier chunk read). Sent
    with the chunk's dedupe lookup: one round trip.
    """
    staggered = [(cm, cm.stagger, frozenset(cm.metric.filter.event_type)) for cm in views.metrics]
    staggered = [entry for entry in staggered if entry[1] is not None]
    earliest: dict[str, tuple[int, int]] = {}  # sorted-set key -> (earliest event µs, size µs)
    for parsed in fresh if staggered else ():
        event = parsed.event
        if event is None:
            continue
        for cm, window, types in staggered:
            if window is None or (types and event.get("event_type") not in types):
                continue
            t = micros(parsed.ts)
            for key_parts, _, _ in cm.read(event, parsed.ts):
                index = f"{window.starts_base}:{':'.join(key_parts)}"
                known = earliest.get(index)
                if known is None or t < known[0]:
                    earliest[index] = (t, window.size_s * MICROS)
    if not earliest:
        return None
    for index, (t, size) in earliest.items():
        lookups.add("ZRANGEBYSCORE", index, f"({t - size}", "+inf", "WITHSCORES")

    def starts(replies: list[Any]) -> dict[str, list[int]]:
        out = {}
        for index, found in zip(earliest, replies, strict=True):
            # RESP2: member, score, member, score...; RESP3: [member, score] pairs
            scores = [pair[1] for pair in found] if found and isinstance(found[0], list) else found[1::2]
            out[index] = [int(float(score)) for score in scores]
        return out

    return starts


def compiled_views(settings: Settings, catalogue: Catalogue | None = None) -> CompiledViews:
    """The catalogue (built-ins plus the settings' files) compiled for this deployment's keys."""
    catalogue = catalogue or load_catalogue(settings.metric_catalogues)
    return compile_views(catalogue, SpeedKeys(settings.speed_key_prefix), settings.default_retention)


class ViewsProcessor(EffectivelyOnceProcessor):
    group = "views"

    def __init__(
        self,
        settings: Settings,
        redis: Any,
        metrics: SpeedMetrics,
        stream: str | None = None,
        shared: CompiledViews | None = None,
    ) -> None:
        super().__init__(settings, redis, metrics, stream)
        self.views = shared or compiled_views(settings)
        self.refreshed: dict[str, float] = {}

    @classmethod
    def shared_state(cls, settings: Settings, redis: Any, metrics: SpeedMetrics) -> CompiledViews:
        return compiled_views(settings)

    def prefetch(self, chunk: list[ParsedRecord], lookups: Lookups) -> Callable[[list[Any]], Any] | None:
        return load_starts(self.views, chunk, lookups)

    def builder(self) -> ViewsBatch:
        return ViewsBatch(self.views, self.refreshed)

    def committed(self, note: Any) -> None:
        """A chunk is applied: the sliding TTLs it refreshed need no refresh for a while."""
        now, keys = note
        if len(self.refreshed) + len(keys) > REFRESHED_MAX_KEYS:
            self.refreshed.clear()  # bounded memory: the next chunks refresh again, which is safe
        for key in keys:
            self.refreshed[key] = now

    def initialize(self, shard_id: str, start_position: Any) -> None:
        super().initialize(shard_id, start_position)
        self.refreshed.clear()  # a new lease: the keys may have been written by another worker
