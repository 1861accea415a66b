"""Post an NDJSON file of events (as `lambdalake generate` writes) to the collector, in batches.

Every non-blank line becomes one element of a request's JSON array, so the collector's counts
cover the whole file: a line that is not even JSON is sent as a JSON *string* holding the line,
which the collector rejects with a reason (it is not an object) and keeps in its dead-letter
stream with the original text, like any other bad event. Only a line too large for any request
is rejected here, without being sent. Blank lines are skipped.

Batches run ``concurrency`` requests at a time, so events of one user may reach the stream out
of file order across batches; ``--concurrency 1`` keeps file order. Transient failures (429, 503,
5xx, network) are retried with backoff and Retry-After; when a batch still fails, sending stops
and the rest of the file is reported as not sent.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import BinaryIO

import orjson

from ingest.producer import BatchOutcome, Delivery, body_size
from lambdalake.errors import LambdalakeError

AUTH_STATUSES = ("HTTP 401", "HTTP 403")
MAX_EXAMPLES = 5
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


@dataclass(frozen=True, slots=True)
class Item:
    """One line of the file, ready to be an element of a request's JSON array."""

    line: int  # 1-based line number in the file
    data: bytes
    raw_bytes: int  # bytes the line took in the file, for progress
    valid_json: bool


def encode_line(line: int, raw: bytes) -> Item | None:
    """The array element for one file line (None for a blank line)."""
    text = raw.strip()
    if not text:
        return None
    try:
        return Item(line, orjson.dumps(orjson.loads(text)), len(raw), True)
    except orjson.JSONDecodeError:
        # Not JSON: send the text as a JSON string so the collector rejects and dead-letters it.
        return Item(line, orjson.dumps(text.decode("utf-8", errors="replace")), len(raw), False)


def read_items(stream: BinaryIO) -> Iterator[Item]:
    for number, raw in enumerate(stream, start=1):
        item = encode_line(number, raw)
        if item is not None:
            yield item


def plan_batches(items: Iterable[Item], max_events: int, max_bytes: int) -> Iterator[list[Item]]:
    """Group items into requests of at most ``max_events`` and ``max_bytes`` (the JSON array's size).

    An item too large for any request comes out alone, for the caller to reject.
    """
    batch: list[Item] = []
    size = 0
    for item in items:
        if batch and (
            len(batch) == max_events or body_size(size + len(item.data), len(batch) + 1) > max_bytes
        ):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += len(item.data)
    if batch:
        yield batch


@dataclass
class SendReport:
    """What became of every line: ``lines == accepted + rejected + not_sent``."""

    lines: int = 0
    invalid_json: int = 0
    accepted: int = 0
    rejected: int = 0
    rejected_locally: int = 0  # part of rejected: too large to send
    not_sent: int = 0  # in a request that failed for good, or after sending stopped
    requests: int = 0
    retries: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)  # the first few rejections, with line numbers
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.not_sent == 0

    def as_dict(self) -> dict[str, object]:
        return {
            "lines": self.lines,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "invalid_json": self.invalid_json,
            "rejected_locally": self.rejected_locally,
            "not_sent": self.not_sent,
            "requests": self.requests,
            "retries": self.retries,
            "failure": self.failure,
            "top_reasons": dict(self.reasons.most_common(MAX_EXAMPLES)),
            "examples": self.examples,
        }


def _reason_kind(reason: str) -> str:
    """A reason without the values it quotes, so counts group (``ts: '2026-13-01' is not ...``)."""
    return _QUOTED.sub("…", reason)[:120]


@dataclass
class Sender:
    """Sends batches concurrently; one Delivery (HTTP pool) per worker thread."""

    endpoint: str
    write_key: str
    batch_size: int = 100  # at most the collector's collector_max_events
    max_bytes: int = 1024 * 1024  # the collector's collector_max_body_bytes
    concurrency: int = 4
    max_retries: int = 6
    backoff_base_s: float = 0.2
    backoff_cap_s: float = 10.0
    timeout_s: float = 30.0
    on_progress: Callable[[int, SendReport], None] | None = None  # (file bytes done, report so far)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.concurrency < 1 or self.max_bytes < 3:
            raise LambdalakeError("batch size, concurrency and max bytes must be positive")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._deliveries: list[Delivery] = []

    def _delivery(self) -> Delivery:
        delivery = getattr(self._local, "delivery", None)
        if delivery is None:
            delivery = Delivery(
                self.endpoint,
                self.write_key,
                max_retries=self.max_retries,
                backoff_base_s=self.backoff_base_s,
                backoff_cap_s=self.backoff_cap_s,
                timeout_s=self.timeout_s,
                stop=self._stop,
            )
            self._local.delivery = delivery
            with self._lock:
                self._deliveries.append(delivery)
        return delivery

    def _post(self, batch: list[Item]) -> BatchOutcome:
        if self._stop.is_set():
            return BatchOutcome(size=len(batch), undelivered=list(range(len(batch))), failure="stopped")
        return self._delivery().deliver([item.data for item in batch])

    def send(self, items: Iterable[Item]) -> SendReport:
        """Send every item; returns the counts. Raises LambdalakeError if the write key is refused."""
        report = SendReport()
        done_bytes = 0
        pending: dict[Future[BatchOutcome], list[Item]] = {}

        def settle(future: Future[BatchOutcome]) -> None:
            nonlocal done_bytes
            batch = pending.pop(future)
            outcome = future.result()
            self._record(report, batch, outcome)
            done_bytes += sum(item.raw_bytes for item in batch)
            if self.on_progress:
                self.on_progress(done_bytes, report)

        try:
            with ThreadPoolExecutor(self.concurrency, thread_name_prefix="lambdalake-send") as pool:
                for batch in plan_batches(items, self.batch_size, self.max_bytes):
                    report.lines += len(batch)
                    report.invalid_json += sum(not item.valid_json for item in batch)
                    if len(batch) == 1 and body_size(len(batch[0].data), 1) > self.max_bytes:
                        self._reject_locally(report, batch[0])
                        done_bytes += batch[0].raw_bytes
                        continue
                    if self._stop.is_set():
                        report.not_sent += len(batch)
                        done_bytes += sum(item.raw_bytes for item in batch)
                        continue
                    pending[pool.submit(self._post, batch)] = batch
                    while len(pending) >= 2 * self.concurrency:
                        for future in wait(pending, return_when=FIRST_COMPLETED).done:
                            settle(future)
                while pending:
                    for future in wait(pending, return_when=FIRST_COMPLETED).done:
                        settle(future)
        except BaseException:
            self._stop.set()  # Ctrl-C or a bug: abandon retries rather than hang the exit
            raise
        finally:
            for delivery in self._deliveries:
                delivery.close()
        if report.failure and report.failure.startswith(AUTH_STATUSES):
            raise LambdalakeError(
                f"the collector at {self.endpoint} refused the write key ({report.failure}); "
                "pass --write-key or set LAMBDALAKE_WRITE_KEYS"
            )
        return report

    def _reject_locally(self, report: SendReport, item: Item) -> None:
        report.rejected += 1
        report.rejected_locally += 1
        report.reasons["line too large for a request"] += 1
        if len(report.examples) < MAX_EXAMPLES:
            report.examples.append(
                f"line {item.line}: {len(item.data)} bytes, more than a request may hold ({self.max_bytes})"
            )

    def _record(self, report: SendReport, batch: list[Item], outcome: BatchOutcome) -> None:
        report.requests += outcome.attempts
        report.retries += outcome.retries
        report.accepted += outcome.accepted
        for index, reasons in sorted(outcome.rejected.items()):
            report.reasons.update({_reason_kind(r) for r in reasons})
            if len(report.examples) < MAX_EXAMPLES:
                report.examples.append(f"line {batch[index].line}: {'; '.join(reasons)}")
            if reasons and reasons[0].startswith(AUTH_STATUSES):
                report.failure = reasons[0]
        report.rejected += len(outcome.rejected)
        if outcome.undelivered:
            report.not_sent += len(outcome.undelivered)
            if report.failure is None:
                report.failure = f"lines {batch[0].line}-{batch[-1].line} not delivered: {outcome.failure}"
            self._stop.set()
        if report.failure and report.failure.startswith(AUTH_STATUSES):
            self._stop.set()
