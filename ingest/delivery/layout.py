"""Where delivery writes in the lake: zone prefixes, hour partitions and file names, in one place.

A data file is named after the shard and the first and last sequence numbers of the rows it holds,
so a retried or replayed flush of the same records writes the same name and replaces the file.
After a crash the runtime may re-cut the same records into different batches; the new file's
sequence range then overlaps the orphan's, and the flush deletes every other file of the same
shard in the partition whose range overlaps (``overlaps``): committed files never overlap, because
the checkpoint only moves past records already in files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

RAW_EVENTS = "raw/events"
ERRORS = "errors"
ERRORS_REPLAY_LEDGER = "errors/_replayed"
MANIFEST_NAME = "_manifest.json"
DATA_SUFFIX = ".parquet"
HOUR = timedelta(hours=1)

_FILE = re.compile(r"^part-(?P<shard>.+)-(?P<first>\d+)-(?P<last>\d+)\.parquet$")
_HOUR_PATH = re.compile(r"year=(\d{4})/month=(\d{2})/day=(\d{2})/hour=(\d{2})")


def hour_of(moment: datetime) -> datetime:
    """The UTC hour a moment falls in."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hour_partition(hour: datetime) -> str:
    hour = hour_of(hour)
    return f"year={hour:%Y}/month={hour:%m}/day={hour:%d}/hour={hour:%H}"


def parse_hour_partition(path: str) -> datetime | None:
    """The hour a partition path (or a file inside it) belongs to."""
    match = _HOUR_PATH.search(path)
    if match is None:
        return None
    year, month, day, hour = (int(g) for g in match.groups())
    return datetime(year, month, day, hour, tzinfo=UTC)


def hour_key(hour: datetime) -> str:
    """A compact, sortable name for an hour (state keys, manifests, CLI)."""
    return f"{hour_of(hour):%Y-%m-%dT%H}"


def parse_hour_key(key: str) -> datetime:
    return datetime.strptime(key, "%Y-%m-%dT%H").replace(tzinfo=UTC)


def raw_hour_prefix(hour: datetime) -> str:
    return f"{RAW_EVENTS}/{hour_partition(hour)}"


def errors_hour_prefix(source: str, hour: datetime) -> str:
    return f"{ERRORS}/source={source}/{hour_partition(hour)}"


def manifest_path(hour: datetime) -> str:
    return f"{raw_hour_prefix(hour)}/{MANIFEST_NAME}"


@dataclass(frozen=True, slots=True)
class DataFileName:
    shard_id: str
    first_sequence: str
    last_sequence: str

    @property
    def name(self) -> str:
        return f"part-{self.shard_id}-{self.first_sequence}-{self.last_sequence}{DATA_SUFFIX}"

    def overlaps(self, other: DataFileName) -> bool:
        """Same shard and intersecting sequence ranges (sequence numbers compare as integers)."""
        return (
            self.shard_id == other.shard_id
            and int(self.first_sequence) <= int(other.last_sequence)
            and int(other.first_sequence) <= int(self.last_sequence)
        )

    @classmethod
    def parse(cls, name: str) -> DataFileName | None:
        """The parts of a data file's name; None for anything else (manifests, temp files)."""
        match = _FILE.match(name.rsplit("/", 1)[-1])
        if match is None:
            return None
        return cls(match["shard"], match["first"], match["last"])


def hours_between(start: datetime, end: datetime) -> list[datetime]:
    """Every hour from the one holding ``start`` up to the one holding ``end``, inclusive."""
    hour, last = hour_of(start), hour_of(end)
    out = []
    while hour <= last:
        out.append(hour)
        hour += HOUR
    return out
