"""The `views` consumer group: the metric catalogue, compiled, applied to Redis effectively once.

Windows are by event time. The watermark is per shard: the greatest event time applied on the
shard (capped at arrival + ``speed_max_future_skew_s``) minus ``allowed_lateness_s``. It advances
record by record in shard order, so what is late does not depend on how records were batched. A
tumbling window is closed once its end is at or before the watermark; an event for a closed window
is not applied to it (it still counts in larger, open windows and in lifetime series) and is
counted in ``late_events``: the batch layer, which reads the lake, corrects that hour.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lambdalake.metrics.catalogue import Catalogue, load_catalogue
from lambdalake.settings import Settings
from speed_layer.apply import EffectivelyOnceProcessor
from speed_layer.compiler import CompiledViews, ViewOps, compile_views
from speed_layer.keys import SpeedKeys
from speed_layer.metrics import SpeedMetrics
from speed_layer.records import ParsedRecord


class ViewsBatch:
    def __init__(self, views: CompiledViews) -> None:
        self.views = views
        self.collected = ViewOps()

    def add(self, parsed: ParsedRecord, watermark: float) -> Iterable[str]:
        event = parsed.event
        assert event is not None  # only valid records reach a builder
        return self.collected.add_event(
            self.views.for_type(event.get("event_type")), event, parsed.ts, watermark
        )

    def drain(self) -> tuple[list[list[Any]], None]:
        ops = self.collected.payload()
        self.collected = ViewOps()
        return ops, None


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

    @classmethod
    def shared_state(cls, settings: Settings, redis: Any, metrics: SpeedMetrics) -> CompiledViews:
        return compiled_views(settings)

    def builder(self, fresh: list[ParsedRecord]) -> ViewsBatch:
        return ViewsBatch(self.views)
