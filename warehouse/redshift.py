"""The AWS warehouse: Redshift through redshift-connector, staged with ``COPY`` from the lake on S3.

COPY reads an exact file list (a manifest written next to the lake, one per table and interval)
rather than a prefix: Spark's ``_SUCCESS`` markers and a concurrent writer's half-listed files
never reach a table, and a retried load reads the same files. Columnar COPY maps Parquet columns
by position, which is why staging tables have the lake files' columns in file order. The merge
takes ``LOCK``: Redshift's serializable isolation would otherwise abort one of two concurrent
DELETE+INSERT transactions on a table; with it, loads of one table queue instead of failing.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from lambdalake import lake
from lambdalake.errors import LambdalakeError
from warehouse.loader import WarehouseLoader, stage_name
from warehouse.render import Dialect, literal
from warehouse.tables import Interval, WarehouseTable


def manifest(files: list[tuple[str, int]]) -> bytes:
    """A COPY manifest; columnar formats need each file's ``content_length``."""
    entries = [{"url": uri, "mandatory": True, "meta": {"content_length": size}} for uri, size in files]
    return orjson.dumps({"entries": entries}, option=orjson.OPT_INDENT_2)


class RedshiftLoader(WarehouseLoader):
    """``COPY … FROM 's3://…manifest' IAM_ROLE … MANIFEST`` into a temporary table, then the shared merge."""

    dialect: ClassVar[Dialect] = "redshift"

    def connect(self) -> Any:
        import redshift_connector

        s = self.settings
        conn = redshift_connector.connect(
            host=s.warehouse_host,
            port=s.warehouse_port,
            database=s.warehouse_db,
            user=s.warehouse_user,
            password=s.warehouse_password,
            timeout=int(s.warehouse_connect_timeout_s),
        )
        conn.cursor().execute(f"SET search_path TO {s.warehouse_schema}")
        return conn

    def manifest_uri(self, table: WarehouseTable, interval: Interval) -> str:
        return lake.join(
            self.settings.lake_uri,
            self.settings.redshift_manifest_prefix,
            table.name,
            f"{interval.label}.json",
        )

    def copy_sql(self, table: WarehouseTable, manifest_uri: str) -> str:
        assert table.source is not None
        role = self.settings.redshift_iam_role_arn
        if not role:
            raise LambdalakeError(
                "set LAMBDALAKE_REDSHIFT_IAM_ROLE_ARN: the role Redshift assumes to read the lake"
            )
        if table.source.format == "parquet":
            fmt = "FORMAT AS PARQUET SERIALIZETOJSON"
        else:
            fmt = "FORMAT AS CSV IGNOREHEADER 1 EMPTYASNULL"
        return (
            f"COPY {stage_name(table)} FROM {literal(manifest_uri)} IAM_ROLE {literal(role)} {fmt} MANIFEST"
        )

    def _stage(
        self, cursor: Any, table: WarehouseTable, interval: Interval, files: list[tuple[str, int]]
    ) -> int:
        if not files:
            return 0  # COPY rejects an empty manifest; the merge then empties the interval
        uri = self.manifest_uri(table, interval)
        lake.write_bytes(uri, manifest(files), self.settings)
        cursor.execute(self.copy_sql(table, uri))
        cursor.execute("SELECT pg_last_copy_count()")
        return int(cursor.fetchone()[0])

    def _lock_statements(self, table: WarehouseTable, interval: Interval) -> list[str]:
        return [f"LOCK {table.name}"]
