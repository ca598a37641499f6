"""What the JSON API asks the store: the trace list with its filters, and one trace.

Pure functions over a SQLite connection (the store runs them on its reader
threads), plus :func:`summary_dict`, the one shape of a trace summary that the
list and the live feed both send.

Example:
    >>> from contextlib import closing
    >>> from flowtracker.serve.schema import open_database
    >>> with closing(open_database(":memory:")) as connection:
    ...     list_traces(connection, Filters())
    []
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import orjson

from .._core.clock import format_rfc3339
from .rows import STATUSES, span_dict

__all__ = (
    "STATUSES",
    "SUMMARY_COLUMNS",
    "Filters",
    "get_trace",
    "list_traces",
    "read_trace",
    "summary_dict",
)

#: The ``traces`` columns a summary is made of, in :func:`summary_dict`'s order.
SUMMARY_COLUMNS = "trace_id, name, service, services, start_ns, end_ns, span_count, status, blocked"


@dataclass(frozen=True)
class Filters:
    """The ``GET /api/traces`` filters (every one optional).

    Attributes:
        service: Traces with at least one span from this service.
        name: Traces whose name (the root span's) contains this, ignoring ASCII case.
        status: Traces of this status (``error`` when any span failed).
        min_duration_ms: Traces at least this long.
        blocked: Only traces in which a span blocked the event loop.
        limit: At most this many, newest first (by start time).
    """

    service: str | None = None
    name: str | None = None
    status: str | None = None
    min_duration_ms: float | None = None
    blocked: bool = False
    limit: int = 100


def summary_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    """A trace summary as the API sends it, from a ``traces`` row (:data:`SUMMARY_COLUMNS`).

    Example:
        >>> summary_dict(("ab" * 16, "GET /", "web", '["db","web"]', 0, 1500000, 2, "ok", 0))["duration_ms"]
        1.5
    """
    trace_id, name, service, services, start_ns, end_ns, span_count, status, blocked = row
    return {
        "trace_id": trace_id,
        "name": name,
        "service": service,
        "services": orjson.loads(services),
        "start_time": format_rfc3339(start_ns),
        "duration_ms": (end_ns - start_ns) / 1e6,
        "span_count": span_count,
        "status": status,
        "blocked": bool(blocked),
    }


def list_traces(connection: sqlite3.Connection, filters: Filters) -> list[dict[str, Any]]:
    """Trace summaries matching ``filters``, newest first (by the trace's start time).

    The list walks the ``traces_list`` index newest first and reads every
    filter inside it, stopping at ``limit``. Two filters can be rare, and then
    a walk would read every trace to find a few: ``service`` walks that
    service's own ``trace_services`` entries instead, and ``name`` first finds
    the matching names in ``names`` (no match: nothing to read), then, when
    they have few traces, reads just those through ``traces_name``.
    """
    where: list[str] = []
    values: list[Any] = []
    index = "traces_list"
    if filters.service is not None:
        source = "trace_services s JOIN traces t ON t.trace_id = s.trace_id"
        where.append("s.service = ?")
        values.append(filters.service)
        order = "s.start_ns"
    else:
        source = "traces t INDEXED BY {index}"
        order = "t.start_ns"
    if filters.name:
        names = _matching_names(connection, filters.name)
        if not names:
            return []
        if len(names) > _MANY_NAMES:  # names unique per trace, say: each trace's name is tested on the walk
            where.append("t.name LIKE ? ESCAPE '\\'")
            values.append(_like(filters.name))
        else:
            marks = ",".join("?" * len(names))
            where.append(f"t.name IN ({marks})")
            values += names
            counted = connection.execute(f"SELECT count(*) FROM traces WHERE name IN ({marks})", names)
            if counted.fetchone()[0] <= _FEW:
                index = "traces_name"
    if filters.status is not None:
        where.append("t.status = ?")
        values.append(filters.status)
    if filters.min_duration_ms is not None:
        where.append("t.end_ns - t.start_ns >= ?")
        values.append(round(filters.min_duration_ms * 1e6))
    if filters.blocked:
        where.append("t.blocked = 1")
    columns = ", ".join(f"t.{column.strip()}" for column in SUMMARY_COLUMNS.split(","))
    sql = f"SELECT {columns} FROM {source.format(index=index)}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {order} DESC LIMIT ?"
    values.append(filters.limit)
    return [summary_dict(row) for row in connection.execute(sql, values)]


#: Traces of the matching names at most for which reading them all (and sorting) beats walking the list.
_FEW = 20_000
#: Matching names at most that are looked up by name; past it each trace's name is tested instead.
_MANY_NAMES = 500


def _matching_names(connection: sqlite3.Connection, needle: str) -> list[str]:
    """The trace names containing ``needle`` (ASCII case ignored), from the ``names`` table."""
    rows = connection.execute("SELECT name FROM names WHERE name LIKE ? ESCAPE '\\'", (_like(needle),))
    return [row[0] for row in rows]


def _like(needle: str) -> str:
    """A LIKE pattern for "contains ``needle``", its wildcards escaped."""
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def read_trace(connection: sqlite3.Connection, trace_id: str) -> dict[str, Any] | None:
    """The trace in the wire format, ``service`` on every span; ``None`` if unknown.

    Spans come in start order. The trace fields of its records (``dropped_spans``,
    ``unfinished_spans``, ``loop_monitor``) are joined: counts add up.
    """
    found = connection.execute("SELECT extra, seq FROM traces WHERE trace_id = ?", (trace_id,)).fetchone()
    if found is None:
        return None
    extra, seq = found
    spans = [
        span_dict(body, service)
        for service, body in connection.execute(
            "SELECT service, body FROM spans WHERE trace_seq = ? ORDER BY start_ns, span_id", (seq,)
        )
    ]
    trace: dict[str, Any] = {"trace_id": trace_id, "spans": spans}
    if extra:
        trace.update(orjson.loads(extra))
    return trace


def get_trace(connection: sqlite3.Connection, trace_id: str) -> bytes | None:
    """:func:`read_trace` as JSON bytes (what ``GET /api/traces/{trace_id}`` answers)."""
    trace = read_trace(connection, trace_id)
    return None if trace is None else orjson.dumps(trace)
