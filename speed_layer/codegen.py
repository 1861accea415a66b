"""The per-event work of the catalogue's common entries, generated as Python source once per event type.

An event of one type feeds about ten entries, most of the common shape (no explode, where, weight
or stagger): read a value and a key from the event, add it to each window's bucket (for
co_occurrence, to its scope's list of items).
Done entry by entry through closures, every entry re-read the user id, re-computed the same minute
bucket and went through three calls per window. ``event_sink`` writes one function per event type
instead, with every read and bucket computed once per event and every update inlined: the same
updates into the same ``ViewOps`` dictionaries as ``ViewOps._windows`` (proved equal entry by entry
and event type by event type in tests/unit/test_speed_compiler.py), in half the time: 25 → 12 µs
per event of the bench (docs/benchmarks.md, speed). The other entries keep their compiled sink
(``compiler.compile_sink``) and are called from the generated function in catalogue order.

The source only ever contains identifiers it made itself; every name or path from the catalogue
enters it through ``repr``, as a literal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lambdalake.metrics.catalogue import is_number

if TYPE_CHECKING:
    from speed_layer.compiler import CompiledMetric

EventSink = Callable[[Any, Mapping[str, Any], float, float, set[str]], None]
SIMPLE_AGGREGATES = ("count", "sum", "count_distinct", "top_k", "last_n", "min", "max", "last")


def is_simple(cm: CompiledMetric) -> bool:
    """Entries the generated code handles: every aggregate but stagger windows, on plain events."""
    metric = cm.metric
    paths = [*metric.by, *[p for p in (metric.value_path, metric.scope) if p]]
    return (
        cm.stagger is None
        and (cm.scope is None or metric.aggregate == "co_occurrence")
        and metric.aggregate in (*SIMPLE_AGGREGATES, "co_occurrence")
        and not metric.explode
        and not metric.filter.where
        and not metric.weight
        and not any(p.partition(".")[0] == "item" for p in paths)  # only an exploded item has them
    )


def mapping_get(container: Any, name: str) -> Any:
    """``container[name]`` of an event's mapping field, None otherwise (the generated code inlines
    the dict case; events are dicts from orjson, and the exact type check spares the ABC's)."""
    if type(container) is dict:
        return container.get(name)
    return container.get(name) if isinstance(container, Mapping) else None


def _number(value: Any) -> bool:
    kind = type(value)
    return kind is float or kind is int or is_number(value)


class _Writer:
    """Builds one function's source: shared reads first, then each entry's updates."""

    def __init__(self) -> None:
        self.head: list[str] = []
        self.body: list[str] = []
        self.constants: dict[str, Any] = {}
        self.locals: dict[tuple[str, Any], str] = {}  # (kind, what) -> local variable name

    def constant(self, value: Any) -> str:
        name = f"K{len(self.constants)}"
        self.constants[name] = value
        return name

    def local(self, kind: str, what: Any, expression: Callable[[], str]) -> str:
        """A local computed once, at the top of the function (before any entry)."""
        found = self.locals.get((kind, what))
        if found is None:
            source = expression()  # may itself declare the locals it reads, before this one
            found = self.locals[(kind, what)] = f"{kind}{len(self.locals)}"
            self.head.append(f"{found} = {source}")
        return found

    # --- reads shared by the entries ------------------------------------------------------------
    def raw(self, path: str) -> str:
        """The local holding ``field_value(event, path)`` (None when absent)."""

        def expression() -> str:
            if path == "user":
                return "get('user_id') or get('anonymous_id')"
            head, _, name = path.partition(".")
            if not name:
                return f"get({head!r})"
            container = self.local("c", head, lambda: f"get({head!r})")
            fallback = f"mapping_get({container}, {name!r})"
            return f"{container}.get({name!r}) if type({container}) is dict else {fallback}"

        return self.local("v", path, expression)

    def text(self, path: str) -> str:
        """The value as a member of a set or a sorted set: a string."""
        raw = self.raw(path)
        return self.local("t", path, lambda: f"{raw} if type({raw}) is str else str({raw})")

    def suffix(self, by: Sequence[str]) -> str | None:
        """The local holding the ``:by1:by2`` part of the event's keys (None: a value is missing)."""
        if not by:
            return None
        raws = [self.raw(p) for p in by]

        def expression() -> str:
            parts = " + ':' + ".join(f"({r} if type({r}) is str else str({r}))" for r in raws)
            missing = " or ".join(f"{r} is None" for r in raws)
            return f"None if {missing} else ':' + {parts}"

        return self.local("s", tuple(by), expression)

    def bucket(self, size: int) -> tuple[str, str, str]:
        """(start, "is the window open", start as text) of the event's window of this size."""
        start = self.local("b", size, lambda: f"int(ts // {size}) * {size}")
        is_open = self.local("o", size, lambda: f"{start} + {size} > watermark")
        text = self.local("w", size, lambda: f"str({start})")
        return start, is_open, text


def _update(aggregate: str, store: str, value: str, member: str, expiry: str, n: int) -> list[str]:
    """Lines adding ``value`` to the key ``k`` of ``store`` (a ViewOps dict), as ``compiler`` does."""
    if aggregate == "count":
        return [
            f"n = {store}.get(k)",
            "if n is None:",
            f"    {store}[k] = 1",
            f"    expiry[k] = {expiry}",
            "else:",
            f"    {store}[k] = n + 1",
        ]
    if aggregate == "sum":
        return [
            f"n = {store}.get(k)",
            "if n is None:",
            f"    {store}[k] = 0.0 + {value}",
            f"    expiry[k] = {expiry}",
            "else:",
            f"    {store}[k] = n + {value}",
        ]
    if aggregate in ("count_distinct", "top_k", "last_n"):
        empty = {"count_distinct": "set()", "top_k": "{}", "last_n": f"({n}, {{}})"}[aggregate]
        add = {
            "count_distinct": [f"x.add({member})"],
            "top_k": [f"x[{member}] = x.get({member}, 0.0) + 1.0"],
            "last_n": ["x = x[1]", f"if x.get({member}, NEG_INF) < ts:", f"    x[{member}] = ts"],
        }[aggregate]
        return [
            f"x = {store}.get(k)",
            "if x is None:",
            f"    x = {store}[k] = {empty}",
            f"    expiry[k] = {expiry}",
            *add,
        ]
    if aggregate in ("min", "max"):
        better = "<" if aggregate == "min" else ">"
        return [
            f"n = {store}.get(k)",
            "if n is None:",
            f"    {store}[k] = float({value})",
            f"    expiry[k] = {expiry}",
            f"elif {value} {better} n:",
            f"    {store}[k] = float({value})",
        ]
    assert aggregate == "last", aggregate
    return [
        "expiry[k] = " + expiry,
        f"n = {store}.get(k)",
        "if n is None or n[0] <= ts:",
        f"    {store}[k] = (ts, repr(float({value})))",
    ]


STORES = {
    "co_occurrence": "pairs",
    "count": "counts",
    "sum": "sums",
    "count_distinct": "distinct",
    "top_k": "ranks",
    "last_n": "recents",
    "min": "mins",
    "max": "maxs",
    "last": "lasts",
}


def _entry(w: _Writer, cm: CompiledMetric) -> list[str]:
    """The lines of one common-shape entry."""
    metric = cm.metric
    aggregate = metric.aggregate or ""
    path = metric.value_path
    suffix = w.suffix(metric.by)
    conditions = [f"{suffix} is not None"] if suffix else []
    value = member = "1"
    numeric = "True"
    if path:
        raw = w.raw(path)
        conditions.append(f"{raw} is not None")
        value = "ts" if path == "ts" else raw
        if aggregate in ("count_distinct", "top_k", "last_n", "co_occurrence"):
            member = "str(ts)" if path == "ts" else w.text(path)
        if aggregate == "sum":
            conditions.append(w.local("n", path, lambda: f"_number({raw})"))
        elif aggregate in ("min", "max", "last") and path != "ts":
            numeric = w.local("n", path, lambda: f"_number({raw})")
    store = STORES[aggregate]
    lines: list[str] = []
    for window in cm.windows:
        if window.size_s:
            start, is_open, start_text = w.bucket(window.size_s)
            prefix = w.constant(f"{window.base}:")
            key = f"{prefix} + {start_text}" + (f" + {suffix}" if suffix else "")
            expiry = f"{start} + {window.size_s + window.retention_s}"
        else:
            prefix = w.constant(window.base)
            key = f"{prefix} + {suffix}" if suffix else prefix
            expiry, is_open = str(-window.retention_s), ""
        if aggregate == "co_occurrence":  # as ViewOps._co_occurs: the item joins its scope's list
            scope = w.raw(metric.scope or "")
            scope_key = (
                f"{w.constant(f'{window.scope_base}:')} + {w.bucket(window.size_s)[2]}"
                if window.size_s
                else w.constant(window.scope_base)
            )
            scope_key += (f" + {suffix}" if suffix else "") + f" + ':' + {w.text(metric.scope or '')}"
            update = [
                f"if {scope} is not None:",
                f"    q = {scope_key}",
                f"    x = {store}.get(q)",
                "    if x is None:",
                f"        x = {store}[q] = (k + ':', {expiry}, [])",
                f"    x[2].append({member})",
            ]
        else:
            update = _update(aggregate, store, value, member, expiry, metric.n or 0)
        if numeric != "True":  # min/max/last keep numbers; the key's expiry is noted all the same
            indented = [f"    {line}" for line in update]
            update = [f"if {numeric}:", *indented, "else:", f"    expiry[k] = {expiry}"]
        block = [f"k = {key}", *update]
        if is_open:
            lines += [f"if {is_open}:", *[f"    {line}" for line in block]]
            lines += ["else:", f"    late.add({window.label!r})"]
        else:
            lines += block
    if conditions:
        return [f"if {' and '.join(conditions)}:", *[f"    {line}" for line in lines]]
    return lines


def event_sink(metrics: Sequence[CompiledMetric], name: str, check_types: bool = False) -> EventSink:
    """One function ``(ops, event, ts, watermark, late)`` doing the work of ``metrics`` for an event.

    ``check_types``: apply each entry's event-type filter (for a single entry called with any
    event); an event type's own function holds only the entries that take that type.
    """
    w = _Writer()
    for index, cm in enumerate(metrics):
        if is_simple(cm):
            lines = _entry(w, cm)
        else:
            general = w.constant(cm.sink)
            lines = [f"{general}(ops, event, ts, watermark, late)"]
        types = cm.metric.filter.event_type
        if check_types and types:
            accepted = w.constant(frozenset(types))
            lines = [f"if get('event_type') in {accepted}:", *[f"    {line}" for line in lines]]
        w.body += [f"# {index}: {cm.name!r}"[:100], *lines]
    stores = sorted({STORES[cm.metric.aggregate or ""] for cm in metrics if is_simple(cm)})
    source = [
        "def sink(ops, event, ts, watermark, late):",
        "    get = event.get",
        *[f"    {store} = ops.{store}" for store in stores],
        "    expiry = ops.expiry",
        *[f"    {line}" for line in w.head],
        *[f"    {line}" for line in w.body],
    ]
    namespace: dict[str, Any] = {
        "mapping_get": mapping_get,
        "_number": _number,
        "NEG_INF": float("-inf"),
        **w.constants,
    }
    code = compile("\n".join(source) + "\n", f"<speed sink: {name}>", "exec")
    exec(code, namespace)  # our own source: catalogue strings enter it only as constants
    sink = namespace["sink"]
    sink.__name__ = sink.__qualname__ = f"sink_{''.join(c if c.isalnum() else '_' for c in name)}"
    sink.source = "\n".join(source)  # for a reader debugging a view: print(views.sink_for(t).source)
    return sink  # type: ignore[no-any-return]
