"""The same delivery code against a real S3 API (moto server): files land under s3://bucket/raw/…,
read back through pyarrow's S3 filesystem, exactly once; the hour manifests are S3 objects too."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from ingest.delivery.layout import hour_key, hour_partition, parse_hour_key
from ingest.delivery.manifest import hour_files, read_manifest
from ingest.delivery.service import DeliveryService
from lambdalake import lake
from lambdalake.settings import Settings
from tests.conftest import free_port
from tests.integration.test_delivery_support import (
    data_files,
    delivery_settings,
    expected_keys,
    generated_lines,
    put_lines,
    raw_keys,
    raw_rows,
    wait_for,
)

pytestmark = pytest.mark.integration

BUCKET = "lambdalake-test-lake"


@pytest.fixture
def moto_endpoint(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    server = Path(sys.executable).with_name("moto_server")
    log = (tmp_path / "moto.log").open("wb")
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )

        def ready() -> bool:
            try:
                client.list_buckets()
            except Exception:  # noqa: BLE001 - not listening yet
                return False
            return True

        wait_for(ready, 30, "moto server")
        client.create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_delivery_writes_to_s3_and_reads_back(engines: Settings, tmp_path: Path, moto_endpoint: str) -> None:
    settings = delivery_settings(
        engines, tmp_path, s3_endpoint_url=moto_endpoint, lake_uri_override=f"s3://{BUCKET}"
    )
    puts = put_lines(settings, generated_lines(800, seed=3, events_per_s=0.2))
    expected = expected_keys(puts)
    service = DeliveryService(settings, archive_errors=False, close_hours=False).start()
    try:
        wait_for(lambda: len(raw_keys(settings)) >= len(expected), 60, "every record in S3")
        wait_for(lambda: bool(service.close_ready()), 15, "hours to close")
    finally:
        service.stop()
        service.join(20)

    uris = [u for u, _ in data_files(settings, "raw/events")]
    assert uris
    assert all(u.startswith(f"s3://{BUCKET}/raw/events/year=2026/month=01/day=01/hour=") for u in uris)
    assert raw_keys(settings) == expected
    # the objects are plain S3 objects any client can read
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="raw/")["Contents"]}
    assert {u.removeprefix(f"s3://{BUCKET}/") for u in uris} <= listed
    assert not [k for k in listed if ".tmp" in k]

    hours = sorted({hour_key(r["ts"]) for r in raw_rows(settings)})
    manifest = read_manifest(settings, parse_hour_key(hours[0]))
    assert manifest is not None
    assert lake.exists(
        lake.join(settings.lake_uri, f"raw/events/{hour_partition(parse_hour_key(hours[0]))}/_manifest.json"),
        settings,
    )
    files = hour_files(settings, parse_hour_key(hours[0]))
    assert manifest["rows"] == sum(f.rows for f in files)
    assert len(manifest["files"]) == len(files)
