"""The Glue catalog Athena reads, against moto's Glue server: tables as sql/athena/ declares them,
partitions registered per published hour, every call repeatable."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest

from lambdalake.settings import Settings
from tests.conftest import free_port
from warehouse.athena import GlueCatalog, athena_ddl, table_input
from warehouse.tables import lake_tables

pytestmark = pytest.mark.integration

HOUR = datetime(2026, 1, 1, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    port = free_port()
    moto = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client = boto3.client(
                    "glue",
                    endpoint_url=endpoint,
                    region_name="us-east-1",
                    aws_access_key_id="x",
                    aws_secret_access_key="x",
                )
                client.get_databases()
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def catalog(moto_endpoint: str, tmp_path: Path, request: pytest.FixtureRequest) -> GlueCatalog:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        profile="local",
        home=tmp_path,
        lake_uri_override="s3://lambdalake-test-lake",
        glue_endpoint_url=moto_endpoint,
        glue_database=f"lambdalake_{request.node.name[5:30].lower()}",
    )
    catalog = GlueCatalog(settings)
    catalog.ensure()
    return catalog


def test_every_lake_table_is_created_as_declared(catalog: GlueCatalog) -> None:
    glue = catalog.client
    tables = {t["Name"]: t for t in glue.get_tables(DatabaseName=catalog.database)["TableList"]}
    assert set(tables) == set(lake_tables())
    clean = tables["clean_events"]
    assert clean["StorageDescriptor"]["Location"] == "s3://lambdalake-test-lake/clean/events/"
    assert [k["Name"] for k in clean["PartitionKeys"]] == ["year", "month", "day", "hour"]
    assert "ParquetHiveSerDe" in clean["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"]
    orders = tables["orders_v1"]["StorageDescriptor"]["Columns"]
    assert {c["Name"]: c["Type"] for c in orders}["items"].startswith("array<struct<product_id:string")
    sessions = tables["sessions_v1"]
    assert [k["Name"] for k in sessions["PartitionKeys"]] == ["year", "month", "day"]
    promos = tables["reference_promos"]
    assert promos["PartitionKeys"] == []
    assert promos["Parameters"]["skip.header.line.count"] == "1"
    for name, table in lake_tables().items():
        columns = [(c["Name"], c["Type"]) for c in tables[name]["StorageDescriptor"]["Columns"]]
        assert columns == [(c.name, c.type) for c in table.columns], name
        assert f"LOCATION '{tables[name]['StorageDescriptor']['Location']}'" in athena_ddl(
            table, catalog.settings
        )


def test_ensure_is_repeatable_and_brings_tables_up_to_date(catalog: GlueCatalog) -> None:
    stale = table_input(lake_tables()["orders_v1"], catalog.settings)
    stale["StorageDescriptor"]["Columns"] = stale["StorageDescriptor"]["Columns"][:2]
    catalog.client.update_table(DatabaseName=catalog.database, TableInput=stale)
    catalog.ensure()
    columns = catalog.client.get_table(DatabaseName=catalog.database, Name="orders_v1")["Table"]
    assert len(columns["StorageDescriptor"]["Columns"]) == len(lake_tables()["orders_v1"].columns)


def test_a_published_hour_registers_its_hour_and_day_partitions_once(catalog: GlueCatalog) -> None:
    hourly = [n for n, t in lake_tables().items() if t.grain == "hour"]
    daily = [n for n, t in lake_tables().items() if t.grain == "day"]
    assert hourly
    assert daily
    assert catalog.register_partitions(HOUR) == len(hourly) + len(daily)
    assert catalog.partitions("clean_events") == [["2026", "01", "01", "05"]]
    assert catalog.partitions("sessions_v1") == [["2026", "01", "01"]]
    partition = catalog.client.get_partition(
        DatabaseName=catalog.database, TableName="orders_v1", PartitionValues=["2026", "01", "01", "05"]
    )["Partition"]
    location = partition["StorageDescriptor"]["Location"]
    assert location == "s3://lambdalake-test-lake/curated/orders_v1/year=2026/month=01/day=01/hour=05/"

    assert catalog.register_partitions(HOUR) == 0  # a rerun of the hour
    assert catalog.register_partitions(HOUR.replace(hour=6)) == len(hourly)  # same day: daily ones exist
    assert catalog.partitions("clean_events") == [["2026", "01", "01", "05"], ["2026", "01", "01", "06"]]
    assert catalog.partitions("sessions_v1") == [["2026", "01", "01"]]


def test_registering_into_a_missing_table_fails_loudly(catalog: GlueCatalog) -> None:
    catalog.client.delete_table(DatabaseName=catalog.database, Name="orders_v1")
    with pytest.raises(Exception, match="orders_v1"):
        catalog.register_partitions(HOUR, ["orders_v1"])
