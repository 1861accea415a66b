"""The catalogue compiled into Redis updates: no view is hand-written, each is a catalogue entry.

``compile_views`` turns every aggregated metric into a ``CompiledMetric``: a specialised reader of
events (the same reading as ``lambdalake.metrics.evaluate.contributions``, proved equal by tests,
but without re-interpreting the entry per event) and the list of windows it writes. ``ViewOps``
collects the updates of a whole batch, pre-aggregated per key (500 page views of one minute become
one INCRBY), and serialises them for the one Lua call that applies the batch (``apply.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lambdalake.metrics.catalogue import Catalogue, Metric, is_number, parse_duration
from lambdalake.metrics.evaluate import MICROS, holds, micros, stagger_window
from speed_layer.apply import expire_command
from speed_layer.codegen import EventSink, event_sink, is_simple, mapping_get
from speed_layer.keys import LIFETIME, SCOPE_TTL_S, SpeedKeys, format_start, retention_s

Getter = Callable[[Mapping[str, Any], Any], Any]
Reader = Callable[[Mapping[str, Any], float], list[tuple[tuple[str, ...], Any, float]]]
Sink = Callable[["ViewOps", Mapping[str, Any], float, float, set[str]], None]
MAX_REFRESH_S = 86400  # a sliding TTL is refreshed at most this long (or a tenth of it) apart
MAX_ARGS = 1000  # members per Redis command: Lua's unpack() has a stack limit of ~8000


def _getter(path: str) -> Getter:
    """``field_value`` specialised for one path."""
    if path == "user":
        return lambda event, _item: event.get("user_id") or event.get("anonymous_id")
    head, _, name = path.partition(".")
    if not name:
        return lambda event, _item: event.get(head)
    if head == "item":
        return lambda _event, item: mapping_get(item, name)

    def nested(event: Mapping[str, Any], _item: Any) -> Any:
        return mapping_get(event.get(head), name)

    return nested


def compile_reader(metric: Metric) -> Reader:
    """A function (event, event time) -> contributions [(key, value, weight)], equal to
    ``contributions(metric, event)`` but with every decision about the entry taken once, here."""
    types = frozenset(metric.filter.event_type)
    conditions = [(c, _getter(c.field)) for c in metric.filter.where]
    keys = [_getter(p) for p in metric.by]
    aggregate = metric.aggregate
    path = metric.value_path
    value_of = _getter(path) if path else None
    is_ts = path == "ts"
    numeric_only = aggregate == "sum"
    weight_of = _getter(metric.weight) if metric.weight else None
    explode = _getter(metric.explode) if metric.explode else None

    if explode is None and not conditions and weight_of is None and not numeric_only:
        # the common shape (no explode, no where, no weight): one contribution at most
        def read_simple(event: Mapping[str, Any], ts: float) -> list[tuple[tuple[str, ...], Any, float]]:
            if types and event.get("event_type") not in types:
                return []
            key_values = [get(event, None) for get in keys]
            if None in key_values:
                return []
            key = tuple(v if type(v) is str else str(v) for v in key_values)
            if value_of is None:
                return [(key, 1, 1.0)]
            value = value_of(event, None)
            if value is None:
                return []
            return [(key, ts if is_ts else value, 1.0)]

        return read_simple

    def read(event: Mapping[str, Any], ts: float) -> list[tuple[tuple[str, ...], Any, float]]:
        if types and event.get("event_type") not in types:
            return []
        if explode is None:
            items: list[Any] = [None]
        else:
            array = explode(event, None)
            items = [i for i in array if isinstance(i, Mapping)] if isinstance(array, list) else []
        out = []
        for item in items:
            if conditions and not all(holds(c, get(event, item)) for c, get in conditions):
                continue
            key_values = [get(event, item) for get in keys]
            if None in key_values:
                continue
            key = tuple(str(v) for v in key_values)
            if value_of is None:
                out.append((key, 1, 1.0))
                continue
            value = value_of(event, item)
            if value is None or (numeric_only and not is_number(value)):
                continue
            if is_ts:
                value = ts
            weight = 1.0
            if weight_of is not None:
                raw = weight_of(event, item)
                if not is_number(raw):
                    continue
                weight = float(raw)
            out.append((key, value, weight))
        return out

    return read


@dataclass(frozen=True, slots=True)
class Window:
    label: str  # as in the catalogue: "1m", "1h", "lifetime", "stagger_1m"
    size_s: int  # 0 for lifetime
    retention_s: int
    base: str  # key prefix up to the bucket
    scope_base: str
    starts_base: str = ""  # stagger windows: key prefix of a key's sorted set of window starts

    @property
    def stagger(self) -> bool:
        return bool(self.starts_base)


@dataclass(frozen=True, slots=True)
class CompiledMetric:
    metric: Metric
    read: Reader
    windows: tuple[Window, ...]
    scope: Getter | None = None  # co_occurrence: the field whose value groups the items
    stagger: Window | None = None  # the stagger window of a stagger metric (its only window)
    # (ops, event, event time, watermark, late) -> None: the entry's whole per-event work, compiled
    sink: Sink | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.sink is None:
            object.__setattr__(self, "sink", compile_sink(self))

    @property
    def name(self) -> str:
        return self.metric.name


@dataclass(frozen=True)
class CompiledViews:
    """The catalogue's aggregated metrics, indexed by the event types they can match, and for each
    event type one generated function doing the work of all its entries (``speed_layer.codegen``)."""

    metrics: tuple[CompiledMetric, ...]
    by_type: Mapping[str, tuple[CompiledMetric, ...]]
    any_type: tuple[CompiledMetric, ...]
    sinks: Mapping[str, EventSink] = field(default_factory=dict, compare=False)
    any_sink: EventSink | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.any_sink is None:
            sinks = {t: event_sink(metrics, t) for t, metrics in self.by_type.items()}
            object.__setattr__(self, "sinks", sinks)
            object.__setattr__(self, "any_sink", event_sink(self.any_type, "any type"))

    def for_type(self, event_type: Any) -> tuple[CompiledMetric, ...]:
        return self.by_type.get(event_type, self.any_type) if isinstance(event_type, str) else self.any_type

    def sink_for(self, event_type: Any) -> EventSink:
        """``(ops, event, ts, watermark, late)``: every entry's work for an event of this type."""
        found = self.sinks.get(event_type) if isinstance(event_type, str) else None
        return found or self.any_sink  # type: ignore[return-value]


def compile_views(
    catalogue: Catalogue, keys: SpeedKeys, default_retention: Mapping[str, str]
) -> CompiledViews:
    compiled = []
    for metric in catalogue.aggregated():
        if metric.stagger_label:
            label = metric.stagger_label
            stagger = Window(
                label=label,
                size_s=metric.stagger_seconds,
                retention_s=retention_s(metric, label, default_retention),
                base=keys.view_base(metric.name, label),
                scope_base=keys.scope_base(metric.name, label),
                starts_base=keys.stagger_starts_base(metric.name, label),
            )
            compiled.append(CompiledMetric(metric, compile_reader(metric), (stagger,), stagger=stagger))
            continue
        windows = tuple(
            Window(
                label=label,
                size_s=0 if label == LIFETIME else parse_duration(label),
                retention_s=retention_s(metric, label, default_retention),
                base=keys.view_base(metric.name, label),
                scope_base=keys.scope_base(metric.name, label),
            )
            for label in metric.windows
        )
        scope = _getter(metric.scope) if metric.scope else None
        compiled.append(CompiledMetric(metric, compile_reader(metric), windows, scope))
    any_type = tuple(c for c in compiled if not c.metric.filter.event_type)
    types = {t for c in compiled for t in c.metric.filter.event_type}
    by_type = {
        t: tuple(c for c in compiled if not c.metric.filter.event_type or t in c.metric.filter.event_type)
        for t in types
    }
    return CompiledViews(tuple(compiled), by_type, any_type)


@dataclass
class ViewOps:
    """A batch's view updates, aggregated per key, ready for the Lua applier."""

    counts: dict[str, int] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)
    distinct: dict[str, set[str]] = field(default_factory=dict)
    mins: dict[str, float] = field(default_factory=dict)
    maxs: dict[str, float] = field(default_factory=dict)
    lasts: dict[str, tuple[float, str]] = field(default_factory=dict)
    ranks: dict[str, dict[str, float]] = field(default_factory=dict)
    recents: dict[str, tuple[int, dict[str, float]]] = field(default_factory=dict)
    pairs: dict[str, tuple[str, int, list[str]]] = field(default_factory=dict)
    expiry: dict[str, int] = field(default_factory=dict)  # > 0: EXPIREAT; < 0: EXPIRE -n
    # Stagger windows: each key's known window starts (µs, sorted), loaded from Redis for the batch's
    # keys and shared by the ViewOps of one batch (``ViewsBatch``); and the starts opened here, per
    # sorted-set key: (expireat, trim floor in µs, starts), written by the same script call.
    starts: dict[str, list[int]] = field(default_factory=dict)
    opened: dict[str, tuple[int, int, list[int]]] = field(default_factory=dict)
    refreshing: list[str] = field(default_factory=list)  # sliding keys whose TTL ``payload`` refreshes

    def add(self, cm: CompiledMetric, event: Mapping[str, Any], ts: float, watermark: float) -> set[str]:
        """Add one event's updates of one metric; returns the windows it was too late for. (A batch
        adds all of an event's metrics at once: ``CompiledViews.sink_for``.)"""
        late: set[str] = set()
        cm.sink(self, event, ts, watermark, late)  # type: ignore[misc]
        return late

    def _windows(
        self,
        cm: CompiledMetric,
        contributions: list[tuple[tuple[str, ...], Any, float]],
        event: Mapping[str, Any],
        ts: float,
        watermark: float,
        late: set[str],
    ) -> None:
        """The general path (explode, where, weight, co_occurrence): every contribution, every window."""
        aggregate = cm.metric.aggregate
        counts, expiries = self.counts, self.expiry
        for window in cm.windows:
            size = window.size_s
            start = 0
            if size:
                start = int(ts // size) * size
                if start + size <= watermark:
                    late.add(window.label)
                    continue
                base = f"{window.base}:{start}"
                expiry = start + size + window.retention_s
            else:
                base, expiry = window.base, -window.retention_s
            for key_parts, value, weight in contributions:
                key = base + ":" + ":".join(key_parts) if key_parts else base
                if aggregate == "count":
                    counts[key] = counts.get(key, 0) + 1
                    expiries[key] = expiry
                elif aggregate == "co_occurrence":
                    self._co_occurs(cm, window, event, key, key_parts, value, expiry, start)
                else:
                    expiries[key] = expiry
                    self._update(aggregate, cm, key, value, weight, ts)

    def _stagger(
        self,
        cm: CompiledMetric,
        window: Window,
        contributions: list[tuple[tuple[str, ...], Any, float]],
        ts: float,
        watermark: float,
    ) -> bool:
        """Add an event's contributions to its stagger windows, one per key; False if one was late."""
        t, size, mark = micros(ts), window.size_s * MICROS, micros(watermark)
        in_time = True
        for key_parts, value, weight in contributions:
            suffix = ":".join(key_parts)
            index = f"{window.starts_base}:{suffix}"
            starts = self.starts.setdefault(index, [])
            known = len(starts)
            start = stagger_window(starts, t, size, mark)
            if start is None:
                in_time = False
                continue
            end_s = -(-(start + size) // MICROS)  # the window's end, rounded up to a second
            if len(starts) > known:
                expiry, floor, opened = self.opened.get(index, (0, 0, []))
                opened.append(start)
                self.opened[index] = (
                    max(expiry, end_s + window.retention_s),
                    # trim starts only once no event can join them (older than the watermark by
                    # twice the size) and they are past retention, so a reload decides the same
                    max(floor, min(mark - 2 * size, start - window.retention_s * MICROS)),
                    opened,
                )
            key = f"{window.base}:{format_start(start)}:{suffix}"
            self.expiry[key] = end_s + window.retention_s
            if cm.metric.aggregate == "count":
                self.counts[key] = self.counts.get(key, 0) + 1
            else:
                self._update(cm.metric.aggregate, cm, key, value, weight, ts)
        return in_time

    def _update(
        self, aggregate: str | None, cm: CompiledMetric, key: str, value: Any, weight: float, ts: float
    ) -> None:
        if aggregate == "sum":
            self.sums[key] = self.sums.get(key, 0.0) + value
        elif aggregate == "count_distinct":
            self.distinct.setdefault(key, set()).add(str(value))
        elif aggregate == "top_k":
            ranks = self.ranks.setdefault(key, {})
            member = str(value)
            ranks[member] = ranks.get(member, 0.0) + weight
        elif aggregate == "last_n":
            _, recent = self.recents.setdefault(key, (cm.metric.n, {}))
            member = str(value)
            if recent.get(member, float("-inf")) < ts:
                recent[member] = ts
        elif not is_number(value):
            return  # min/max/last keep numbers: a string "max" means nothing to the serving layer
        elif aggregate == "min":
            if key not in self.mins or value < self.mins[key]:
                self.mins[key] = float(value)
        elif aggregate == "max":
            if key not in self.maxs or value > self.maxs[key]:
                self.maxs[key] = float(value)
        elif aggregate == "last" and (key not in self.lasts or self.lasts[key][0] <= ts):
            self.lasts[key] = (ts, repr(float(value)))

    def _co_occurs(
        self,
        cm: CompiledMetric,
        window: Window,
        event: Mapping[str, Any],
        key: str,
        key_parts: tuple[str, ...],
        item: Any,
        expiry: int,
        bucket: int,
    ) -> None:
        scope = cm.scope(event, None) if cm.scope else None
        if scope is None:
            return
        scope_base = f"{window.scope_base}:{bucket}" if window.size_s else window.scope_base
        self._pair(f"{key}:", ":".join((scope_base, *key_parts, str(scope))), item, expiry)

    def _pair(self, item_prefix: str, scope_key: str, item: Any, expiry: int) -> None:
        entry = self.pairs.get(scope_key)
        if entry is None:
            entry = self.pairs[scope_key] = (item_prefix, expiry, [])
        entry[2].append(str(item))

    def payload(self, refreshed: Mapping[str, float] | None = None, now: float = 0.0) -> list[Any]:
        """The ops for ``apply.lua``, in its flat wire form (``apply.encode_ops``): groups of
        ``kind, expire command, its argument, only_if_created, count`` and then each op's ``key,
        argc, args...``, one group per kind and expiry. What Redis
        takes goes as a string and what the script compares as a number too: Redis formats a
        number argument with ``%.17g`` and Lua's ``tonumber`` parses a string twice, ≈1,900
        instructions each, which were an eighth of the script.

        Every op but co-occurrence pairs and stagger starts can tell in Lua whether it (may have)
        created its key, so its expiry goes "only if created" when it needs no refresh: always for
        a window key (its EXPIREAT never changes), and for a sliding (lifetime) key that
        ``refreshed`` says was given its TTL within the last tenth of it (at most a day). The
        sliding keys whose TTL this payload refreshes are left in ``self.refreshing``, for the
        caller to record once applied. Most of a batch's Redis calls were these EXPIREs
        (docs/benchmarks.md, speed).
        """
        ops: list[Any] = []
        expiry = self.expiry
        refreshing = self.refreshing = []
        known = refreshed if refreshed is not None else {}

        fixed: dict[int, tuple[Any, str, bool]] = {}  # expiry -> wire head, "only if created"
        always: dict[int, tuple[Any, str, bool]] = {}  # expiry -> wire head, set whatever happens
        since: dict[int, float] = {}  # sliding expiry -> refreshed after this needs no refresh
        groups: dict[tuple[Any, str, bool], list[Any]] = {}  # the current kind's: head -> [count, ops...]

        def group(k: str, count: int = 1) -> list[Any]:
            """The group of the current kind that takes ``k``'s ops, counting them in it."""
            e = expiry[k]
            head = None
            if e < 0:
                after = since.get(e)
                if after is None:
                    after = since[e] = now - min(-e / 10, MAX_REFRESH_S)
                last = known.get(k)
                if last is None or last <= after:
                    refreshing.append(k)
                    head = always.get(e)
                    if head is None:
                        head = always[e] = (*expire_command(e), False)
            if head is None:
                head = fixed.get(e)
                if head is None:
                    head = fixed[e] = (*expire_command(e), bool(e))
            g = groups.get(head)
            if g is None:
                g = groups[head] = [0]
            g[0] += count
            return g

        def flush(kind: str) -> None:
            for head, g in groups.items():
                ops.append(kind)
                ops.extend(head)
                ops.extend(g)
            groups.clear()

        for k, n in self.counts.items():
            group(k).extend((k, 2, str(n), n))
        flush("incr")
        for k, v in self.sums.items():
            group(k).extend((k, 1, repr(v)))
        flush("incrf")
        for k, members in self.distinct.items():
            chunks = _chunks(sorted(members))
            g = group(k, len(chunks))
            for chunk in chunks:
                g += (k, len(chunk), *chunk)
        flush("pfadd")
        for k, v in self.mins.items():
            group(k).extend((k, 2, repr(v), v))
        flush("min")
        for k, v in self.maxs.items():
            group(k).extend((k, 2, repr(v), v))
        flush("max")
        for k, (t, v) in self.lasts.items():
            group(k).extend((k, 3, repr(t), v, t))
        flush("last")
        for k, ranks in self.ranks.items():
            # "%.17g" is how Redis writes a score: the script tells "created" by comparing strings
            chunks = _chunks([x for member, w in ranks.items() for x in (f"{w:.17g}", member)])
            g = group(k, len(chunks))
            for chunk in chunks:
                g += (k, len(chunk), *chunk)
        flush("zincr")
        for k, (n, recent) in self.recents.items():
            chunks = _chunks([x for member, ts in recent.items() for x in (repr(ts), member)])
            g = group(k, len(chunks))
            for chunk in chunks:
                g += (k, len(chunk) + 1, str(-(n + 1)), *chunk)  # ZREMRANGEBYRANK's stop first
        flush("lastn")
        if self.pairs:
            cooc: list[Any] = ["cooc", "EXPIRE", str(SCOPE_TTL_S), False, len(self.pairs)]
            for scope_key, (item_prefix, item_expiry, items) in self.pairs.items():
                cooc += (scope_key, len(items) + 3, item_prefix, *expire_command(item_expiry), *items)
            ops += cooc
        # strings: Lua would print a µs score in 14 digits
        for index, (expireat, floor, opened) in self.opened.items():
            flat = [x for start in opened for x in (str(start), format_start(start))]
            head = ("EXPIREAT", str(expireat), False)  # whatever happens: not from self.expiry
            chunks = _chunks(flat)
            g = groups.get(head)
            if g is None:
                g = groups[head] = [0]
            g[0] += len(chunks)
            for chunk in chunks:
                g += (index, len(chunk) + 1, str(floor), *chunk)
        flush("zadd")
        return ops


def compile_sink(cm: CompiledMetric) -> Sink:
    """The entry's whole per-event work (filter, key, value, windows, update) as one function.

    Entries of the common shape (no explode, where, weight or stagger) get generated
    code (``speed_layer.codegen``); the others read their contributions and take ``ViewOps``'
    general path. Both equal ``contributions()`` applied window by window
    (tests/unit/test_speed_compiler.py).
    """
    if is_simple(cm):
        return event_sink([cm], cm.name, check_types=True)
    read = cm.read
    stagger = cm.stagger

    def general(ops: ViewOps, event: Mapping[str, Any], ts: float, watermark: float, late: set[str]) -> None:
        contributions = read(event, ts)
        if not contributions:
            return
        if stagger is not None:
            if not ops._stagger(cm, stagger, contributions, ts, watermark):
                late.add(stagger.label)
            return
        ops._windows(cm, contributions, event, ts, watermark, late)

    return general


def _chunks(values: list[Any]) -> list[list[Any]]:
    """``values`` cut into lists of at most ``MAX_ARGS`` (one Redis command's members each)."""
    return [values[start : start + MAX_ARGS] for start in range(0, len(values), MAX_ARGS)]
