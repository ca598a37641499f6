"""Store rows from wire-format traces: one tuple per span, what the ``spans`` table holds.

Example:
    >>> rows, bad = rows_of([{"trace_id": "ab" * 16, "service": "web", "spans": [
    ...     {"span_id": "cd" * 8, "name": "GET /", "status": "ok", "duration_ms": 1.0,
    ...      "start_time": "2026-11-20T10:00:00.000000Z", "end_time": "2026-11-20T10:00:00.001000Z"}]}])
    >>> rows[0][:4], bad
    (('abababababababababababababababab', 'cdcdcdcdcdcdcdcd', None, 'web'), 0)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from .._wire.names import BLOCKED_EVENT
from .._wire.otlp import TRACE_KEYS, UNKNOWN_SERVICE, span_times
from .queries import STATUSES

__all__ = ("Row", "rows_of")

#: One span as stored: trace_id, span_id, parent_id, service, name, start_ns,
#: end_ns, status, blocked, body (wire JSON), extra (the record's trace fields, JSON).
Row = tuple[str, str, "str | None", str, str, int, int, str, int, bytes, "bytes | None"]

_HEX = frozenset("0123456789abcdef")


def rows_of(
    traces: Iterable[Mapping[str, Any]], times: Sequence[Sequence[tuple[int, int]]] | None = None
) -> tuple[list[Row], int]:
    """Store rows for wire-format traces, and how many spans were not storable.

    A span keeps its own ``service`` when it has one, else takes the trace's
    (``unknown_service`` when neither says). A span without a valid id, name,
    status or times is counted, not stored. The span dicts get ``service`` set
    in place. ``times`` (from the OTLP decoder, which has checked the ids) are
    each span's start and end in nanoseconds: given, nothing is parsed again.

    Example:
        >>> rows, bad = rows_of([{"trace_id": "ab" * 16, "service": "web", "spans": [
        ...     {"span_id": "cd" * 8, "name": "GET /", "status": "ok", "duration_ms": 1.0,
        ...      "start_time": "2026-11-20T10:00:00.000000Z", "end_time": "2026-11-20T10:00:00.001000Z"},
        ...     {"span_id": "nope"}]}])
        >>> rows[0][3], rows[0][5], bad
        ('web', 1795168800000000000, 1)
    """
    rows: list[Row] = []
    bad = 0
    for index, trace in enumerate(traces):
        spans = trace.get("spans")
        if not isinstance(spans, list):
            continue
        trace_id = trace.get("trace_id")
        if not _is_id(trace_id, 32):
            bad += len(spans)
            continue
        default_service = str(trace.get("service") or UNKNOWN_SERVICE)
        fields = {field: trace[field] for field in TRACE_KEYS if trace.get(field)}
        extra = orjson.dumps(fields) if fields else None
        if times is not None:
            for span, (start, end) in zip(spans, times[index], strict=True):
                rows.append(_decoded_row(trace_id, span, default_service, start, end, extra))  # type: ignore[arg-type]
                extra = None
            continue
        for span in spans:
            row = _row(trace_id, span, default_service, extra)  # type: ignore[arg-type]
            if row is None:
                bad += 1
                continue
            rows.append(row)
            extra = None  # the record's trace fields ride on its first stored span only
    return rows, bad


def _decoded_row(
    trace_id: str, span: dict[str, Any], service: str, start: int, end: int, extra: bytes | None
) -> Row:
    span["service"] = service
    events = span.get("events")
    blocked = events is not None and any(event["name"] == BLOCKED_EVENT for event in events)
    return (trace_id, span["span_id"], span.get("parent_id"), service, span["name"], start, end,
            span["status"], int(blocked), orjson.dumps(span), extra)  # fmt: skip


def _row(trace_id: str, span: Any, default_service: str, extra: bytes | None) -> Row | None:
    if not isinstance(span, dict) or not _is_id(span.get("span_id"), 16):
        return None
    parent = span.get("parent_id")
    if parent is not None and not _is_id(parent, 16):
        return None
    name = span.get("name")
    status = span.get("status", "ok")
    if not isinstance(name, str) or status not in STATUSES:
        return None
    try:
        start, end = span_times(span)
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    service = span.get("service")
    if not isinstance(service, str) or not service:
        service = span["service"] = default_service
    events = span.get("events")
    blocked = isinstance(events, list) and any(
        isinstance(event, dict) and event.get("name") == BLOCKED_EVENT for event in events
    )
    return (trace_id, span["span_id"], parent, service, name, start, end, status, int(blocked),
            orjson.dumps(span), extra)  # fmt: skip


def _is_id(value: Any, size: int) -> bool:
    return isinstance(value, str) and len(value) == size and _HEX.issuperset(value) and value != "0" * size
