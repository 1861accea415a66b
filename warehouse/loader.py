"""The warehouse loader interface: publish an interval of the lake's curated tables into the warehouse.

A load is one transaction on one connection: stage the interval's files in a temporary table,
check every staged row falls in the interval, lock the interval, delete it from the target and
insert the staged rows. So a load is idempotent (a reload replaces the same interval), a failed
load leaves the table as it was (rollback), and loads of different intervals never conflict.
Implementations differ only in how the staging table is filled (:meth:`WarehouseLoader._stage`)
and how an interval is locked (:meth:`WarehouseLoader._lock_statements`).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from lambdalake import lake
from lambdalake.errors import LambdalakeError
from lambdalake.settings import Settings
from warehouse.render import Dialect, render
from warehouse.tables import Interval, LakeTable, WarehouseTable, views, warehouse_table, warehouse_tables

log = logging.getLogger(__name__)

STAGE_PREFIX = "stage_"
# Hive/Glue types of the lake files -> Redshift types of the staging table (rendered per dialect).
_STAGE_TYPES = {
    "string": "VARCHAR(65535)",
    "int": "INTEGER",
    "smallint": "SMALLINT",
    "bigint": "BIGINT",
    "double": "DOUBLE PRECISION",
    "float": "REAL",
    "boolean": "BOOLEAN",
    "timestamp": "TIMESTAMP",
    "date": "DATE",
}


class LoadError(LambdalakeError):
    """A load that was rolled back: the target table holds what it held before."""


@dataclass(frozen=True)
class LoadResult:
    table: str
    interval: str
    rows: int
    files: int
    seconds: float


def stage_type(lake_type: str) -> str:
    """The staging column type for a lake column: nested values (arrays, structs, maps) are SUPER."""
    if lake_type.startswith(("array<", "struct<", "map<")):
        return "SUPER"
    if lake_type.startswith("decimal"):
        return lake_type.upper()
    return _STAGE_TYPES[lake_type]


def stage_name(table: WarehouseTable) -> str:
    return f"{STAGE_PREFIX}{table.name}"


def stage_ddl(table: WarehouseTable) -> str:
    """Staging columns are the lake file's columns in file order (Redshift COPY maps Parquet by position)."""
    assert table.source is not None
    columns = ",\n".join(f"    {quote(c.name)} {stage_type(c.type)}" for c in table.source.columns)
    return f"CREATE TEMP TABLE {stage_name(table)} (\n{columns}\n)"


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def interval_params(interval: Interval) -> dict[str, object]:
    """Values of the ``{interval_start}`` / ``{interval_end}`` placeholders (none for a full reload)."""
    if interval.grain == "full":
        return {}
    start, end = interval.bounds()
    return {"interval_start": start, "interval_end": end}


def _in_interval(expression: str) -> str:
    return f"{expression} >= {{interval_start}} AND {expression} < {{interval_end}}"


def check_sql(table: WarehouseTable, interval: Interval) -> str | None:
    """Counts staged rows outside the interval: a file in the wrong partition must not be published."""
    if interval.grain == "full" or table.interval_column is None or table.source is None:
        return None
    expression = table.column(table.interval_column).source_sql
    inside = _in_interval(expression)
    return f"SELECT COUNT(*) FROM {stage_name(table)} WHERE {expression} IS NULL OR NOT ({inside})"


def merge_sql(table: WarehouseTable, interval: Interval) -> str:
    """Delete the interval from the target and insert the staged rows (Redshift SQL, two statements,
    placeholders bound from :func:`interval_params`)."""
    if table.merge_sql is not None:
        return table.merge_sql
    if interval.grain == "full" or table.interval_column is None:
        delete = f"DELETE FROM {table.name}"
    else:
        delete = f"DELETE FROM {table.name} WHERE {_in_interval(table.interval_column)}"
    names = ", ".join(c.name for c in table.columns)
    exprs = ",\n    ".join(f"{c.source_sql} AS {c.name}" for c in table.columns)
    insert = f"INSERT INTO {table.name} ({names})\nSELECT\n    {exprs}\nFROM {stage_name(table)}"
    return f"{delete};\n{insert};"


def data_files(table: LakeTable, interval: Interval, settings: Settings) -> list[tuple[str, int]]:
    """(URI, size) of the interval's data files; Spark's ``_SUCCESS`` and hidden files are not data."""
    prefix = lake.join(settings.lake_uri, table.interval_prefix(interval))
    return [
        (uri, size)
        for uri, size in lake.list_files(prefix + "/", settings)
        if uri.endswith(table.file_suffix) and not uri.rsplit("/", 1)[-1].startswith(("_", "."))
    ]


class WarehouseLoader(ABC):
    """Loads curated lake tables into the warehouse, one interval per transaction."""

    dialect: ClassVar[Dialect]

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # --- what implementations provide ---------------------------------------------------------
    @abstractmethod
    def connect(self) -> Any:
        """A new DB-API connection with ``search_path`` set to the warehouse schema, not in autocommit."""

    @abstractmethod
    def _stage(
        self, cursor: Any, table: WarehouseTable, interval: Interval, files: list[tuple[str, int]]
    ) -> int:
        """Fill the (already created) staging table from the files; returns the rows staged."""

    @abstractmethod
    def _lock_statements(self, table: WarehouseTable, interval: Interval) -> list[str]:
        """Statements that serialize loads which would touch the same rows."""

    # --- shared -------------------------------------------------------------------------------
    def render(self, sql: str, params: dict[str, object] | None = None) -> list[str]:
        return render(sql, self.dialect, params)

    def schema_statements(self) -> list[str]:
        """Idempotent DDL: schema, every table (sources first), every BI view."""
        statements = [f"CREATE SCHEMA IF NOT EXISTS {quote(self.settings.warehouse_schema)}"]
        for table in warehouse_tables().values():
            statements += self.render(table.ddl)
        for view in views().values():
            statements += self.render(view.sql)
        return statements

    def ensure_schema(self) -> None:
        """Create what is missing; the schema is created by whoever runs this first (a lock serializes it)."""
        with self.connect() as conn:
            cursor = conn.cursor()
            for statement in self._schema_lock_statements():
                cursor.execute(statement)
            for statement in self.schema_statements():
                cursor.execute(statement)
            conn.commit()

    def _schema_lock_statements(self) -> list[str]:
        return []

    def load_statements(
        self, table: WarehouseTable, interval: Interval
    ) -> tuple[list[str], str | None, list[str]]:
        """(before staging, the check query, the merge) for one load, in this loader's dialect."""
        before = []
        if table.source is not None:
            before = [f"DROP TABLE IF EXISTS {stage_name(table)}", *self.render(stage_ddl(table))]
        params = interval_params(interval)
        check = check_sql(table, interval)
        merge = self._lock_statements(table, interval) + self.render(merge_sql(table, interval), params)
        return before, (self.render(check, params)[0] if check else None), merge

    def load(
        self, name: str, interval: Interval | None = None, *, at: datetime | None = None, conn: Any = None
    ) -> LoadResult:
        """Replace one interval of a table with the lake's files for it (``at``: the interval holding it).

        ``conn`` reuses an open connection (one transaction per load all the same)."""
        table = warehouse_table(name)
        if interval is None:
            if at is None and table.grain != "full":
                raise ValueError(f"{name} is loaded per {table.grain}: give the interval or a time in it")
            interval = table.interval_for(at) if at is not None else Interval("full")
        if interval.grain != table.grain:
            raise ValueError(f"{name} is loaded per {table.grain}, not per {interval.grain}")
        if conn is None:
            with self.connect() as own:
                return self.load(name, interval, conn=own)
        started = time.perf_counter()
        files = data_files(table.source, interval, self.settings) if table.source is not None else []
        before, check, merge = self.load_statements(table, interval)
        cursor = conn.cursor()
        try:
            for statement in before:
                cursor.execute(statement)
            staged = self._stage(cursor, table, interval, files) if table.source is not None else 0
            if check is not None:
                cursor.execute(check)
                outside = int(cursor.fetchone()[0])
                if outside:
                    raise LoadError(
                        f"{name} {interval.label}: {outside} staged rows lie outside the interval "
                        f"(is a file in the wrong partition?); nothing was published"
                    )
            for statement in merge:
                cursor.execute(statement)
            if table.source is None:
                staged = max(int(cursor.rowcount or 0), 0)
            conn.commit()
        except LoadError:
            conn.rollback()
            raise
        except Exception as exc:
            conn.rollback()
            raise LoadError(f"{name} {interval.label}: load failed and was rolled back: {exc}") from exc
        seconds = time.perf_counter() - started
        log.info(
            "loaded %s %s: %d rows from %d files in %.2fs", name, interval.label, staged, len(files), seconds
        )
        return LoadResult(name, interval.label, staged, len(files), seconds)

    def publish_hour(self, hour: datetime, tables: Iterable[str] | None = None) -> list[LoadResult]:
        """What the hourly DAG calls once an hour's batch views passed their checks: every table's
        interval holding ``hour`` (hourly tables that hour, daily tables its day, dimensions whole),
        sources before the tables derived from them. Each table commits on its own."""
        chosen: Sequence[str] = list(tables) if tables is not None else list(warehouse_tables())
        order = [name for name in warehouse_tables() if name in chosen]
        unknown = set(chosen) - set(order)
        if unknown:
            raise LambdalakeError(f"unknown warehouse tables: {', '.join(sorted(unknown))}")
        with self.connect() as conn:
            return [self.load(name, at=hour, conn=conn) for name in order]
