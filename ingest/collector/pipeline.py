"""What the collector does with a parsed request body: events in, stream records and DLQ records out.

Pure apart from ``Pipeline.ingest``, which writes: accepted events to ``settings.stream_name``
first, then rejected ones to ``settings.dlq_stream_name``, and only then may the caller answer 200.
If either write fails the caller answers 429/503 and the client resends the whole request; events
already written are then written again with the same ``event_id``, which every layer dedupes
(at-least-once in, effectively-once out). A native event sent without ``event_id`` gets a new
uuid4 each time, so only clients that set ``event_id`` get that guarantee across resends.

Per event (native): a shallow copy of what was sent, ``event_id`` filled when absent or null,
``received_at`` stamped (the collector's clock is the only one trusted for it; a client's value is
replaced), PII masked, then validated against the contract. What is validated is exactly what is
written. Segment messages are first mapped (``segment.py``).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from ingest.collector.pii import PiiMasker
from ingest.collector.segment import map_message
from lambdalake.contract import EventValidator, partition_key
from lambdalake.settings import Settings
from lambdalake.stream import Record, StreamBus
from lambdalake.stream.kinesis import MAX_BYTES_PER_RECORD

SOURCE = "collector"
WRITE_KEY_FIELD = "writeKey"
MAX_REASON_CHARS = 300
# Kinesis partition keys are at most 256 characters (UTF-16 code units on the service side).
MAX_PARTITION_KEY_UNITS = 256

Kind = Literal["native", "track", "page", "screen", "identify", "batch"]


class RequestError(Exception):
    """A request the collector refuses as a whole (4xx): nothing from it is written."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


BODY_SHAPE = 'the body must be an event (a JSON object), an array of events, or {"events": [...]}'


def request_items(kind: Kind, document: Any, max_events: int) -> tuple[list[Any], dict[str, Any] | None]:
    """The request's items and, for a Segment batch, its shared context; RequestError for a bad shape."""
    batch_context: dict[str, Any] | None = None
    if kind == "native":
        if isinstance(document, list):
            items = document
        elif isinstance(document, dict):
            if "events" in document:
                items = document["events"]
                if not isinstance(items, list):
                    raise RequestError(400, "bad_shape", '"events" must be an array of events')
            else:
                items = [document]
        else:
            raise RequestError(400, "bad_shape", f"{BODY_SHAPE}; got {type(document).__name__}")
    elif kind == "batch":
        if not isinstance(document, dict) or not isinstance(document.get("batch"), list):
            raise RequestError(400, "bad_shape", 'a Segment batch body is {"batch": [messages...]}')
        items = document["batch"]
        context = document.get("context")
        batch_context = context if isinstance(context, dict) else None
    else:
        if not isinstance(document, dict):
            raise RequestError(400, "bad_shape", f"a Segment {kind} body is one message (a JSON object)")
        items = [document]
    if len(items) > max_events:
        raise RequestError(
            413, "too_many_events", f"{len(items)} events in one request; at most {max_events} are accepted"
        )
    return items, batch_context


def stream_partition_key(event: dict[str, Any]) -> str:
    """The contract's partition key; one too long for Kinesis becomes its SHA-256 (same user, same shard)."""
    key = partition_key(event)
    if len(key) * 2 > MAX_PARTITION_KEY_UNITS and len(key.encode("utf-16-le")) // 2 > MAX_PARTITION_KEY_UNITS:
        return hashlib.sha256(key.encode(errors="surrogatepass")).hexdigest()
    return key


def native_event(item: Any, received_at: str) -> tuple[dict[str, Any] | None, list[str]]:
    """A native item as the event to validate (a stamped copy), or why it cannot be one."""
    if not isinstance(item, dict):
        return None, [f"event: must be a JSON object, got {type(item).__name__}"]
    event = {**item, "received_at": received_at}
    if event.get("event_id") is None:
        event["event_id"] = str(uuid.uuid4())
    return event, []


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Outcome:
    """The per-request result: what to write where, and what to tell the client."""

    request_id: str
    records: list[Record] = field(default_factory=list)
    dead_letters: list[Record] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # first reason of each rejected event

    @property
    def accepted(self) -> int:
        return len(self.records)

    @property
    def rejected(self) -> int:
        return len(self.errors)

    def body(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "rejected": self.rejected, "errors": self.errors}


class Pipeline:
    """Turns request items into stream records (accepted) and DLQ records (rejected), and writes them."""

    def __init__(self, settings: Settings, bus: StreamBus) -> None:
        self.settings = settings
        self.bus = bus
        self.validator = EventValidator(settings.strict_event_types)
        hash_fields = [f.strip() for f in settings.collector_pii_hash_fields.split(",") if f.strip()]
        self.masker = PiiMasker(settings.collector_pii_mask_ip, hash_fields, settings.collector_pii_hash_key)
        self.max_reasons = settings.collector_max_reasons

    def _reasons(self, reasons: list[str]) -> list[str]:
        out = [r if len(r) <= MAX_REASON_CHARS else r[: MAX_REASON_CHARS - 1] + "…" for r in reasons]
        if len(out) > self.max_reasons:
            extra = len(out) - self.max_reasons + 1
            out = [*out[: self.max_reasons - 1], f"… and {extra} more reasons"]
        return out

    def process(
        self,
        route: str,
        kind: Kind,
        items: list[Any],
        received_at: str,
        batch_context: dict[str, Any] | None = None,
    ) -> Outcome:
        """Map, stamp, mask and validate every item; build the records to write. Writes nothing."""
        outcome = Outcome(request_id=uuid.uuid4().hex)
        masker = self.masker
        validate = self.validator.validate
        segment_kind = None if kind in ("native", "batch") else kind
        for index, item in enumerate(items):
            if kind == "native":
                event, reasons = native_event(item, received_at)
            else:
                event, reasons = map_message(item, segment_kind, received_at, batch_context)
                if event is not None:
                    event["received_at"] = received_at
            if event is not None:
                if masker.active:
                    event = masker.mask(event)
                reasons = validate(event)
                if not reasons:
                    data = orjson.dumps(event)
                    key = stream_partition_key(event)
                    if len(data) + len(key.encode()) <= MAX_BYTES_PER_RECORD:
                        outcome.records.append(Record(data, key))
                        continue
                    reasons = [f"event: {len(data)} bytes is too large for the stream (at most 1 MiB)"]
            reasons = self._reasons(reasons)
            outcome.errors.append({"index": index, "reasons": reasons})
            outcome.reasons.append(reasons[0])
            outcome.dead_letters.append(self.dead_letter(route, index, item, reasons, received_at, outcome))
        return outcome

    def dead_letter(
        self, route: str, index: int, item: Any, reasons: list[str], received_at: str, outcome: Outcome
    ) -> Record:
        """A DLQ record: the original item as sent (PII-masked like everything written), why, and when.

        A Segment message's ``writeKey`` (a credential, not data) is left out.
        """
        payload = item
        if isinstance(item, dict):
            if WRITE_KEY_FIELD in item:
                payload = {k: v for k, v in item.items() if k != WRITE_KEY_FIELD}
            if self.masker.active:
                payload = self.masker.mask(payload)
        letter: dict[str, Any] = {
            "source": SOURCE,
            "route": route,
            "received_at": received_at,
            "request_id": outcome.request_id,
            "index": index,
            "reasons": reasons,
            "payload": payload,
        }
        data = orjson.dumps(letter)
        key = outcome.request_id
        if len(data) > MAX_BYTES_PER_RECORD - len(key):
            # Only a payload near the record limit gets here: keep its JSON text's start. Half the
            # room, because embedding JSON text in a JSON string at most doubles it.
            room = (MAX_BYTES_PER_RECORD - len(key) - len(orjson.dumps(reasons)) - 1024) // 2
            letter["payload"] = None
            letter["payload_truncated"] = True
            letter["payload_text"] = orjson.dumps(payload)[:room].decode(errors="ignore")
            data = orjson.dumps(letter)
        return Record(data, key)

    def ingest(
        self,
        route: str,
        kind: Kind,
        items: list[Any],
        batch_context: dict[str, Any] | None = None,
    ) -> Outcome:
        """Process the items, then write accepted events to the stream and rejected ones to the DLQ.

        Raises StreamThrottled / StreamError when a write still fails after the bus's retries.
        """
        outcome = self.process(route, kind, items, now_rfc3339(), batch_context)
        if outcome.records:
            self.bus.put_records(self.settings.stream_name, outcome.records)
        if outcome.dead_letters:
            self.bus.put_records(self.settings.dlq_stream_name, outcome.dead_letters)
        return outcome
