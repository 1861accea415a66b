"""One renderer: SQL written for Redshift, rendered for Redshift, PostgreSQL (local warehouse) or DuckDB.

Statements are parsed with sqlglot's redshift dialect and rewritten where the targets differ:

- ``DISTSTYLE``/``DISTKEY`` are dropped (one node has nothing to distribute);
- a ``SORTKEY`` becomes an index on the same columns: BRIN when the leading column is a timestamp
  or date (the PostgreSQL analogue of Redshift's zone maps), B-tree otherwise;
- ``ENCODE`` is dropped (PostgreSQL compresses with TOAST on its own);
- ``SUPER`` becomes ``JSONB`` (PostgreSQL) or ``JSON`` (DuckDB);
- ``JSON_EXTRACT_PATH_TEXT`` over text gets a ``::json`` cast that PostgreSQL needs;
- ``APPROXIMATE COUNT(DISTINCT x)`` becomes an exact ``COUNT(DISTINCT x)`` on PostgreSQL.

Parameters are ``{name}`` placeholders bound to typed SQL literals by :func:`bind` before parsing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from functools import lru_cache
from typing import Literal

import sqlglot
from sqlglot import exp

Dialect = Literal["redshift", "postgres", "duckdb"]
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_TIME_TYPES = {exp.DataType.Type.TIMESTAMP, exp.DataType.Type.DATE, exp.DataType.Type.TIMESTAMPTZ}


def literal(value: object) -> str:
    """A typed SQL literal for a parameter value."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            raise ValueError("timestamps are bound as naive UTC")
        return f"TIMESTAMP '{value:%Y-%m-%d %H:%M:%S}'"
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"cannot bind a {type(value).__name__} as a SQL literal")


def bind(sql: str, params: Mapping[str, object]) -> str:
    """Replace every ``{name}`` with its literal; a placeholder without a value is an error."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in params:
            raise KeyError(f"SQL parameter {{{name}}} has no value")
        return literal(params[name])

    return _PLACEHOLDER.sub(replace, sql)


def parse(sql: str) -> list[exp.Expression]:
    """Every statement of a Redshift SQL text (raises sqlglot.ParseError on bad SQL)."""
    return [e for e in sqlglot.parse(sql, read="redshift") if e is not None]


def _sort_index(create: exp.Create, sort_columns: list[str]) -> str:
    table = create.this.this if isinstance(create.this, exp.Schema) else create.this
    types = {
        col.name: col.kind.this
        for col in create.find_all(exp.ColumnDef)
        if isinstance(col.kind, exp.DataType)
    }
    method = "brin" if types.get(sort_columns[0]) in _TIME_TYPES else "btree"
    name = f"{table.name}_sortkey"
    columns = ", ".join(sort_columns)
    return f"CREATE INDEX IF NOT EXISTS {name} ON {table.sql('postgres')} USING {method} ({columns})"


def _strip_redshift_storage(create: exp.Create) -> list[str]:
    """Drop DIST*/SORTKEY/ENCODE in place; the sort key columns are returned."""
    sort_columns: list[str] = []
    properties = create.args.get("properties")
    if properties is not None:
        for prop in list(properties.expressions):
            if isinstance(prop, exp.SortKeyProperty):
                keys = prop.this if isinstance(prop.this, list) else [prop.this]
                sort_columns = [k.name for k in keys]
            if isinstance(prop, exp.DistStyleProperty | exp.DistKeyProperty | exp.SortKeyProperty):
                prop.pop()
        if not properties.expressions:
            properties.pop()
    for constraint in list(create.find_all(exp.ColumnConstraint)):
        if isinstance(constraint.args.get("kind"), exp.EncodeColumnConstraint):
            constraint.pop()
    return sort_columns


def _rewrite(node: exp.Expression, dialect: Dialect) -> exp.Expression:
    if isinstance(node, exp.DataType) and node.is_type(exp.DataType.Type.SUPER):
        return exp.DataType.build("JSONB" if dialect == "postgres" else "JSON")
    if dialect == "postgres" and isinstance(node, exp.JSONExtractScalar):
        node.set("this", exp.cast(node.this, exp.DataType.build("JSON")))
        return node
    if dialect == "postgres" and isinstance(node, exp.ApproxDistinct):
        return exp.Count(this=exp.Distinct(expressions=[node.this]))
    return node


def render_statement(statement: exp.Expression, dialect: Dialect) -> list[str]:
    """One parsed Redshift statement as SQL for the dialect (a CREATE TABLE may add an index)."""
    if dialect == "redshift":
        return [statement.sql("redshift", comments=False)]
    statement = statement.copy()
    extra: list[str] = []
    if isinstance(statement, exp.Create) and statement.kind == "TABLE":
        sort_columns = _strip_redshift_storage(statement)
        if sort_columns and dialect == "postgres":
            extra.append(_sort_index(statement, sort_columns))
    statement = statement.transform(_rewrite, dialect)
    return [statement.sql(dialect, comments=False), *extra]


@lru_cache(maxsize=1024)
def _render_text(text: str, dialect: Dialect) -> tuple[str, ...]:
    return tuple(out for statement in parse(text) for out in render_statement(statement, dialect))


def _sentinel(index: int, value: object) -> object:
    """A stand-in of the same SQL type whose text cannot occur elsewhere in a statement."""
    if isinstance(value, datetime):
        return datetime(1001 + index, 2, 3, 4, 5, 6)
    if isinstance(value, date):
        return date(1001 + index, 2, 3)
    if isinstance(value, str):
        return f"__lambdalake_param_{index}__"
    return value


def render(sql: str, dialect: Dialect, params: Mapping[str, object] | None = None) -> list[str]:
    """A Redshift SQL text (one or more statements) as a list of statements for the dialect.

    Parsing costs milliseconds per statement and a backfill renders the same statements for
    thousands of intervals, so a text is rendered once per dialect with typed stand-ins for its
    date, timestamp and string parameters, which are then swapped for the real values."""
    params = params or {}
    stand_ins = {name: _sentinel(i, value) for i, (name, value) in enumerate(params.items())}
    statements = list(_render_text(bind(sql, stand_ins), dialect))
    for name, value in params.items():
        stand_in = stand_ins[name]
        if stand_in is value:
            continue
        fake, real = literal(stand_in), literal(value)
        fake_text, real_text = fake[fake.index("'") :], real[real.index("'") :]
        if not any(fake_text in statement for statement in statements):
            raise ValueError(f"parameter {{{name}}} was lost while rendering for {dialect}")
        statements = [statement.replace(fake_text, real_text) for statement in statements]
    return statements


def render_one(sql: str, dialect: Dialect, params: Mapping[str, object] | None = None) -> str:
    statements = render(sql, dialect, params)
    if len(statements) != 1:
        raise ValueError(f"expected one statement, got {len(statements)}")
    return statements[0]
