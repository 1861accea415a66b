"""Ad hoc SQL on the warehouse (Redshift / PostgreSQL) or on the lake (Athena / DuckDB), and its output."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

import orjson

from lambdalake.settings import Settings
from warehouse.loader import WarehouseLoader

Engine = Literal["warehouse", "athena"]
Format = Literal["table", "csv", "json"]


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]


def warehouse_loader(settings: Settings) -> WarehouseLoader:
    """The profile's warehouse: Redshift on aws, the local PostgreSQL otherwise."""
    if settings.is_local:
        from warehouse.postgres import PostgresLoader

        return PostgresLoader(settings)
    from warehouse.redshift import RedshiftLoader

    return RedshiftLoader(settings)


def bi_query_params(start_date: date, end_date: date) -> dict[str, object]:
    """Parameters of the ready BI queries (sql/bi/): a half-open date range."""
    return {"start_date": start_date, "end_date": end_date}


def run_query(sql: str, engine: Engine, settings: Settings) -> QueryResult:
    if engine == "warehouse":
        with warehouse_loader(settings).connect() as conn:
            cursor = conn.cursor()
            cursor.execute(sql)
            columns = [d[0] for d in cursor.description or []]
            rows = [tuple(r) for r in cursor.fetchall()] if cursor.description else []
            conn.commit()
        return QueryResult(columns, rows)
    if settings.is_local:
        from warehouse.duckdb_catalog import DuckDBCatalog

        with DuckDBCatalog(settings) as catalog:
            columns, rows = catalog.query(sql)
        return QueryResult(columns, rows)
    from warehouse.athena import athena_query

    return athena_query(sql, settings)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError


def format_result(result: QueryResult, fmt: Format) -> str:
    if fmt == "json":
        records = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
        return orjson.dumps(records, default=_json_default).decode()
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows([[_text(v) for v in row] for row in result.rows])
        return out.getvalue().rstrip("\n")
    cells = [[_text(v) for v in row] for row in result.rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(result.columns)]
    lines = [
        " | ".join(c.ljust(w) for c, w in zip(result.columns, widths, strict=True)),
        "-+-".join("-" * w for w in widths),
    ]
    lines += [" | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    lines.append(f"({len(cells)} row{'s' if len(cells) != 1 else ''})")
    return "\n".join(lines)
