"""GetRecords bodies read by orjson give what botocore's own parser gives, whatever their shape."""

from __future__ import annotations

import base64
from typing import Any

import botocore.session
import orjson
import pytest
from botocore.parsers import JSONParser

from lambdalake.stream.kinesis import _read_parser_factory

OUTPUT = (
    botocore.session.get_session().get_service_model("kinesis").operation_model("GetRecords").output_shape
)


def _record(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "SequenceNumber": f"4963{i:040d}",
        "ApproximateArrivalTimestamp": 1764750000.123 + i,
        "Data": base64.b64encode(orjson.dumps({"event_id": str(i), "n": "é" * i})).decode(),
        "PartitionKey": f"user-{i}",
        **extra,
    }


BODIES = {
    "usual": {
        "Records": [_record(i) for i in range(5)],
        "NextShardIterator": "it-2",
        "MillisBehindLatest": 7,
    },
    "empty": {"Records": [], "NextShardIterator": "it-3", "MillisBehindLatest": 0},
    "encrypted": {
        "Records": [_record(1, EncryptionType="KMS")],
        "NextShardIterator": "it",
        "MillisBehindLatest": 0,
    },
    "closed shard": {
        "Records": [_record(1)],
        "MillisBehindLatest": 0,
        "ChildShards": [
            {
                "ShardId": "s-2",
                "ParentShards": ["s-1"],
                "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "9"},
            }
        ],
    },
    "unknown record field": {
        "Records": [_record(1, Future="x")],
        "NextShardIterator": "it",
        "MillisBehindLatest": 0,
    },
    "no iterator": {"Records": [_record(2)]},
    "iso timestamp": {"Records": [_record(3, ApproximateArrivalTimestamp="2026-12-03T09:00:00Z")]},
}


FAST = {"usual", "empty", "encrypted"}


@pytest.mark.parametrize("name", sorted(BODIES))
def test_a_get_records_body_parses_as_botocore_parses_it(name: str) -> None:
    factory = _read_parser_factory()
    fast = factory.create_parser("json")
    general = JSONParser(**factory._defaults)
    assert type(fast) is not JSONParser
    response = {
        "status_code": 200,
        "headers": {"x-amzn-requestid": "r-1"},
        "body": orjson.dumps(BODIES[name]),
    }
    parsed = fast.parse(response, OUTPUT)
    assert parsed == general.parse(response, OUTPUT)
    for record in parsed["Records"]:
        assert type(record["Data"]) is bytes
        assert type(record["ApproximateArrivalTimestamp"]) is float


def test_other_bodies_and_errors_take_botocore_s_path() -> None:
    fast = _read_parser_factory().create_parser("json")
    general = JSONParser(**_read_parser_factory()._defaults)
    for response in (
        {"status_code": 200, "headers": {}, "body": b"not json"},
        {"status_code": 200, "headers": {}, "body": b""},
    ):
        assert fast.parse(response, OUTPUT) == general.parse(response, OUTPUT)
    error = {
        "status_code": 400,
        "headers": {},
        "body": orjson.dumps({"__type": "ExpiredIteratorException", "message": "Iterator expired"}),
    }
    assert fast.parse(error, OUTPUT) == general.parse(error, OUTPUT)
    assert fast.parse(error, OUTPUT)["Error"]["Code"] == "ExpiredIteratorException"
