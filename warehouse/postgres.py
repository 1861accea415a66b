"""The local warehouse: PostgreSQL through psycopg, staged with ``COPY FROM STDIN``.

Files are read through the lake's URIs (pyarrow filesystems), one Parquet row group batch at a
time, turned into CSV by pyarrow and streamed into the staging table; nested values (arrays,
structs) travel as JSON text into ``JSONB`` columns.
"""

from __future__ import annotations

import io
from typing import Any, ClassVar

import orjson
import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from lambdalake import lake
from lambdalake.errors import LambdalakeError
from warehouse.loader import WarehouseLoader, quote, stage_name
from warehouse.render import Dialect
from warehouse.tables import Interval, LakeTable, WarehouseTable

BATCH_ROWS = 65_536
_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int32(),
    "smallint": pa.int16(),
    "bigint": pa.int64(),
    "double": pa.float64(),
    "float": pa.float32(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
}


def _is_nested(lake_type: str) -> bool:
    return lake_type.startswith(("array<", "struct<", "map<"))


def _to_json(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return pa.array(
        [None if v is None else orjson.dumps(v).decode() for v in values.to_pylist()], type=pa.string()
    )


def conform(batch: pa.RecordBatch | pa.Table, table: LakeTable, uri: str) -> pa.Table:
    """The lake table's columns in file order with their declared types; nested ones as JSON text."""
    names = set(batch.schema.names)
    missing = [c.name for c in table.columns if c.name not in names]
    if missing:
        raise LambdalakeError(
            f"{uri}: columns {missing} missing (schema drift? see sql/athena/{table.name}/)"
        )
    columns = []
    for column in table.columns:
        values = batch.column(column.name)
        if _is_nested(column.type):
            columns.append(_to_json(values))
        else:
            columns.append(values.cast(_ARROW_TYPES[column.type]))
    return pa.table(columns, names=[c.name for c in table.columns])


def csv_bytes(data: pa.Table) -> bytes:
    """CSV without header: nulls unquoted and empty (NULL to COPY), strings quoted ("" stays empty)."""
    out = io.BytesIO()
    pa_csv.write_csv(data, out, pa_csv.WriteOptions(include_header=False))
    return out.getvalue()


def read_batches(table: LakeTable, uri: str, settings: Any) -> Any:
    """Conformed pyarrow tables of a lake file, a bounded batch at a time."""
    filesystem, path = lake.filesystem(uri, settings)
    if table.format == "parquet":
        with filesystem.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            names = [c.name for c in table.columns if c.name in parquet.schema_arrow.names]
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=names):
                yield conform(batch, table, uri)
        return
    types = {c.name: pa.string() if _is_nested(c.type) else _ARROW_TYPES[c.type] for c in table.columns}
    with filesystem.open_input_stream(path) as stream:
        data = pa_csv.read_csv(stream, convert_options=pa_csv.ConvertOptions(column_types=types))
    yield conform(data, table, uri)


class PostgresLoader(WarehouseLoader):
    """``COPY FROM STDIN`` into a temporary table, then the shared merge, in one transaction."""

    dialect: ClassVar[Dialect] = "postgres"

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            self.settings.warehouse_dsn,
            options=f"-c search_path={self.settings.warehouse_schema}",
            connect_timeout=int(self.settings.warehouse_connect_timeout_s),
        )

    def _stage(
        self, cursor: Any, table: WarehouseTable, interval: Interval, files: list[tuple[str, int]]
    ) -> int:
        assert table.source is not None
        columns = ", ".join(quote(c.name) for c in table.source.columns)
        rows = 0
        with cursor.copy(f"COPY {stage_name(table)} ({columns}) FROM STDIN (FORMAT csv)") as copy:
            for uri, _size in files:
                for batch in read_batches(table.source, uri, self.settings):
                    copy.write(csv_bytes(batch))
                    rows += batch.num_rows
        return rows

    def _lock_statements(self, table: WarehouseTable, interval: Interval) -> list[str]:
        # Same-interval loads must queue: two concurrent delete+insert of one hour would both insert.
        # Derived tables are keyed by user, not time, so any two of their loads may overlap.
        scope = "derived" if table.source is None else interval.label
        key = f"{self.settings.warehouse_schema}.{table.name}"
        return [f"SELECT pg_advisory_xact_lock(hashtext('{key}'), hashtext('{scope}'))"]

    def _schema_lock_statements(self) -> list[str]:
        return [f"SELECT pg_advisory_xact_lock(hashtext('{self.settings.warehouse_schema}'), 0)"]
