"""Publishing rows as Parquet files in the lake: cut by size, named by sequence range, replacing.

Everything here is idempotent per record: writing the same records again writes the same names,
and a file that overlaps (same shard, intersecting sequence range) what a flush just published is
an orphan of an earlier, unfinished attempt at the same records, so it is deleted (``layout``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from ingest.delivery.layout import DataFileName
from ingest.delivery.schema import encode_parquet
from lambdalake import lake
from lambdalake.settings import Settings

MIB = 1024 * 1024


class Row(Protocol):
    @property
    def sequence_number(self) -> str: ...
    @property
    def values(self) -> tuple[object, ...]: ...
    @property
    def size(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Published:
    uri: str
    rows: int
    bytes: int


def cut(rows: Sequence[Row], limit_bytes: int) -> list[list[Row]]:
    """Consecutive runs of rows whose input size stays within the limit (at least one row each)."""
    runs: list[list[Row]] = []
    current: list[Row] = []
    size = 0
    for row in rows:
        if current and size + row.size > limit_bytes:
            runs.append(current)
            current, size = [], 0
        current.append(row)
        size += row.size
    if current:
        runs.append(current)
    return runs


class PartitionWriter:
    """Writes one shard's rows into partitions of the lake (a local directory or S3)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base = settings.lake_uri
        self.limit_bytes = int(settings.delivery_buffer_mib * MIB)
        self.compression = settings.delivery_compression

    def publish(self, prefix: str, shard_id: str, rows: Sequence[Row], schema: pa.Schema) -> list[Published]:
        """Write the rows (in sequence order) under ``prefix``; then delete the orphans they replace."""
        ordered = sorted(rows, key=lambda r: int(r.sequence_number))
        written: list[DataFileName] = []
        out: list[Published] = []
        for run in cut(ordered, self.limit_bytes):
            name = DataFileName(shard_id, run[0].sequence_number, run[-1].sequence_number)
            data = encode_parquet([r.values for r in run], schema, self.compression)
            uri = lake.join(self.base, prefix, name.name)
            lake.write_bytes(uri, data, self.settings)
            written.append(name)
            out.append(Published(uri, len(run), len(data)))
        if written:
            self._delete_overlapping(prefix, written)
        return out

    def _delete_overlapping(self, prefix: str, written: list[DataFileName]) -> None:
        keep = {name.name for name in written}
        for uri, _size in lake.list_files(lake.join(self.base, prefix), self.settings, recursive=False):
            other = DataFileName.parse(uri)
            if other is None or other.name in keep:
                continue
            if any(name.overlaps(other) for name in written):
                lake.delete(uri, self.settings)
