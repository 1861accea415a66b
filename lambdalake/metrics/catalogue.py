"""The metric catalogue: every metric declared once, as data, for every layer.

A metric is a filter, a key, windows and an aggregate. The speed layer compiles each entry into
Redis updates, the batch layer into a Spark aggregation, and the serving layer reconciles the two
by the metric's name — so the layers can differ only by lateness and by approximation
(HyperLogLog for ``count_distinct`` in the speed layer), never by code. This is the lesson of
Summingbird: a lambda architecture that writes each metric twice drifts.

Built-in metrics are in ``builtin.yaml`` beside this module; users add their own YAML files
(setting ``LAMBDALAKE_METRIC_CATALOGUES``) with no Python. See docs/metrics.md.

Field paths name a value in an event: ``event_type``, ``user_id``, ``session_id``, ``ts``,
``properties.<name>``, ``context.<name>``, ``item.<name>`` (an element of the ``explode`` array),
and ``user`` (``user_id``, else ``anonymous_id`` — the partition key).
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Aggregate = Literal[
    "count", "sum", "count_distinct", "top_k", "last_n", "min", "max", "last", "co_occurrence"
]
WindowType = Literal["tumbling", "lifetime"]
_DURATION = re.compile(r"^(\d+)(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_FIELD = re.compile(
    r"^(event_type|event_id|user_id|anonymous_id|session_id|ts|user|(properties|context|item)\.[A-Za-z0-9_]+)$"
)
MAX_SLIDING_BUCKETS = 120  # buckets merged to answer one sliding span (PFCOUNT/ZUNION of that many keys)
MAX_STAGGER_S = 3600  # a stagger window lives in the hourly table of its start and may run into the next hour
STAGGER_AGGREGATES = ("count", "sum", "count_distinct", "min", "max", "last")  # one number per window
FIELD_AGGREGATES = ("sum", "count_distinct", "min", "max", "last")  # read ``field``; the others ``item``
# `by` paths that are (or determine) the stream's partition key: every event of a stagger key then
# reaches the speed layer through one shard, in order, so its open windows have one writer.
STAGGER_KEYS = ("user", "user_id")
STAGGER_PREFIX = "stagger_"
NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class CatalogueError(ValueError):
    """A catalogue entry is invalid; the message names the file, the metric and the reason."""


def parse_duration(text: str) -> int:
    """Seconds in a duration such as ``90s``, ``5m``, ``1h``, ``30d``."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration like 30s, 5m, 1h or 30d")
    return int(match.group(1)) * _UNITS[match.group(2)]


def stagger_label(size: str) -> str:
    """The window label of a stagger window of ``size`` (``1m`` -> ``stagger_1m``)."""
    return f"{STAGGER_PREFIX}{format_duration(parse_duration(size))}"


def format_duration(seconds: int) -> str:
    for unit in ("d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


def _check_field(value: str | None) -> str | None:
    if value is not None and not _FIELD.match(value):
        raise ValueError(
            f"{value!r} is not a field path (event_type, user, user_id, session_id, ts, "
            "properties.<name>, context.<name>, item.<name>)"
        )
    return value


class Condition(BaseModel):
    """One test on a field; all conditions of a filter must hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str
    op: Literal["==", "!=", ">", ">=", "<", "<=", "in", "exists"] = "=="
    value: Any = None

    _field = field_validator("field")(_check_field)


class Filter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_type: list[str] = Field(default_factory=list, description="Any of these types; empty: every type.")
    where: list[Condition] = Field(default_factory=list)

    @field_validator("event_type", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class Metric(BaseModel):
    """One catalogue entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    filter: Filter = Field(default_factory=Filter)
    by: list[str] = Field(default_factory=list, description="Group-by field paths; empty: one global series.")
    explode: str | None = Field(default=None, description="An array field whose elements become `item`.")
    aggregate: Aggregate | None = None
    field: str | None = Field(
        default=None, description="The value aggregated (sum, count_distinct, min, ...)."
    )
    item: str | None = Field(
        default=None, description="The thing ranked or listed (top_k, last_n, co_occurrence)."
    )
    weight: str | None = Field(default=None, description="top_k: add this field instead of 1.")
    k: int = Field(default=10, ge=1, le=1000, description="top_k / co_occurrence: how many to answer with.")
    n: int = Field(default=20, ge=1, le=1000, description="last_n: how many to keep.")
    scope: str | None = Field(default=None, description="co_occurrence: items co-occur within this field.")
    formula: str | None = Field(default=None, description="A derived metric: arithmetic over other metrics.")
    windows: list[str] = Field(
        default_factory=lambda: ["lifetime"], description="Tumbling sizes, or lifetime."
    )
    sliding: list[str] = Field(default_factory=list, description="Query-time sliding spans over the buckets.")
    stagger: str | None = Field(
        default=None,
        description="Stagger window size: per key, a window opened by the key's first event not in its "
        "open window (as in Kinesis Analytics); replaces `windows`, needs `user` in `by`.",
    )
    retention: dict[str, str] = Field(default_factory=dict, description="Speed-layer TTL per window.")
    batch: bool = Field(default=True, description="Whether the batch layer recomputes it (hourly/daily).")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError(f"{value!r}: names are lower_snake_case, at most 63 characters")
        return value

    @field_validator("field", "item", "weight", "scope", "explode")
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        return _check_field(value)

    @field_validator("by")
    @classmethod
    def _by(cls, value: list[str]) -> list[str]:
        for path in value:
            _check_field(path)
        return value

    @field_validator("windows", "sliding")
    @classmethod
    def _durations(cls, value: list[str]) -> list[str]:
        for text in value:
            if text != "lifetime":
                parse_duration(text)
        return value

    @field_validator("stagger")
    @classmethod
    def _stagger(cls, value: str | None) -> str | None:
        if value is not None and parse_duration(value) > MAX_STAGGER_S:
            raise ValueError(f"stagger {value}: at most {format_duration(MAX_STAGGER_S)}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _stagger_replaces_windows(cls, data: Any) -> Any:
        """A stagger entry has no tumbling or lifetime windows: ``windows`` becomes empty."""
        if isinstance(data, dict) and data.get("stagger") is not None:
            if "windows" in data:
                raise ValueError("`stagger` replaces `windows`: give one or the other")
            data = {**data, "windows": []}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Metric:
        if (self.aggregate is None) == (self.formula is None):
            raise ValueError("give exactly one of `aggregate` or `formula`")
        needs = {
            "sum": ("field",),
            "count_distinct": ("field",),
            "min": ("field",),
            "max": ("field",),
            "last": ("field",),
            "top_k": ("item",),
            "last_n": ("item",),
            "co_occurrence": ("item", "scope"),
        }.get(self.aggregate or "", ())
        for attribute in needs:
            if getattr(self, attribute) is None:
                raise ValueError(f"aggregate {self.aggregate} needs `{attribute}`")
        uses_item = any(p and p.startswith("item.") for p in (self.field, self.item, self.weight, *self.by))
        if uses_item and self.explode is None:
            raise ValueError("`item.` fields need `explode` (the array whose elements are items)")
        if self.stagger is not None:
            self._check_stagger()
        if "lifetime" in self.windows and len(self.windows) > 1:
            raise ValueError("`lifetime` cannot be combined with tumbling windows")
        if self.sliding:
            smallest = min(self.window_seconds, default=0)
            if not smallest:
                raise ValueError("`sliding` spans need tumbling `windows` to build them from")
            for span in self.sliding:
                if parse_duration(span) % smallest:
                    raise ValueError(
                        f"sliding span {span} is not a multiple of the {format_duration(smallest)} window"
                    )
        for window in self.retention:
            if window not in self.window_labels:
                raise ValueError(
                    f"retention for {window!r}, which is not one of the windows {self.window_labels}"
                )
        return self

    def _check_stagger(self) -> None:
        if self.formula is not None:
            raise ValueError("a derived metric cannot have `stagger`: each input opens its own windows")
        if not any(path in STAGGER_KEYS for path in self.by):
            raise ValueError(
                "`stagger` windows are opened per key and need `user` (or `user_id`) in `by`, the "
                "stream's partition key, so that one shard sees every event of a key in order"
            )
        if self.aggregate not in STAGGER_AGGREGATES:
            raise ValueError(f"`stagger` supports the aggregates {', '.join(STAGGER_AGGREGATES)}")
        if self.sliding:
            raise ValueError("`sliding` spans are built from tumbling windows, not from `stagger` ones")

    @property
    def is_derived(self) -> bool:
        return self.formula is not None

    @property
    def value_path(self) -> str | None:
        """The path the aggregate reads from each event: ``field`` for sum, count_distinct, min, max
        and last, ``item`` for top_k, last_n and co_occurrence; None for count."""
        if self.aggregate == "count":
            return None
        return self.field if self.aggregate in FIELD_AGGREGATES else self.item

    @property
    def window_seconds(self) -> list[int]:
        """Tumbling window sizes in seconds (empty for lifetime metrics)."""
        return [parse_duration(w) for w in self.windows if w != "lifetime"]

    @property
    def is_lifetime(self) -> bool:
        return self.windows == ["lifetime"]

    @property
    def is_stagger(self) -> bool:
        return self.stagger is not None

    @property
    def stagger_seconds(self) -> int:
        """The stagger window's size in seconds (0 when the metric has none)."""
        return parse_duration(self.stagger) if self.stagger else 0

    @property
    def stagger_label(self) -> str | None:
        """The stagger window's name in keys, tables and ``retention``: ``stagger_1m``."""
        return stagger_label(self.stagger) if self.stagger else None

    @property
    def window_labels(self) -> list[str]:
        """Every window the layers write: the tumbling sizes or lifetime, or the stagger label."""
        return [self.stagger_label] if self.stagger_label else list(self.windows)

    def sliding_plan(self, span: str) -> tuple[int, int]:
        """(bucket size, number of buckets) that answer a sliding span ending now.

        The finest window that divides the span in at most ``MAX_SLIDING_BUCKETS`` buckets, so
        "the last hour" is the last 60 minutes, not the current clock hour; past that many buckets
        (30 days of minutes) the largest dividing window.
        """
        seconds = parse_duration(span)
        dividing = [s for s in self.window_seconds if seconds % s == 0]
        fitting = [s for s in dividing if seconds // s <= MAX_SLIDING_BUCKETS]
        size = min(fitting) if fitting else max(dividing)
        return size, seconds // size

    def formula_inputs(self) -> list[str]:
        return sorted(_formula_names(self.formula)) if self.formula else []

    def fields(self) -> list[str]:
        """Every field path the metric reads (filter, key, value): what an event must carry."""
        paths = [c.field for c in self.filter.where]
        paths += [p for p in (self.field, self.item, self.weight, self.scope) if p]
        return [*paths, *self.by]


# --- derived metrics: a tiny, safe arithmetic language over metric names --------------------------
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _formula_names(formula: str) -> set[str]:
    tree = ast.parse(formula, mode="eval")
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.USub, ast.Load, ast.Constant, *_OPS)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif not isinstance(node, allowed) or (isinstance(node, ast.Constant) and not is_number(node.value)):
            raise ValueError(f"formula {formula!r}: only metric names, numbers, + - * / and parentheses")
    return names


def is_number(value: object) -> bool:
    """A JSON number (bools are not numbers, though Python says so): what sums and weights accept."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def evaluate_formula(formula: str, values: Mapping[str, float | None]) -> float | None:
    """The formula's value; None when an input is missing or a division is by zero."""

    def walk(node: ast.AST) -> float | None:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.Name):
            value = values.get(node.id)
            return None if value is None else float(value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            inner = walk(node.operand)
            return None if inner is None else -inner
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = walk(node.left), walk(node.right)
            if left is None or right is None or (isinstance(node.op, ast.Div) and right == 0):
                return None
            return _OPS[type(node.op)](left, right)
        raise ValueError(f"formula {formula!r}: unsupported expression")

    return walk(ast.parse(formula, mode="eval"))


# --- the catalogue -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Catalogue:
    metrics: tuple[Metric, ...]

    @cached_property
    def by_name(self) -> dict[str, Metric]:
        return {m.name: m for m in self.metrics}

    def __getitem__(self, name: str) -> Metric:
        try:
            return self.by_name[name]
        except KeyError:
            raise KeyError(f"no metric {name!r} in the catalogue") from None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.metrics)

    def __len__(self) -> int:
        return len(self.metrics)

    def aggregated(self) -> list[Metric]:
        """Metrics the layers compute (derived ones are computed from these at query time)."""
        return [m for m in self.metrics if not m.is_derived]


BUILTIN = "builtin.yaml"


def _entries(text: str, source: str) -> list[dict[str, Any]]:
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise CatalogueError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("metrics", []), list):
        raise CatalogueError(f"{source}: expected a mapping with a `metrics:` list")
    return list(document.get("metrics", []))


def parse_catalogue(sources: Iterable[tuple[str, str]]) -> Catalogue:
    """Build a catalogue from (source name, YAML text) pairs; later sources may not redefine names."""
    metrics: list[Metric] = []
    seen: dict[str, str] = {}
    for source, text in sources:
        for index, entry in enumerate(_entries(text, source)):
            label = entry.get("name", f"entry {index}") if isinstance(entry, dict) else f"entry {index}"
            try:
                metric = Metric.model_validate(entry)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg'].removeprefix('Value error, ')}"
                    for e in exc.errors()
                )
                raise CatalogueError(f"{source}: metric {label}: {problems}") from None
            if metric.name in seen:
                raise CatalogueError(
                    f"{source}: metric {metric.name} is already defined in {seen[metric.name]}"
                )
            seen[metric.name] = source
            metrics.append(metric)
    catalogue = Catalogue(tuple(metrics))
    for metric in catalogue:
        if metric.formula:
            try:
                inputs = metric.formula_inputs()
            except (SyntaxError, ValueError) as exc:
                raise CatalogueError(f"metric {metric.name}: {exc}") from None
            missing = [n for n in inputs if n not in catalogue.by_name]
            if missing:
                raise CatalogueError(
                    f"metric {metric.name}: formula uses unknown metric(s) {', '.join(missing)}"
                )
            for name in inputs:
                source = catalogue[name]
                if source.is_stagger:
                    raise CatalogueError(
                        f"metric {metric.name}: input {name} has stagger windows, which are opened "
                        "per metric and cannot be combined by a formula"
                    )
                if source.windows != metric.windows or source.by != metric.by:
                    raise CatalogueError(
                        f"metric {metric.name}: input {name} has other windows or keys "
                        f"({source.windows} by {source.by}, not {metric.windows} by {metric.by})"
                    )
    return catalogue


def load_catalogue(extra_paths: Iterable[str | Path] = ()) -> Catalogue:
    """The built-in metrics plus the user's catalogue files."""
    sources = [(BUILTIN, (resources.files("lambdalake.metrics") / BUILTIN).read_text())]
    for path in extra_paths:
        file = Path(path)
        if not file.is_file():
            raise CatalogueError(f"metric catalogue {file} does not exist")
        sources.append((str(file), file.read_text()))
    return parse_catalogue(sources)
