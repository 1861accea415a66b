"""The Kinesis implementation of the stream bus (boto3): kinesalite locally, AWS unchanged."""

from __future__ import annotations

import binascii
import contextlib
import functools
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from lambdalake.settings import Settings
from lambdalake.stream.bus import (
    Position,
    PutOutcome,
    ReadBatch,
    Record,
    ShardInfo,
    StreamError,
    StreamRecord,
    StreamThrottled,
)

# Kinesis limits for one PutRecords call.
MAX_RECORDS_PER_PUT = 500
MAX_BYTES_PER_PUT = 5 * 1024 * 1024
MAX_BYTES_PER_RECORD = 1024 * 1024
RETRYABLE_PUT_ERRORS = frozenset({"ProvisionedThroughputExceededException", "InternalFailure"})


def _epoch_seconds(value: Any) -> float:
    """Response timestamps as epoch seconds: the JSON protocol sends numbers, which botocore's default
    parser turns into timezone-aware datetimes at ≈20 µs a record (half a GetRecords' parse cost)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        from botocore.utils import parse_timestamp

        return float(parse_timestamp(value).timestamp())


_RECORD_FIELDS = frozenset({"SequenceNumber", "ApproximateArrivalTimestamp", "Data", "PartitionKey"})
_READ_FIELDS = frozenset({"Records", "NextShardIterator", "MillisBehindLatest"})


@functools.cache
def _read_parser_factory() -> Any:
    """botocore's parser factory, with GetRecords bodies read by ``ReadParser`` (built on first use:
    importing botocore's parsers takes ≈150 ms, which the producer and collector need not pay)."""
    from botocore.parsers import JSONParser, ResponseParserFactory

    class ReadParser(JSONParser):
        """botocore's JSON-protocol parser, but a GetRecords body of the usual shape is decoded by
        orjson and its records built directly: botocore walks the output shape member by member
        (≈10 µs a record with the stdlib's json, half a reading worker's parse of its stream). Any
        other body — child shards, an unknown field, an error — takes botocore's path; both give the
        same result (tests/unit/test_kinesis_read_parser.py)."""

        def _handle_json_body(self, raw_body: bytes, shape: Any) -> Any:
            if shape is None or shape.name != "GetRecordsOutput" or not raw_body:
                return super()._handle_json_body(raw_body, shape)
            try:
                body = orjson.loads(raw_body)
            except orjson.JSONDecodeError:
                return super()._handle_json_body(raw_body, shape)
            records = body.get("Records") if isinstance(body, dict) else None
            if not isinstance(records, list) or not body.keys() <= _READ_FIELDS:
                return self._parse_shape(shape, body)
            stamp, blob, fields = self._timestamp_parser, self._blob_parser, _RECORD_FIELDS
            out = []
            for r in records:
                if not isinstance(r, dict) or r.keys() != fields:
                    encrypted = isinstance(r, dict) and r.keys() - fields == {"EncryptionType"}
                    if not encrypted or not fields <= r.keys():
                        return self._parse_shape(shape, body)
                record = {
                    "SequenceNumber": r["SequenceNumber"],
                    "ApproximateArrivalTimestamp": stamp(r["ApproximateArrivalTimestamp"]),
                    "Data": blob(r["Data"]),
                    "PartitionKey": r["PartitionKey"],
                }
                if "EncryptionType" in r:
                    record["EncryptionType"] = r["EncryptionType"]
                out.append(record)
            body["Records"] = out
            return body

    class ReadParserFactory(ResponseParserFactory):
        def create_parser(self, protocol_name: str) -> Any:
            if protocol_name == "json":
                return ReadParser(**self._defaults)
            return super().create_parser(protocol_name)

    factory = ReadParserFactory()
    # record data decoded by binascii directly (base64.b64decode wraps it in Python checks)
    factory.set_parser_defaults(timestamp_parser=_epoch_seconds, blob_parser=binascii.a2b_base64)
    return factory


def kinesis_client(
    settings: Settings, timeout: float = 10.0, retries: int = 3, epoch_timestamps: bool = False
) -> Any:
    """A Kinesis client; with ``epoch_timestamps`` its responses carry timestamps as float epoch
    seconds and blobs decoded by ``binascii`` (botocore's documented parser hooks, on a botocore
    session of its own), and GetRecords bodies are read by orjson (``_read_parser_factory``)."""
    import boto3
    import botocore.session
    from botocore.config import Config

    config = Config(
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"max_attempts": retries + 1, "mode": "standard"},
        max_pool_connections=32,
    )
    core = botocore.session.get_session()
    if epoch_timestamps:
        core.register_component("response_parser_factory", _read_parser_factory())
    return boto3.session.Session(botocore_session=core).client(
        "kinesis", endpoint_url=settings.kinesis_endpoint, config=config, **settings.aws_client_kwargs()
    )


def ensure_stream(settings: Settings, name: str, shards: int) -> None:
    """Create the stream if it is missing and wait until it is ACTIVE (idempotent)."""
    client = kinesis_client(settings)
    with contextlib.suppress(client.exceptions.ResourceInUseException):  # exists already
        client.create_stream(StreamName=name, ShardCount=shards)
    client.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 300})


def split_batches(records: Sequence[Record]) -> list[list[int]]:
    """Indexes of records grouped into PutRecords calls within Kinesis's count and size limits."""
    batches: list[list[int]] = []
    current: list[int] = []
    size = 0
    for index, record in enumerate(records):
        record_size = len(record.data) + len(record.partition_key.encode())
        if record_size > MAX_BYTES_PER_RECORD:
            raise ValueError(f"record {index} is {record_size} bytes; Kinesis takes at most 1 MiB")
        if current and (len(current) == MAX_RECORDS_PER_PUT or size + record_size > MAX_BYTES_PER_PUT):
            batches.append(current)
            current, size = [], 0
        current.append(index)
        size += record_size
    if current:
        batches.append(current)
    return batches


def backoff_delay(
    attempt: int, base_s: float, cap_s: float, rng: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with full jitter (AWS architecture blog's recommendation)."""
    return rng() * min(cap_s, base_s * (2**attempt))


def _arrival(value: Any) -> float:
    """A record's arrival time from either client: epoch seconds, or a datetime (a default client)."""
    return value if type(value) is float else float(value.timestamp())


class KinesisBus:
    """StreamBus on Kinesis. Thread-safe: boto3 clients may be shared between threads."""

    def __init__(
        self,
        settings: Settings,
        max_attempts: int = 6,
        backoff_base_s: float = 0.05,
        backoff_cap_s: float = 2.0,
        client: Any = None,
    ) -> None:
        self.settings = settings
        self.client = client or kinesis_client(settings, epoch_timestamps=True)
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s

    def put_records(self, stream: str, records: Sequence[Record]) -> list[PutOutcome]:
        outcomes: list[PutOutcome | None] = [None] * len(records)
        for batch in split_batches(records):
            self._put_batch(stream, records, batch, outcomes)
        return [o for o in outcomes if o is not None]

    def _put_batch(
        self, stream: str, records: Sequence[Record], pending: list[int], outcomes: list[PutOutcome | None]
    ) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        for attempt in range(self.max_attempts):
            entries = [{"Data": records[i].data, "PartitionKey": records[i].partition_key} for i in pending]
            try:
                response = self.client.put_records(StreamName=stream, Records=entries)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code not in RETRYABLE_PUT_ERRORS and code != "LimitExceededException":
                    raise StreamError(f"put_records to {stream} failed: {code or exc}") from exc
                failed = pending
            except BotoCoreError as exc:
                raise StreamError(f"stream {stream} unreachable: {exc}") from exc
            else:
                failed = []
                for index, result in zip(pending, response["Records"], strict=True):
                    if "SequenceNumber" in result:
                        outcomes[index] = PutOutcome(result["ShardId"], result["SequenceNumber"])
                    elif result.get("ErrorCode") in RETRYABLE_PUT_ERRORS:
                        failed.append(index)
                    else:
                        raise StreamError(
                            f"put_records: {result.get('ErrorCode')}: {result.get('ErrorMessage')}"
                        )
            if not failed:
                return
            pending = failed
            if attempt + 1 < self.max_attempts:
                time.sleep(backoff_delay(attempt, self.backoff_base_s, self.backoff_cap_s))
        raise StreamThrottled(
            f"{len(pending)} records still throttled by {stream} after {self.max_attempts} attempts",
            pending,
            retry_after_s=max(1.0, self.backoff_cap_s),
        )

    def list_shards(self, stream: str) -> list[ShardInfo]:
        shards: list[ShardInfo] = []
        kwargs: dict[str, Any] = {"StreamName": stream}
        while True:
            response = self.client.list_shards(**kwargs)
            for shard in response["Shards"]:
                seq = shard["SequenceNumberRange"]
                hashes = shard["HashKeyRange"]
                shards.append(
                    ShardInfo(
                        shard_id=shard["ShardId"],
                        parent_shard_id=shard.get("ParentShardId"),
                        adjacent_parent_shard_id=shard.get("AdjacentParentShardId"),
                        starting_sequence_number=seq["StartingSequenceNumber"],
                        ending_sequence_number=seq.get("EndingSequenceNumber"),
                        hash_key_range=(int(hashes["StartingHashKey"]), int(hashes["EndingHashKey"])),
                    )
                )
            token = response.get("NextToken")
            if not token:
                return shards
            kwargs = {"NextToken": token}

    def shard_iterator(self, stream: str, shard_id: str, position: Position) -> str:
        kwargs: dict[str, Any] = {
            "StreamName": stream,
            "ShardId": shard_id,
            "ShardIteratorType": position.kind,
        }
        if position.sequence_number is not None:
            kwargs["StartingSequenceNumber"] = position.sequence_number
        if position.timestamp is not None:
            kwargs["Timestamp"] = position.timestamp
        return self.client.get_shard_iterator(**kwargs)["ShardIterator"]

    def read(self, shard_id: str, iterator: str, limit: int = 1000) -> ReadBatch:
        response = self.client.get_records(ShardIterator=iterator, Limit=limit)
        records = [
            StreamRecord(
                shard_id=shard_id,
                sequence_number=r["SequenceNumber"],
                partition_key=r["PartitionKey"],
                data=r["Data"],
                arrival_ts=_arrival(r["ApproximateArrivalTimestamp"]),
            )
            for r in response["Records"]
        ]
        return ReadBatch(
            records, response.get("NextShardIterator"), int(response.get("MillisBehindLatest", 0))
        )
