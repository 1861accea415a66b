"""Dead-letter records: what a consumer group writes to its on-failure stream.

One DLQ record per failed stream record (so one large batch never exceeds a record's size
limit), keyed by the original partition key so a user's failures stay in order. The JSON carries
what an operator needs to fix and replay: the source group, stream, shard and sequence range of
the failed slice, the error, the attempt count, and the original data (as JSON when it decodes,
else base64).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson

from lambdalake.consumer.delivery import Failure
from lambdalake.stream.bus import Record, StreamRecord

DLQ_FORMAT_VERSION = 1


def _payload(record: StreamRecord) -> dict[str, Any]:
    try:
        return {"data": orjson.loads(record.data)}
    except orjson.JSONDecodeError:
        return {"data_base64": base64.b64encode(record.data).decode()}


def dead_letter_records(
    failure: Failure, group: str, stream: str, shard_id: str, failed_at: datetime
) -> list[Record]:
    """The DLQ records for a failure, ready for ``put_records``."""
    first, last = failure.records[0].sequence_number, failure.records[-1].sequence_number
    common = {
        "dlq_format": DLQ_FORMAT_VERSION,
        "source": {"group": group, "stream": stream, "shard_id": shard_id},
        "sequence_range": {"first": first, "last": last, "count": len(failure.records)},
        "reason": failure.reason,
        "error": failure.error,
        "error_type": failure.error_type,
        "attempts": failure.attempts,
        "failed_at": failed_at.astimezone(UTC).isoformat(),
    }
    out = []
    for record in failure.records:
        body = {
            **common,
            "record": {
                "sequence_number": record.sequence_number,
                "partition_key": record.partition_key,
                "arrival_ts": record.arrival_ts,
                **_payload(record),
            },
        }
        out.append(Record(orjson.dumps(body), record.partition_key))
    return out
