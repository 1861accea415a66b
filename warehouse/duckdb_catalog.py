"""The local Athena: DuckDB views with the Glue tables' names over the lake's own Parquet and CSV files.

Each view casts the files' columns to the types sql/athena/ declares and adds the Hive partition
columns as strings, so a query written for Athena (``WHERE year = '2026' AND hour = '05'``) runs
unchanged. A table without files yet is an empty view with the same columns. Optionally the
warehouse's tables and BI views are mirrored as views over the same files (no load), which is how
the benchmark runs one BI query on both engines.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import duckdb

from lambdalake import lake
from lambdalake.errors import LambdalakeError
from lambdalake.settings import Settings
from warehouse.loader import quote
from warehouse.render import render
from warehouse.tables import LakeTable, lake_tables, views, warehouse_tables

_DUCKDB_TYPES = {
    "string": "VARCHAR",
    "int": "INTEGER",
    "smallint": "SMALLINT",
    "bigint": "BIGINT",
    "double": "DOUBLE",
    "float": "FLOAT",
    "boolean": "BOOLEAN",
    "timestamp": "TIMESTAMP",  # Athena's timestamps are UTC wall time without a zone
    "date": "DATE",
}


def duckdb_type(lake_type: str) -> str | None:
    """The DuckDB type of a lake column; None for nested types, which DuckDB reads from Parquet as is."""
    if lake_type.startswith(("array<", "struct<", "map<")):
        return None
    return _DUCKDB_TYPES[lake_type]


def _local_root(settings: Settings) -> str:
    if not settings.lake_uri.startswith("file://"):
        raise LambdalakeError(
            f"the DuckDB catalog reads a local lake; {settings.lake_uri} is remote: use Athena (profile aws)"
        )
    return settings.lake_uri.removeprefix("file://")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def view_sql(table: LakeTable, settings: Settings) -> str:
    """CREATE VIEW over the table's files (an empty view with its columns when it has none yet)."""
    root = _local_root(settings)
    partitions = table.partition_columns
    has_files = any(
        uri.endswith(table.file_suffix)
        for uri, _ in lake.list_files(lake.join(settings.lake_uri, table.location))
    )
    if not has_files:
        typed = [
            f"CAST(NULL AS {duckdb_type(c.type) or 'JSON'}) AS {quote(c.name)}" for c in table.columns
        ] + [f"CAST(NULL AS VARCHAR) AS {quote(p)}" for p in partitions]
        return f"CREATE OR REPLACE VIEW {table.name} AS SELECT {', '.join(typed)} WHERE FALSE"
    columns = []
    for column in table.columns:
        kind = duckdb_type(column.type)
        name = quote(column.name)
        columns.append(f"CAST({name} AS {kind}) AS {name}" if kind else name)
    columns += [quote(p) for p in partitions]
    files = _literal(f"{root}/{table.location}/**/*{table.file_suffix}")
    if table.format == "parquet":
        hive_types = ", ".join(f"{_literal(p)}: 'VARCHAR'" for p in partitions)
        source = (
            f"read_parquet({files}, hive_partitioning = {str(bool(partitions)).lower()}"
            + (f", hive_types = {{{hive_types}}}" if partitions else "")
            + ", union_by_name = true)"
        )
    else:
        types = ", ".join(
            f"{_literal(c.name)}: {_literal(duckdb_type(c.type) or 'VARCHAR')}" for c in table.columns
        )
        source = f"read_csv({files}, header = true, columns = {{{types}}})"
    return f"CREATE OR REPLACE VIEW {table.name} AS SELECT {', '.join(columns)} FROM {source}"


def warehouse_view_sql(name: str) -> str | None:
    """A warehouse table as a DuckDB view over its lake table (derived tables have none)."""
    table = warehouse_tables()[name]
    if table.source is None:
        return None
    exprs = ", ".join(f"{c.source_sql} AS {c.name}" for c in table.columns)
    return render(f"CREATE OR REPLACE VIEW {name} AS SELECT {exprs} FROM {table.source.name}", "duckdb")[0]


class DuckDBCatalog:
    """An in-process DuckDB with one schema (the Glue database's name) of views over the lake."""

    def __init__(self, settings: Settings, *, warehouse_views: bool = False) -> None:
        self.settings = settings
        self.warehouse_views = warehouse_views
        self.connection = duckdb.connect(":memory:", config={"threads": settings.duckdb_threads})
        self.connection.execute("SET TimeZone = 'UTC'")
        schema = quote(settings.glue_database)
        self.connection.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        self.connection.execute(f"SET schema = {_literal(settings.glue_database)}")
        self.refresh()

    def refresh(self) -> None:
        """(Re)create the views: needed only when a table gets its first files (globs see new ones)."""
        for table in lake_tables().values():
            self.connection.execute(view_sql(table, self.settings))
        if self.warehouse_views:
            for name in warehouse_tables():
                sql = warehouse_view_sql(name)
                if sql is not None:
                    self.connection.execute(sql)
            for view in views().values():
                for statement in render(view.sql, "duckdb"):
                    self.connection.execute(statement)

    def query(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        cursor = self.connection.execute(sql)
        columns = [d[0] for d in cursor.description or []]
        return columns, cursor.fetchall()

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> DuckDBCatalog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
