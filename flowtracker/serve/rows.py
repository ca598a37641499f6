"""Store rows: one tuple per span, what the ``spans`` table holds, and the span bodies they keep.

A row's body is the span as it came: the ``Span`` message of an OTLP request
(:func:`~flowtracker._wire.otlp.span_records` makes those rows), or the
wire-format JSON of a span from a JSON Lines file (:func:`rows_of`). The first
byte tells which (``{`` for JSON; a ``Span`` message starts with its trace id's
tag, 0x0a), and :func:`span_dict` reads either back as a wire-format span.

Example:
    >>> rows, bad = rows_of([{"trace_id": "ab" * 16, "service": "web", "spans": [
    ...     {"span_id": "cd" * 8, "name": "GET /", "status": "ok", "duration_ms": 1.0,
    ...      "start_time": "2026-11-20T10:00:00.000000Z", "end_time": "2026-11-20T10:00:00.001000Z"}]}])
    >>> rows[0][:4], bad
    (('abababababababababababababababab', 'cdcdcdcdcdcdcdcd', None, 'web'), 0)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from .._graph.model import STATUSES
from .._wire.names import BLOCKED_EVENT
from .._wire.otlp import TRACE_KEYS, UNKNOWN_SERVICE, SpanRecord, span_from_message, span_times
from .._wire.policy import ExportPolicy

__all__ = ("MAX_MESSAGE", "MAX_STRING", "POLICY", "STATUSES", "Row", "bounded", "rows_of", "span_dict")

#: One span as stored: trace_id, span_id, parent_id, service, name, start_ns,
#: end_ns, status, blocked, body (see the module docstring), extra (the record's trace fields, JSON).
Row = SpanRecord
#: Longest string kept whole (names, attribute values), as flowtracker's own export cuts them.
MAX_STRING = 4096
#: How serve reads spans: strings cut as flowtracker's export cuts them; keys not redacted (a local viewer).
POLICY = ExportPolicy(redact_keys=(), max_string=MAX_STRING)
#: A ``Span`` message larger than this (bytes) is stored as its wire JSON, strings cut.
MAX_MESSAGE = 64 * 1024

_HEX = frozenset("0123456789abcdef")


def rows_of(traces: Iterable[Mapping[str, Any]]) -> tuple[list[Row], int]:
    """Store rows for wire-format traces, and how many spans were not storable.

    A span keeps its own ``service`` when it has one, else takes the trace's
    (``unknown_service`` when neither says). A span without a valid id, name,
    status or times is counted, not stored. The span dicts get ``service`` set
    in place.

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
    for trace in traces:
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
        for span in spans:
            row = _row(trace_id, span, default_service, extra)  # type: ignore[arg-type]
            if row is None:
                bad += 1
                continue
            rows.append(row)
            extra = None  # the record's trace fields ride on its first stored span only
    return rows, bad


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


def span_dict(body: bytes, service: str) -> dict[str, Any]:
    """A stored span body as a wire-format span, ``service`` on it.

    Example:
        >>> span_dict(b'{"span_id":"cdcdcdcdcdcdcdcd","service":"web"}', "web")
        {'span_id': 'cdcdcdcdcdcdcdcd', 'service': 'web'}
    """
    if body[:1] == b"{":
        return orjson.loads(body)  # type: ignore[no-any-return]  # a JSON Lines span, stored with its service
    span = span_from_message(body, POLICY)
    span["service"] = service
    return span


def bounded(rows: list[Row]) -> list[Row]:
    """The rows, each ``Span`` message over :data:`MAX_MESSAGE` bytes replaced by its wire JSON, strings cut.

    Messages are kept as they came and cut only when read; this keeps a
    huge attribute from sitting whole in the store. The list is changed in place.

    Example:
        >>> rows = [("ab" * 16, "cd" * 8, None, "web", "x", 0, 0, "ok", 0, b"{}", None)]
        >>> bounded(rows) == rows
        True
    """
    for index, row in enumerate(rows):
        if len(row[9]) > MAX_MESSAGE:
            rows[index] = (*row[:9], orjson.dumps(span_dict(row[9], row[3])), row[10])
    return rows
