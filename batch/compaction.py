"""Compaction of the raw zone: a closed hour's many small delivery files become a few large ones.

Delivery cuts a file per shard per flush, so a quiet stream (or months of imported history) leaves
hours of dozens of files holding a few rows each, which every reader then opens one by one. For a
closed hour (delivery wrote its ``_manifest.json``), each shard's consecutive files are merged, in
sequence order, into files of about ``batch_compaction_target_mib``. A merged file is a delivery file
like any other: named ``part-<shard>-<first>-<last>.parquet`` after the sequence range it covers (so
the closer, lake replay and delivery's overlap rule keep working), and it names the files it replaced
in its Parquet key-value metadata (``lambdalake.compacted_from``), which is how a crashed run is
recognised and finished or undone.

Readers list the partition (Spark, the gates, DuckDB, replay, the closer), so the switch is ordered
to keep every row visible at every moment and to make every crash point recoverable:

1. merged files are written to a staging area outside the partition (``raw/_compacted/``), unseen;
2. under delivery's per-hour close lock: each is moved into the partition (from here until step 4 the
   replaced files are visible too: duplicates, which clean_events drops by event_id and which make
   the raw-manifest reconciliation gate fail rather than publish), then the manifest is rewritten
   listing the merged files (one atomic object write), then the replaced files are moved out of the
   partition (``raw/_compacted/``) and deleted by a run ``batch_compaction_grace_hours`` later.

The manifest keeps its ``version``: the hour's content is unchanged, so the batch layer must not
take it for late data (``plan_hour`` reprocesses only a newer version); ``compaction.generation``
counts the rewrites instead. Only files delivery has checkpointed past are merged (a shard's
uncommitted tail may still be re-flushed, and a re-flush deletes every file it overlaps), only hours
delivery does not hold dirty, and only when the partition lists exactly what the manifest does.
"""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ingest.delivery.layout import (
    MANIFEST_NAME,
    RAW_EVENTS,
    DataFileName,
    hour_key,
    hour_partition,
    parse_hour_partition,
    raw_hour_prefix,
)
from ingest.delivery.manifest import FileStat, build_manifest, read_manifest
from lambdalake import lake
from lambdalake.errors import LambdalakeError
from lambdalake.settings import Settings

log = logging.getLogger(__name__)
Progress = Callable[[str], None]
HOUR = timedelta(hours=1)
MIB = 1024 * 1024
COMPACTED_FROM = b"lambdalake.compacted_from"
TRASH = "raw/_compacted"  # outside raw/events: no reader, closer, gate or retention lists it
STAGED, REPLACED = "staged", "replaced"


@dataclass(frozen=True)
class RawFile:
    """A data file of a raw hour, with what its footer says."""

    uri: str
    name: DataFileName
    rows: int
    bytes: int
    sources: tuple[str, ...] = ()  # the files a merged file replaced; () for delivery's own

    @property
    def stat(self) -> FileStat:
        return FileStat(self.name, self.rows, self.bytes)


@dataclass
class HourResult:
    hour: datetime
    state: str  # "compacted", "current" (nothing to merge), "skipped" (see reason)
    files_before: int = 0
    files_after: int = 0
    rows: int = 0
    repaired: int = 0  # leftovers of an interrupted run finished or undone
    reason: str = ""


@dataclass
class CompactionReport:
    hours: list[HourResult] = field(default_factory=list)
    purged: int = 0

    def count(self, state: str) -> int:
        return sum(h.state == state for h in self.hours)


# --- pure planning ------------------------------------------------------------------------------


def plan_runs(files: list[RawFile], target_bytes: int) -> list[list[RawFile]]:
    """Per shard, consecutive files (by sequence) packed up to ``target_bytes``; only runs of 2+ files."""
    by_shard: dict[str, list[RawFile]] = {}
    for f in files:
        by_shard.setdefault(f.name.shard_id, []).append(f)
    runs: list[list[RawFile]] = []
    for shard in sorted(by_shard):
        current: list[RawFile] = []
        size = 0
        for f in sorted(by_shard[shard], key=lambda f: int(f.name.first_sequence)):
            if current and size + f.bytes > target_bytes:
                runs.append(current)
                current, size = [], 0
            current.append(f)
            size += f.bytes
        runs.append(current)
    return [run for run in runs if len(run) > 1]


def merged_name(run: list[RawFile]) -> DataFileName:
    first = min(run, key=lambda f: int(f.name.first_sequence)).name.first_sequence
    last = max(run, key=lambda f: int(f.name.last_sequence)).name.last_sequence
    return DataFileName(run[0].name.shard_id, first, last)


def committed(name: DataFileName, checkpoints: dict[str, str]) -> bool:
    """Whether delivery's checkpoint of the shard is past the file (a shard without a lease is not
    being delivered: nothing will re-flush it)."""
    from lambdalake.consumer.checkpoints import SHARD_END, is_sequence

    checkpoint = checkpoints.get(name.shard_id)
    if checkpoint is None or checkpoint == SHARD_END:
        return True
    return is_sequence(checkpoint) and int(name.last_sequence) <= int(checkpoint)


def rebuilt_manifest(
    manifest: dict[str, Any], hour: datetime, files: list[RawFile], compaction: dict[str, Any] | None
) -> dict[str, Any]:
    """The manifest listing ``files``: everything else (version, closed_at, watermark…) kept as is."""
    fresh = build_manifest(hour, [f.stat for f in files], int(manifest.get("version", 1)), hour, 0, 0)
    out = {**manifest, "rows": fresh["rows"], "files": fresh["files"], "shards": fresh["shards"]}
    if compaction is not None:
        out["compaction"] = compaction
    return out


def trash_at(uri: str) -> datetime | None:
    """When a file under ``raw/_compacted/`` was put there (from its ``at=`` folder)."""
    for part in uri.split("/"):
        if part.startswith("at="):
            try:
                return datetime.strptime(part[3:], "%Y-%m-%dT%H%M%S").replace(tzinfo=UTC)
            except ValueError:
                return None
    return None


# --- the lake and delivery's coordination state -------------------------------------------------


class Delivery:
    """What compaction must respect of delivery: the per-hour close lock, dirty hours, checkpoints."""

    def __init__(self, settings: Settings, redis: Any = None) -> None:
        import redis as redis_lib

        from ingest.delivery.manifest import HourState
        from ingest.delivery.processor import delivery_config
        from lambdalake.consumer.leases import RedisLeaseStore

        self.redis = redis or redis_lib.Redis.from_url(settings.redis_url)
        self.state = HourState(self.redis, settings.delivery_key_prefix)
        config = delivery_config(settings, settings.delivery_group, settings.stream_name)
        self.leases = RedisLeaseStore(self.redis, config.group, config.key_prefix)

    def checkpoints(self) -> dict[str, str]:
        leases, _now = self.leases.list_leases()
        return {lease.shard_id: lease.checkpoint for lease in leases}

    def dirty(self, hour: datetime) -> bool:
        return hour_key(hour) in self.state.dirty()

    @contextmanager
    def locked(self, hour: datetime) -> Iterator[bool]:
        """Delivery's close lock of the hour: while held, no closer rewrites its manifest."""
        key = hour_key(hour)
        token = self.state.lock(key)
        try:
            yield token is not None
        finally:
            if token is not None:
                self.state.unlock(key, token)


def inspect(settings: Settings, hour: datetime) -> tuple[dict[str, Any] | None, dict[str, RawFile]]:
    """The hour's manifest and its partition's data files (read from their footers)."""
    import pyarrow.parquet as pq

    files = {}
    prefix = lake.join(settings.lake_uri, raw_hour_prefix(hour))
    for uri, size in lake.list_files(prefix, settings, recursive=False):
        name = DataFileName.parse(uri)
        if name is None:
            continue
        filesystem, path = lake.filesystem(uri, settings)
        with filesystem.open_input_file(path) as handle:
            meta = pq.ParquetFile(handle).metadata
        kv = meta.metadata or {}
        sources = tuple(orjson.loads(kv[COMPACTED_FROM])) if COMPACTED_FROM in kv else ()
        files[name.name] = RawFile(uri, name, meta.num_rows, size, sources)
    return read_manifest(settings, hour), files


def listed(manifest: dict[str, Any]) -> set[str]:
    return {entry["name"] for entry in manifest.get("files", [])}


def _trash_uri(settings: Settings, now: datetime, run_id: str, kind: str, hour: datetime, name: str) -> str:
    return lake.join(
        settings.lake_uri, TRASH, f"at={now:%Y-%m-%dT%H%M%S}", run_id, kind, hour_partition(hour), name
    )


def _move(settings: Settings, source: str, target: str) -> None:
    """Rename within the lake (a server-side copy + delete on S3)."""
    from pyarrow import fs

    filesystem, src = lake.filesystem(source, settings)
    _, dst = lake.filesystem(target, settings)
    if isinstance(filesystem, fs.LocalFileSystem):
        filesystem.create_dir(dst.rsplit("/", 1)[0], recursive=True)
    filesystem.move(src, dst)


def _write_manifest(settings: Settings, hour: datetime, manifest: dict[str, Any]) -> None:
    uri = lake.join(settings.lake_uri, raw_hour_prefix(hour), MANIFEST_NAME)
    lake.write_bytes(uri, orjson.dumps(manifest, option=orjson.OPT_INDENT_2), settings)


def _merge(settings: Settings, run: list[RawFile]) -> tuple[bytes, int]:
    """One Parquet file of the run's rows, in sequence order, naming the files it replaces."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for f in sorted(run, key=lambda f: int(f.name.first_sequence)):
        filesystem, path = lake.filesystem(f.uri, settings)
        with filesystem.open_input_file(path) as handle:
            tables.append(pq.read_table(handle))
    table = pa.concat_tables(tables, promote_options="default")
    if table.num_rows != sum(f.rows for f in run):
        raise LambdalakeError(f"compaction of {merged_name(run).name}: row count changed while reading")
    sources = sorted(f.name.name for f in run)
    table = table.replace_schema_metadata({COMPACTED_FROM: orjson.dumps(sources)})
    sink = io.BytesIO()
    compression = settings.delivery_compression
    pq.write_table(table, sink, compression=None if compression == "none" else compression)
    return sink.getvalue(), table.num_rows


# --- one hour -------------------------------------------------------------------------------------


class Compactor:
    """Compacts hours one at a time; ``now`` names the trash folder and decides what the purge deletes."""

    def __init__(self, settings: Settings, now: datetime, delivery: Delivery | None = None) -> None:
        self.settings = settings
        self.now = now.astimezone(UTC)
        self.delivery = delivery or Delivery(settings)
        self.run_id = uuid.uuid4().hex[:12]
        self.target_bytes = int(settings.batch_compaction_target_mib * MIB)
        self._checkpoints: dict[str, str] | None = None

    @property
    def checkpoints(self) -> dict[str, str]:
        if self._checkpoints is None:
            self._checkpoints = self.delivery.checkpoints()
        return self._checkpoints

    def retire(self, hour: datetime, f: RawFile) -> None:
        """Take a replaced file out of the partition: into the trash, or gone when there is no grace."""
        if self.settings.batch_compaction_grace_hours <= 0:
            lake.delete(f.uri, self.settings)
        else:
            target = _trash_uri(self.settings, self.now, self.run_id, REPLACED, hour, f.name.name)
            _move(self.settings, f.uri, target)

    def repair(self, hour: datetime, manifest: dict[str, Any], files: dict[str, RawFile]) -> int:
        """Finish or undo what an interrupted run left (called under the hour's lock); returns the
        number of files dealt with."""
        names, in_manifest = set(files), listed(manifest)
        done = 0
        drop: set[str] = set()
        for f in [f for f in files.values() if f.sources]:
            sources = set(f.sources)
            if f.name.name not in in_manifest:
                if sources <= names and sources <= in_manifest:  # moved in, manifest not switched yet
                    lake.delete(f.uri, self.settings)
                    done += 1
                continue
            for name in sorted(sources & names):  # switched, replaced files not moved out yet
                self.retire(hour, files[name])
                drop.add(name)
                done += 1
        if drop & in_manifest:  # a closer listed both copies meanwhile: list the merged ones only
            keep = [f for n, f in files.items() if n in in_manifest and n not in drop]
            _write_manifest(self.settings, hour, rebuilt_manifest(manifest, hour, keep, None))
        return done

    def compact_hour(self, hour: datetime) -> HourResult:
        settings = self.settings
        result = HourResult(hour, "skipped")
        with self.delivery.locked(hour) as held:
            if not held:
                result.reason = "delivery is closing it"
                return result
            manifest, files = inspect(settings, hour)
            if manifest is None:
                result.reason = "not closed by delivery (no manifest)"
                return result
            if self.delivery.dirty(hour):
                result.reason = "delivery wrote files not in its manifest yet"
                return result
            result.repaired = self.repair(hour, manifest, files)
            if result.repaired:
                manifest, files = inspect(settings, hour)
                assert manifest is not None
        problem = self.inconsistency(manifest, files)
        result.files_before = result.files_after = len(files)
        result.rows = sum(f.rows for f in files.values())
        if problem:
            result.reason = problem
            return result
        settled = [f for f in files.values() if committed(f.name, self.checkpoints)]
        runs = plan_runs(settled, self.target_bytes)
        if not runs:
            result.state = "current"
            return result
        staged = self.stage(hour, runs)
        with self.delivery.locked(hour) as held:
            if not held or inspect(settings, hour) != (manifest, files) or self.delivery.dirty(hour):
                for uri, _f in staged:
                    lake.delete(uri, settings)
                result.reason = "delivery changed the hour meanwhile"
                return result
            merged = self.switch(hour, manifest, files, staged, runs)
        result.state = "compacted"
        result.files_after = len(files) - sum(len(r) for r in runs) + len(merged)
        return result

    @staticmethod
    def inconsistency(manifest: dict[str, Any], files: dict[str, RawFile]) -> str:
        """Why the partition and its manifest disagree (then the hour is left alone), or ''."""
        names, in_manifest = set(files), listed(manifest)
        if names - in_manifest:
            return f"{len(names - in_manifest)} files not in the manifest (late data not closed yet?)"
        if in_manifest - names:
            return f"the manifest lists {len(in_manifest - names)} missing files"
        if int(manifest.get("rows", -1)) != sum(f.rows for f in files.values()):
            return "the manifest's row count differs from its files'"
        return ""

    def stage(self, hour: datetime, runs: list[list[RawFile]]) -> list[tuple[str, RawFile]]:
        """Step 1: the merged files, written where no reader looks."""
        out = []
        for run in runs:
            name = merged_name(run)
            data, rows = _merge(self.settings, run)
            uri = _trash_uri(self.settings, self.now, self.run_id, STAGED, hour, name.name)
            lake.write_bytes(uri, data, self.settings)
            final = lake.join(self.settings.lake_uri, raw_hour_prefix(hour), name.name)
            sources = tuple(sorted(f.name.name for f in run))
            out.append((uri, RawFile(final, name, rows, len(data), sources)))
        return out

    def switch(
        self,
        hour: datetime,
        manifest: dict[str, Any],
        files: dict[str, RawFile],
        staged: list[tuple[str, RawFile]],
        runs: list[list[RawFile]],
    ) -> list[RawFile]:
        """Step 2, under the lock: merged files in, the manifest rewritten, replaced files out."""
        merged = []
        for uri, f in staged:
            _move(self.settings, uri, f.uri)
            merged.append(f)
        replaced = {f.name.name for run in runs for f in run}
        keep = [f for n, f in files.items() if n not in replaced] + merged
        previous = manifest.get("compaction") or {}
        compaction = {
            "generation": int(previous.get("generation", 0)) + 1,
            "compacted_at": self.now.isoformat(),
            "files_replaced": int(previous.get("files_replaced", 0)) + len(replaced),
        }
        _write_manifest(self.settings, hour, rebuilt_manifest(manifest, hour, keep, compaction))
        for run in runs:
            for f in run:
                self.retire(hour, f)
        return merged

    def purge(self) -> int:
        """Delete what the trash has held longer than the grace period (replaced and stale staged files)."""
        grace = timedelta(hours=self.settings.batch_compaction_grace_hours)
        deleted = 0
        for uri, _size in lake.list_files(lake.join(self.settings.lake_uri, TRASH) + "/", self.settings):
            at = trash_at(uri)
            if at is not None and at + grace <= self.now and f"/{self.run_id}/" not in uri:
                lake.delete(uri, self.settings)
                deleted += 1
        return deleted


# --- an interval ------------------------------------------------------------------------------------


def closed_hours(settings: Settings, start: datetime, end: datetime) -> list[datetime]:
    """Hours of [start, end) whose raw manifest exists, listing one day at a time."""
    found: set[datetime] = set()
    day = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    while day < end:
        prefix = lake.join(settings.lake_uri, RAW_EVENTS, f"year={day:%Y}/month={day:%m}/day={day:%d}")
        for uri, _size in lake.list_files(prefix + "/", settings):
            if uri.endswith("/" + MANIFEST_NAME):
                hour = parse_hour_partition(uri)
                if hour is not None and start <= hour < end:
                    found.add(hour)
        day += timedelta(days=1)
    return sorted(found)


def compact_hours(
    settings: Settings,
    start: datetime,
    end: datetime,
    now: datetime | None = None,
    progress: Progress = lambda _msg: None,
    delivery: Delivery | None = None,
) -> CompactionReport:
    """Compact every closed hour of [start, end), then purge the trash older than the grace period."""
    compactor = Compactor(settings, now or datetime.now(UTC), delivery)
    report = CompactionReport()
    hours = closed_hours(settings, start.astimezone(UTC), end.astimezone(UTC))
    progress(f"compaction {start:%Y-%m-%dT%H} .. {end:%Y-%m-%dT%H}: {len(hours)} closed hours")
    for hour in hours:
        result = compactor.compact_hour(hour)
        report.hours.append(result)
        label = f"{hour:%Y-%m-%dT%H}"
        repaired = f" (finished {result.repaired} files of an interrupted run)" if result.repaired else ""
        if result.state == "compacted":
            progress(
                f"{label}: {result.files_before} files -> {result.files_after}, {result.rows} rows{repaired}"
            )
        elif result.state == "current":
            progress(f"{label}: nothing to merge ({result.files_before} files){repaired}")
        else:
            progress(f"{label}: skipped, {result.reason}{repaired}")
    report.purged = compactor.purge()
    progress(
        f"compaction done: {report.count('compacted')} compacted, {report.count('current')} up to date, "
        f"{report.count('skipped')} skipped; {report.purged} replaced files past their grace period deleted"
    )
    return report
