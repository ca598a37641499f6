"""A flowtracker exporter that writes one SQLite row per span, through aiosqlite.

Registered in the ``flowtracker.exporters`` entry-point group as ``sqlite``,
so once installed it is selected by name or URL::

    FLOWTRACKER_EXPORTERS=sqlite:///var/lib/app/traces.db   # absolute path
    FLOWTRACKER_EXPORTERS=sqlite://traces.db                # relative path
    FLOWTRACKER_EXPORTERS=sqlite                            # ./flowtracker.db

aiosqlite runs SQLite in a thread of its own, so writes never block the event
loop. Rows are written with ``INSERT OR REPLACE`` on (trace id, span id): a
batch that is retried, or a follow-up record, never duplicates a span.

Example:
    >>> import flowtracker as ft
    >>> from flowtracker.exporters import load_exporter
    >>> tracker = ft.Tracker(exporters=[load_exporter("sqlite", path="traces.db")])
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosqlite
import orjson

__all__ = ("SQLiteExporter",)

_COLUMNS = (
    "trace_id", "span_id", "parent_id", "service", "name", "start_time", "end_time",
    "duration_ms", "status", "tags",
)  # fmt: skip


class SQLiteExporter:
    """Writes every span of every trace as a row of ``table`` in the database at ``path``.

    Args:
        path: The database file; created if missing. Default ``flowtracker.db``.
        table: The table; created if missing. Default ``spans``.
    """

    name = "sqlite"

    def __init__(self, path: str | os.PathLike[str] = "flowtracker.db", table: str = "spans") -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", table):
            raise ValueError(f"not a plain SQL identifier: {table!r}")
        self.path = os.fspath(path)
        self.table = table
        self._db: aiosqlite.Connection | None = None

    @classmethod
    def from_url(cls, url: str) -> SQLiteExporter:
        """``sqlite:///absolute/path.db`` or ``sqlite://relative/path.db``."""
        parts = urlsplit(url)
        path = unquote(parts.netloc + parts.path)
        if not path:
            raise ValueError(f"no database path in {url!r}")
        return cls(path)

    async def _connect(self) -> aiosqlite.Connection:
        if self._db is None:
            db = await aiosqlite.connect(self.path)
            await db.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                "trace_id TEXT NOT NULL, span_id TEXT NOT NULL, parent_id TEXT, service TEXT,"
                " name TEXT NOT NULL, start_time TEXT NOT NULL, end_time TEXT NOT NULL,"
                " duration_ms REAL NOT NULL, status TEXT NOT NULL, tags TEXT,"
                " PRIMARY KEY (trace_id, span_id))"
            )
            self._db = db
        return self._db

    async def export(self, traces: Sequence[Any]) -> None:
        """Inserts the spans of ``traces`` (flowtracker ``Trace`` objects) in one transaction."""
        rows = []
        for trace in traces:
            record = trace.to_dict()
            for span in record["spans"]:
                tags = span.get("tags")
                rows.append((
                    record["trace_id"], span["span_id"], span.get("parent_id"), record.get("service"),
                    span["name"], span["start_time"], span["end_time"], span["duration_ms"],
                    span["status"], orjson.dumps(tags).decode() if tags else None,
                ))  # fmt: skip
        db = await self._connect()
        placeholders = ", ".join("?" * len(_COLUMNS))
        await db.executemany(
            f"INSERT OR REPLACE INTO {self.table} ({', '.join(_COLUMNS)}) VALUES ({placeholders})", rows
        )
        await db.commit()

    async def aclose(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()
