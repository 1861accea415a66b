"""Table specs read from ``sql/``: the one place that names tables, columns, grains and partitions.

``sql/athena/<table>/`` describes a lake table (the Parquet or CSV files Spark and the generator
write; Glue/Athena and DuckDB read them); ``sql/warehouse/<table>_vN/`` a Redshift table loaded
from one lake table (or derived in the warehouse by its ``merge.sql``); ``sql/warehouse/v_*/`` a
BI view; ``sql/bi/*.sql`` the ready BI queries. Python reads these files and never repeats them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Literal

import yaml

from lambdalake.errors import LambdalakeError

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
ATHENA_DIR = SQL_DIR / "athena"
WAREHOUSE_DIR = SQL_DIR / "warehouse"
BI_DIR = SQL_DIR / "bi"

Grain = Literal["hour", "day", "full"]
PARTITION_COLUMNS: dict[str, tuple[str, ...]] = {
    "hour": ("year", "month", "day", "hour"),
    "day": ("year", "month", "day"),
    "none": (),
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # Hive/Glue type for lake tables, Redshift type for warehouse tables
    required: bool = False
    description: str = ""
    source: str | None = None  # warehouse only: SQL over the staged lake row; None means same name

    @property
    def source_sql(self) -> str:
        return self.source or self.name


@dataclass(frozen=True)
class Interval:
    """A half-open time range [start, end) that one load replaces; ``full`` replaces the whole table."""

    grain: Grain
    start: datetime | None = None
    end: datetime | None = None

    @classmethod
    def containing(cls, grain: Grain, moment: datetime) -> Interval:
        if grain == "full":
            return cls("full")
        moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
        if grain == "hour":
            start = moment.replace(minute=0, second=0, microsecond=0)
            return cls("hour", start, start + timedelta(hours=1))
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return cls("day", start, start + timedelta(days=1))

    def bounds(self) -> tuple[datetime | date, datetime | date]:
        """SQL bounds: timestamps for hours, dates for days (so DATE columns compare without casts)."""
        if self.start is None or self.end is None:
            raise ValueError("a full interval has no bounds")
        if self.grain == "day":
            return self.start.date(), self.end.date()
        return self.start.replace(tzinfo=None), self.end.replace(tzinfo=None)

    @property
    def label(self) -> str:
        if self.start is None:
            return "full"
        return f"{self.start:%Y-%m-%dT%H}" if self.grain == "hour" else f"{self.start:%Y-%m-%d}"


@dataclass(frozen=True)
class LakeTable:
    """Files in the lake under ``location``, partitioned Hive-style by event-time hour or day."""

    name: str
    description: str
    location: str
    format: Literal["parquet", "csv"]
    grain: Literal["hour", "day", "none"]
    columns: tuple[Column, ...]
    ddl: str

    @property
    def partition_columns(self) -> tuple[str, ...]:
        return PARTITION_COLUMNS[self.grain]

    def partition_values(self, moment: datetime) -> dict[str, str]:
        values = {
            "year": f"{moment:%Y}",
            "month": f"{moment:%m}",
            "day": f"{moment:%d}",
            "hour": f"{moment:%H}",
        }
        return {name: values[name] for name in self.partition_columns}

    def partition_path(self, moment: datetime) -> str:
        """``<location>/year=YYYY/month=MM/day=DD[/hour=HH]`` of the partition holding ``moment``."""
        parts = [f"{k}={v}" for k, v in self.partition_values(moment).items()]
        return "/".join([self.location, *parts])

    def interval_prefix(self, interval: Interval) -> str:
        """The lake prefix holding exactly an interval's files (a day of an hourly table is its 24 hours)."""
        if interval.start is None or self.grain == "none":
            return self.location
        if interval.grain == "hour" and self.grain == "day":
            raise LambdalakeError(
                f"{self.name} is partitioned by day: it cannot be loaded one hour at a time"
            )
        parts = [f"{k}={v}" for k, v in self.partition_values(interval.start).items()]
        return "/".join([self.location, *parts[: len(PARTITION_COLUMNS[interval.grain])]])

    @property
    def file_suffix(self) -> str:
        return ".parquet" if self.format == "parquet" else ".csv"


@dataclass(frozen=True)
class WarehouseTable:
    """A Redshift table loaded per interval from one lake table (or derived by ``merge_sql``)."""

    name: str
    description: str
    columns: tuple[Column, ...]
    unique_key: tuple[str, ...]
    grain: Grain
    interval_column: str | None
    source: LakeTable | None
    derived_from: tuple[str, ...]
    merge_sql: str | None
    ddl: str
    alignment: str

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def interval_for(self, moment: datetime) -> Interval:
        return Interval.containing(self.grain, moment)


@dataclass(frozen=True)
class View:
    name: str
    description: str
    sql: str


def _read_yaml(path: Path) -> dict:  # type: ignore[type-arg]
    with path.open() as handle:
        data = yaml.safe_load(handle)
    if not isinstance(data, dict):
        raise LambdalakeError(f"{path}: expected a mapping")
    return data


def _columns(folder: Path) -> tuple[Column, ...]:
    fields = _read_yaml(folder / "schema.yaml")["fields"]
    return tuple(
        Column(
            name=f["name"],
            type=f["type"],
            required=f.get("mode") == "REQUIRED",
            description=f.get("description", ""),
            source=f.get("source"),
        )
        for f in fields
    )


@cache
def lake_tables() -> dict[str, LakeTable]:
    tables = {}
    for folder in sorted(p for p in ATHENA_DIR.iterdir() if p.is_dir()):
        meta = _read_yaml(folder / "metadata.yaml")
        tables[folder.name] = LakeTable(
            name=folder.name,
            description=meta["description"],
            location=meta["location"].strip("/"),
            format=meta["format"],
            grain=meta["partitioning"]["grain"],
            columns=_columns(folder),
            ddl=(folder / "create_table.sql").read_text(),
        )
    return tables


def _dependency_order(tables: dict[str, WarehouseTable]) -> dict[str, WarehouseTable]:
    ordered: dict[str, WarehouseTable] = {}
    pending = dict(tables)
    while pending:
        ready = [t for t in pending.values() if all(d in ordered for d in t.derived_from)]
        if not ready:
            raise LambdalakeError(f"sql/warehouse: circular or unknown derived_from in {sorted(pending)}")
        for table in ready:
            ordered[table.name] = pending.pop(table.name)
    return ordered


@cache
def warehouse_tables() -> dict[str, WarehouseTable]:
    """Every warehouse table, sources before the tables derived from them."""
    lakes = lake_tables()
    tables = {}
    for folder in sorted(p for p in WAREHOUSE_DIR.iterdir() if (p / "create_table.sql").exists()):
        meta = _read_yaml(folder / "metadata.yaml")
        source, interval = meta["source"], meta["interval"]
        merge = source.get("merge")
        tables[folder.name] = WarehouseTable(
            name=folder.name,
            description=meta["description"],
            columns=_columns(folder),
            unique_key=tuple(meta["unique_key"]),
            grain=interval["grain"],
            interval_column=interval.get("column"),
            source=lakes[source["athena_table"]] if "athena_table" in source else None,
            derived_from=tuple(source.get("derived_from", ())),
            merge_sql=(folder / merge).read_text() if merge else None,
            ddl=(folder / "create_table.sql").read_text(),
            alignment=meta.get("alignment", "provisional"),
        )
    return _dependency_order(tables)


@cache
def views() -> dict[str, View]:
    out = {}
    for folder in sorted(p for p in WAREHOUSE_DIR.iterdir() if (p / "view.sql").exists()):
        meta = _read_yaml(folder / "metadata.yaml")
        out[folder.name] = View(folder.name, meta["description"], (folder / "view.sql").read_text())
    return out


@cache
def bi_queries() -> dict[str, str]:
    """The ready BI queries (``sql/bi/<name>.sql``), parameters ``{start_date}`` and ``{end_date}``."""
    return {path.stem: path.read_text() for path in sorted(BI_DIR.glob("*.sql"))}


def warehouse_table(name: str) -> WarehouseTable:
    tables = warehouse_tables()
    if name not in tables:
        raise LambdalakeError(f"unknown warehouse table {name!r}; known: {', '.join(tables)}")
    return tables[name]
