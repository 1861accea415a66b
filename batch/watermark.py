"""The batch watermark: which hours the warehouse holds from batch, kept in the warehouse itself.

The serving layer answers hours up to the watermark from batch views and later hours from speed.
Keeping the published hours in the same database as the batch views lets one transaction (one
snapshot) read both consistently. The watermark is contiguous: the latest hour H such that every
hour from the first published one up to H is published and none is being reprocessed, so serving
never answers a hole, nor an hour whose lake files are being rewritten, from batch.

Writes are delete + insert in one transaction (Redshift has no ON CONFLICT), so each is idempotent.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from lambdalake.errors import LambdalakeError
from lambdalake.settings import Settings

HOUR = timedelta(hours=1)
TABLE = "published_hours"


def hour_start(moment: datetime) -> datetime:
    """The UTC hour holding ``moment``; naive datetimes are UTC."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


def contiguous_end(rows: Iterable[tuple[datetime, bool]]) -> datetime | None:
    """The last hour of the run of published, not-reprocessing hours that starts at the first row."""
    last: datetime | None = None
    for hour, reprocessing in sorted(rows):
        hour = hour_start(hour)
        if reprocessing or (last is not None and hour != last + HOUR):
            break
        last = hour
    return last


class Watermark:
    """``lambdalake_meta.published_hours`` in the warehouse (PostgreSQL locally, Redshift on aws)."""

    def __init__(self, settings: Settings, connect: Any = None) -> None:
        self.settings = settings
        if connect is None:
            from warehouse.query import warehouse_loader

            connect = warehouse_loader(settings).connect
        self._connect = connect
        self.table = f"{settings.batch_meta_schema}.{TABLE}"
        self._ready = False

    def ensure(self) -> None:
        """Create the schema and table if missing (every call site may be the first)."""
        if self._ready:
            return
        self._run(
            [
                (f"CREATE SCHEMA IF NOT EXISTS {self.settings.batch_meta_schema}", ()),
                (
                    f"CREATE TABLE IF NOT EXISTS {self.table} ("
                    " hour_start TIMESTAMPTZ NOT NULL PRIMARY KEY,"
                    " manifest_version INTEGER,"
                    " published_at TIMESTAMPTZ,"
                    " reprocessing BOOLEAN NOT NULL)",
                    (),
                ),
            ]
        )
        self._ready = True

    def _run(
        self, statements: list[tuple[str, tuple[Any, ...]]], fetch: bool = False
    ) -> list[tuple[Any, ...]]:
        conn = self._connect()
        try:
            cursor = conn.cursor()
            rows: list[tuple[Any, ...]] = []
            for sql, params in statements:
                cursor.execute(sql, params)
            if fetch:
                rows = [tuple(r) for r in cursor.fetchall()]
            conn.commit()
            return rows
        except Exception as exc:
            conn.rollback()
            raise LambdalakeError(f"batch watermark: {exc}") from exc
        finally:
            conn.close()

    def _upsert(self, hours: Iterable[datetime], version: int | None, reprocessing: bool) -> None:
        self.ensure()
        statements: list[tuple[str, tuple[Any, ...]]] = [(f"LOCK TABLE {self.table}", ())]
        for hour in sorted({hour_start(h) for h in hours}):
            if reprocessing:  # keep the published version: it says what the warehouse holds
                statements.append(
                    (f"UPDATE {self.table} SET reprocessing = TRUE WHERE hour_start = %s", (hour,))
                )
                statements.append(
                    (
                        f"INSERT INTO {self.table} (hour_start, manifest_version, published_at, reprocessing)"
                        f" SELECT %s, NULL, NULL, TRUE WHERE NOT EXISTS"
                        f" (SELECT 1 FROM {self.table} WHERE hour_start = %s)",
                        (hour, hour),
                    )
                )
            else:
                statements.append((f"DELETE FROM {self.table} WHERE hour_start = %s", (hour,)))
                statements.append(
                    (
                        f"INSERT INTO {self.table} (hour_start, manifest_version, published_at, reprocessing)"
                        " VALUES (%s, %s, %s, FALSE)",
                        (hour, version, datetime.now(UTC)),
                    )
                )
        self._run(statements)

    def mark_reprocessing(self, hours: datetime | Iterable[datetime]) -> None:
        """Before an hour's lake files are rewritten: the watermark falls back before it."""
        self._upsert([hours] if isinstance(hours, datetime) else hours, None, reprocessing=True)

    def mark_published(self, hour: datetime, manifest_version: int) -> None:
        """After the hour's batch views passed their gates and were loaded: it may count again."""
        self._upsert([hour], manifest_version, reprocessing=False)

    def published_version(self, hour: datetime) -> int | None:
        """The manifest version the warehouse holds for the hour; None if never published."""
        self.ensure()
        rows = self._run(
            [(f"SELECT manifest_version FROM {self.table} WHERE hour_start = %s", (hour_start(hour),))],
            fetch=True,
        )
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def published_versions(self, start: datetime, end: datetime) -> dict[datetime, int | None]:
        """Published versions of the hours in [start, end) with a row (None while never published)."""
        self.ensure()
        rows = self._run(
            [
                (
                    f"SELECT hour_start, manifest_version FROM {self.table}"
                    " WHERE hour_start >= %s AND hour_start < %s",
                    (hour_start(start), hour_start(end)),
                )
            ],
            fetch=True,
        )
        return {hour_start(h): (None if v is None else int(v)) for h, v in rows}

    def watermark(self) -> datetime | None:
        """The latest hour served from batch (inclusive); None while no hour is."""
        self.ensure()
        rows = self._run(
            [(f"SELECT hour_start, reprocessing FROM {self.table} ORDER BY hour_start", ())], fetch=True
        )
        return contiguous_end((h, bool(r)) for h, r in rows)
