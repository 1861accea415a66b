"""Athena over the lake: Glue database and tables of sql/athena/, partitions registered per published hour.

Tables are created through the Glue API (boto3) from the same schema.yaml the DDL files are checked
against, so ``CREATE EXTERNAL TABLE`` in Athena and the API give one definition. Partitions are
registered explicitly after each published hour, not discovered (no ``MSCK REPAIR``, no crawler):
a partition is visible to Athena exactly when the batch layer has published it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from lambdalake import lake
from lambdalake.errors import LambdalakeError
from lambdalake.settings import Settings
from warehouse.query import QueryResult
from warehouse.tables import LakeTable, lake_tables

_FORMATS: dict[str, dict[str, Any]] = {
    "parquet": {
        "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
        "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
        "SerdeInfo": {"SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"},
    },
    "csv": {
        "InputFormat": "org.apache.hadoop.mapred.TextInputFormat",
        "OutputFormat": "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
        "SerdeInfo": {
            "SerializationLibrary": "org.apache.hadoop.hive.serde2.OpenCSVSerde",
            "Parameters": {"separatorChar": ",", "quoteChar": '"', "escapeChar": "\\"},
        },
    },
}


def athena_ddl(table: LakeTable, settings: Settings) -> str:
    """The table's ``CREATE EXTERNAL TABLE`` with the lake's location filled in."""
    return table.ddl.replace("{lake_uri}", settings.lake_uri)


def _location(settings: Settings, path: str) -> str:
    return lake.join(settings.lake_uri, path) + "/"


def table_input(table: LakeTable, settings: Settings) -> dict[str, Any]:
    """Glue TableInput for a lake table (types are Hive's, as Athena expects)."""
    parameters = {"classification": table.format, "EXTERNAL": "TRUE"}
    if table.format == "csv":
        parameters["skip.header.line.count"] = "1"
    return {
        "Name": table.name,
        "Description": table.description,
        "TableType": "EXTERNAL_TABLE",
        "Parameters": parameters,
        "PartitionKeys": [{"Name": name, "Type": "string"} for name in table.partition_columns],
        "StorageDescriptor": {
            "Columns": [
                {"Name": c.name, "Type": c.type, **({"Comment": c.description} if c.description else {})}
                for c in table.columns
            ],
            "Location": _location(settings, table.location),
            **_FORMATS[table.format],
        },
    }


def partition_input(table: LakeTable, moment: datetime, settings: Settings) -> dict[str, Any]:
    return {
        "Values": list(table.partition_values(moment).values()),
        "StorageDescriptor": {
            "Columns": table_input(table, settings)["StorageDescriptor"]["Columns"],
            "Location": _location(settings, table.partition_path(moment)),
            **_FORMATS[table.format],
        },
    }


class GlueCatalog:
    """The Glue database of the lake's tables (Athena reads it)."""

    def __init__(self, settings: Settings, client: Any = None) -> None:
        import boto3

        self.settings = settings
        self.database = settings.glue_database
        self.client = client or boto3.client(
            "glue", endpoint_url=settings.glue_endpoint_url, **settings.aws_client_kwargs()
        )

    def ensure(self) -> None:
        """Create the database and every table, or bring existing tables up to sql/athena/ (idempotent)."""
        with contextlib.suppress(self.client.exceptions.AlreadyExistsException):
            self.client.create_database(
                DatabaseInput={
                    "Name": self.database,
                    "Description": "lambdalake: raw, clean and curated zones",
                }
            )
        for table in lake_tables().values():
            spec = table_input(table, self.settings)
            try:
                self.client.create_table(DatabaseName=self.database, TableInput=spec)
            except self.client.exceptions.AlreadyExistsException:
                self.client.update_table(DatabaseName=self.database, TableInput=spec)

    def register_partitions(self, hour: datetime, tables: Iterable[str] | None = None) -> int:
        """Register the partitions holding ``hour`` (its hour, or its day for daily tables); returns how
        many were new. Already registered partitions are fine: the hourly DAG reruns hours."""
        known = lake_tables()
        chosen = [known[n] for n in tables] if tables is not None else list(known.values())
        created = 0
        for table in chosen:
            if not table.partition_columns:
                continue
            response = self.client.batch_create_partition(
                DatabaseName=self.database,
                TableName=table.name,
                PartitionInputList=[partition_input(table, hour, self.settings)],
            )
            errors = [
                e
                for e in response.get("Errors", [])
                if e["ErrorDetail"]["ErrorCode"] != "AlreadyExistsException"
            ]
            if errors:
                detail = errors[0]["ErrorDetail"]
                raise LambdalakeError(
                    f"glue: registering {table.name} {hour:%Y-%m-%dT%H} failed: "
                    f"{detail['ErrorCode']}: {detail.get('ErrorMessage', '')}"
                )
            created += 1 - len(response.get("Errors", []))
        return created

    def partitions(self, table: str) -> list[list[str]]:
        """Registered partition values of a table, sorted."""
        paginator = self.client.get_paginator("get_partitions")
        values = [
            p["Values"]
            for page in paginator.paginate(DatabaseName=self.database, TableName=table)
            for p in page["Partitions"]
        ]
        return sorted(values)


def athena_query(sql: str, settings: Settings) -> QueryResult:
    """Run a query on Athena (aws profile) through awswrangler; results go to ``athena_output_uri``."""
    import awswrangler as wr
    import boto3

    session = boto3.Session(
        **{k: v for k, v in settings.aws_client_kwargs().items() if k != "region_name"},
        region_name=settings.aws_region,
    )
    frame = wr.athena.read_sql_query(
        sql,
        database=settings.glue_database,
        workgroup=settings.athena_workgroup,
        s3_output=settings.athena_output_uri or _location(settings, "athena-results"),
        ctas_approach=False,
        boto3_session=session,
    )
    frame = frame.astype(object).where(frame.notna(), None)  # pandas' NaN/NaT are SQL NULLs
    rows = list(frame.itertuples(index=False, name=None))
    return QueryResult([str(c) for c in frame.columns], rows)
