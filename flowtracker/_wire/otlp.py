"""OTLP and the wire format, both ways: the one mapping.

:func:`otlp_request_dict` turns wire-format traces (what :meth:`Trace.to_dict`
returns, or lines of a ``FileExporter`` file) into an OTLP/JSON
``ExportTraceServiceRequest`` (a plain dict: ids as lowercase hex, 64-bit
integers as decimal strings, enums as integers, lowerCamelCase names); the
OTLP exporter sends it, as JSON or as protobuf (``otlp_proto.request_message``).
:func:`traces_from_request` reads any ``ExportTraceServiceRequest`` message
(from flowtracker or from any OpenTelemetry SDK) back into wire-format traces;
:func:`span_records` reads only what a store indexes and keeps each span's
own message, for :func:`span_from_message` to read when the trace is asked
for (``flowtracker serve`` stores those). What flowtracker records survives
the round trip (a property test checks it):

* resource: ``service.name`` (:func:`resource_attributes`), one
  ``resourceSpans`` entry per service with one scope ``flowtracker``; back,
  a trace per service and trace id, ``unknown_service`` when a resource has no name.
* kind: ``server`` → SERVER, ``client`` → CLIENT, ``producer`` / ``consumer``
  likewise, none → INTERNAL (and back).
* times: unix nanoseconds. The end is the start plus ``duration_ms`` (from the
  monotonic clock, exact), and the start carries the sub-microsecond offset
  that makes the end land on ``end_time``'s microsecond: both strings and the
  duration come back exactly.
* tags and event attributes: typed ``AnyValue`` (string, bool, int, double,
  array, kvlist, empty for ``None``); ``dropped_tags`` ↔ ``droppedAttributesCount``.
  An int beyond int64 (the wire allows up to 2**64 - 1) travels as a string:
  OTLP has no wider integer.
* status: ``ok`` ↔ OK; ``error`` ↔ ERROR with ``"Type: message"`` and an
  ``exception`` event (``exception.type`` / ``exception.message``, at the end
  time, last), as the OpenTelemetry semantic conventions record errors;
  ``cancelled`` and ``unfinished`` ↔ UNSET with the attribute ``flowtracker.status``.
  A foreign ERROR span's ``error`` comes from its last ``exception`` event,
  else from its status message.
* loop insight: ``busy_ms`` ↔ the attribute ``flowtracker.busy_ms``,
  ``stalled_ms`` ↔ ``flowtracker.stalled_ms``; events (``event_loop.blocked``
  with its ``stack``) are events.
* trace-level fields go on the trace's first span as ``flowtracker.dropped_spans``,
  ``flowtracker.follow_up``, ``flowtracker.unfinished_spans`` and
  ``flowtracker.loop_monitor``, and come back to the trace.

Example:
    >>> trace = {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "service": "orders", "spans": [
    ...     {"span_id": "00f067aa0ba902b7", "name": "GET /", "kind": "server", "status": "ok",
    ...      "start_time": "2026-11-20T10:00:00.000000Z", "end_time": "2026-11-20T10:00:01.000000Z",
    ...      "duration_ms": 1000.0, "busy_ms": 2.5, "tags": {"http.status_code": 200}}]}
    >>> span = otlp_request_dict([trace])["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    >>> span["kind"], span["endTimeUnixNano"], span["attributes"][0]["value"]
    (2, '1795168801000000000', {'intValue': '200'})
    >>> span["attributes"][1]
    {'key': 'flowtracker.busy_ms', 'value': {'doubleValue': 2.5}}
"""

from __future__ import annotations

import base64
import contextlib
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import orjson

from .._core.clock import format_pair, format_rfc3339, parse_rfc3339
from .._core.version import package_version
from .encode import safe_value
from .names import BLOCKED_EVENT
from .policy import DEFAULT_POLICY, ExportPolicy

__all__ = (
    "EXPORT_METHOD",
    "SCOPE_NAME",
    "SPAN_KINDS",
    "UNKNOWN_SERVICE",
    "Decoded",
    "Records",
    "SpanRecord",
    "any_value",
    "attributes",
    "otlp_request",
    "otlp_request_dict",
    "otlp_span_dict",
    "otlp_trace_spans",
    "resource_attributes",
    "span_from_message",
    "span_records",
    "span_times",
    "trace_attributes",
    "traces_from_request",
)

#: ``SpanKind`` enum values (opentelemetry-proto ``trace.proto``).
SPAN_KINDS = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
_KIND_NAMES = {value: name for name, value in SPAN_KINDS.items() if name != "internal"}
#: ``Status.StatusCode`` enum values.
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2

SCOPE_NAME = "flowtracker"
UNKNOWN_SERVICE = "unknown_service"
#: The gRPC method of OTLP trace export (the receiver serves it, the exporter calls it).
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

#: Span attributes that carry what OTLP has no field for.
STATUS_KEY = "flowtracker.status"
BUSY_KEY = "flowtracker.busy_ms"
STALLED_KEY = "flowtracker.stalled_ms"
#: Trace field -> the attribute it travels as, on the trace's first span.
TRACE_KEYS = {
    "dropped_spans": "flowtracker.dropped_spans",
    "follow_up": "flowtracker.follow_up",
    "unfinished_spans": "flowtracker.unfinished_spans",
    "loop_monitor": "flowtracker.loop_monitor",
}
_TRACE_FIELDS = {key: field for field, key in TRACE_KEYS.items()}
_SPAN_KEYS = {BUSY_KEY: "busy_ms", STALLED_KEY: "stalled_ms"}
_EXCEPTION_KEYS = frozenset({"exception.type", "exception.message"})

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


# ---- wire -> OTLP ----------------------------------------------------------------------------


def resource_attributes(service: str) -> dict[str, Any]:
    """The resource attributes of flowtracker's spans: one builder for OTLP and the OTel bridge.

    Example:
        >>> resource_attributes("orders")["service.name"]
        'orders'
    """
    return {
        "service.name": service,
        "telemetry.sdk.name": SCOPE_NAME,
        "telemetry.sdk.language": "python",
        "telemetry.sdk.version": package_version(),
    }


def otlp_request_dict(traces: Sequence[Mapping[str, Any]], service: str | None = None) -> dict[str, Any]:
    """An OTLP/JSON ``ExportTraceServiceRequest`` for wire-format traces.

    Args:
        traces: Trace dicts as :meth:`Trace.to_dict` returns them.
        service: ``service.name`` for every trace; ``None`` (default) uses each
            trace's own ``service`` (traces are grouped per service).

    Returns:
        A dict that ``orjson.dumps`` turns into a valid OTLP/HTTP JSON body.
    """
    by_service: dict[str, list[Any]] = {}
    for trace in traces:
        name, spans = otlp_trace_spans(trace, service)
        by_service.setdefault(name, []).extend(spans)
    return otlp_request(by_service)


def otlp_trace_spans(
    trace: Mapping[str, Any], service: str | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """The ``service.name`` and the OTLP/JSON spans of one wire-format trace.

    One trace at a time, so an exporter can leave out a trace that fails
    without losing its batch.
    """
    name = str(service or trace.get("service") or UNKNOWN_SERVICE)
    trace_id = str(trace["trace_id"])
    extra = trace_attributes(trace)
    spans = [
        otlp_span_dict(trace_id, span, extra if index == 0 else None)
        for index, span in enumerate(trace.get("spans", ()))
    ]
    return name, spans


def otlp_request(by_service: Mapping[str, list[Any]]) -> dict[str, Any]:
    """An ``ExportTraceServiceRequest`` dict for spans grouped by ``service.name``.

    The spans are put in as they are: OTLP/JSON span dicts, or protobuf
    ``Span`` messages for the protobuf encoding.
    """
    scope = {"name": SCOPE_NAME, "version": package_version()}
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": attributes(resource_attributes(service_name))},
                "scopeSpans": [{"scope": scope, "spans": spans}],
            }
            for service_name, spans in by_service.items()
        ]
    }


def otlp_span_dict(
    trace_id: str, span: Mapping[str, Any], extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """One OTLP/JSON ``Span`` from a wire-format span dict (``extra``: more attributes)."""
    start, end = span_times(span)
    status = span.get("status", "ok")
    tags: dict[str, Any] = dict(span.get("tags") or {})
    if status in ("cancelled", "unfinished"):
        tags[STATUS_KEY] = status
    for key, field in _SPAN_KEYS.items():
        if span.get(field) is not None:
            tags[key] = float(span[field])
    if extra:
        tags.update(extra)
    out: dict[str, Any] = {
        "traceId": trace_id,
        "spanId": str(span["span_id"]),
        "name": str(span.get("name", "")),
        "kind": SPAN_KINDS.get(str(span.get("kind", "internal")), SPAN_KINDS["internal"]),
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(end),
    }
    parent = span.get("parent_id")
    if parent:
        out["parentSpanId"] = str(parent)
    if tags:
        out["attributes"] = attributes(tags)
    if span.get("dropped_tags"):
        out["droppedAttributesCount"] = int(span["dropped_tags"])
    events = [
        _event_dict(event.get("name", ""), parse_rfc3339(event["time"]), event.get("attributes"))
        for event in span.get("events") or ()
    ]
    error = span.get("error")
    if status == "error":
        message = ""
        if isinstance(error, Mapping):
            message = f"{error.get('type', 'Error')}: {error.get('message', '')}"
            events.append(
                _event_dict(
                    "exception",
                    end,
                    {"exception.type": error.get("type", ""), "exception.message": error.get("message", "")},
                )
            )
        out["status"] = {"code": STATUS_ERROR, "message": message} if message else {"code": STATUS_ERROR}
    elif status == "ok":
        out["status"] = {"code": STATUS_OK}
    else:
        out["status"] = {}
    if events:
        out["events"] = events
    return out


def span_times(span: Mapping[str, Any]) -> tuple[int, int]:
    """Start and end of a wire-format span in unix nanoseconds.

    The wall-clock strings hold microseconds, the duration the exact
    nanoseconds: the start gets the sub-microsecond offset (the least one)
    that puts start + duration on ``end_time``'s microsecond, so the strings
    and the duration all come back from OTLP as they were.

    Example:
        >>> span_times({"start_time": "2026-11-20T10:00:00.000000Z",
        ...             "end_time": "2026-11-20T10:00:00.000002Z", "duration_ms": 0.0014})
        (1795168800000000600, 1795168800000002000)
    """
    start = parse_rfc3339(span["start_time"])
    duration = span.get("duration_ms")
    if isinstance(duration, (int, float)) and math.isfinite(duration) and duration >= 0:
        length = round(duration * 1_000_000)
        end_text = span.get("end_time")
        offset = 0
        if isinstance(end_text, str):
            with contextlib.suppress(ValueError):  # an unreadable end: the duration alone decides
                offset = min(max(parse_rfc3339(end_text) - start - length, 0), 999)
        return start + offset, start + offset + length
    return start, max(start, parse_rfc3339(span["end_time"]))


def attributes(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """OTLP ``KeyValue`` list for a tag dict."""
    return [{"key": str(key), "value": any_value(value)} for key, value in values.items()]


def any_value(value: Any) -> dict[str, Any]:
    """A typed OTLP ``AnyValue`` (JSON form) for one tag value.

    Example:
        >>> any_value(True), any_value(1.5)
        ({'boolValue': True}, {'doubleValue': 1.5})
        >>> any_value([1, "a"])
        {'arrayValue': {'values': [{'intValue': '1'}, {'stringValue': 'a'}]}}
    """
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return {"intValue": str(value)}
        return {"stringValue": str(value)}  # wire ints reach 2**64 - 1; OTLP's stop at int64
    if isinstance(value, float):
        if math.isfinite(value):
            return {"doubleValue": value}
        return {"stringValue": str(value)}
    if isinstance(value, str):
        return {"stringValue": value}
    if value is None:
        return {}  # an empty AnyValue: OTLP's "no value"
    if isinstance(value, Mapping):
        return {"kvlistValue": {"values": attributes(value)}}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [any_value(item) for item in value]}}
    return {"stringValue": str(value)}


def _event_dict(name: Any, time_ns: int, values: Mapping[str, Any] | None) -> dict[str, Any]:
    event: dict[str, Any] = {"timeUnixNano": str(time_ns), "name": str(name)}
    if values:
        event["attributes"] = attributes(values)
    return event


def trace_attributes(trace: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes that carry a trace's own fields (put on its first span).

    Example:
        >>> trace_attributes({"trace_id": "ab", "dropped_spans": 2, "loop_monitor": "full"})
        {'flowtracker.dropped_spans': 2, 'flowtracker.loop_monitor': 'full'}
    """
    return {key: trace[field] for field, key in TRACE_KEYS.items() if trace.get(field)}


# ---- OTLP -> wire ----------------------------------------------------------------------------


class Decoded(NamedTuple):
    """What :func:`traces_from_request` read.

    Attributes:
        traces: Wire-format traces, one per service and trace id, in request order.
        spans: Spans accepted.
        rejected: Spans left out (malformed ids); OTLP's ``partial_success``.
        error: Why the first rejected span was left out (``""`` when none was).
    """

    traces: list[dict[str, Any]]
    spans: int
    rejected: int
    error: str


def traces_from_request(request: Any, policy: ExportPolicy | None = None) -> Decoded:
    """Wire-format traces from an OTLP ``ExportTraceServiceRequest`` message.

    Args:
        request: The protobuf message (``otlp_proto.parse_request`` makes one
            from an HTTP body, gRPC hands one over).
        policy: Strings (names, attribute values) longer than its
            ``max_string`` are cut and marked, as flowtracker's export cuts
            them; ``None`` (default) keeps everything as it came.

    Example:
        >>> from flowtracker._wire.otlp_proto import request_message
        >>> trace = {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "service": "orders", "spans": [
        ...     {"span_id": "00f067aa0ba902b7", "name": "GET /", "status": "cancelled",
        ...      "start_time": "2026-11-20T10:00:00.000000Z", "end_time": "2026-11-20T10:00:01.000000Z",
        ...      "duration_ms": 1000.0}]}
        >>> traces_from_request(request_message(otlp_request_dict([trace]))).traces == [trace]
        True
    """
    reader = _Reader(policy)
    out: dict[tuple[str, bytes], dict[str, Any]] = {}
    accepted = 0
    read_span = reader.span
    for service, span in reader.valid_spans(request):
        trace_id = span.trace_id
        trace = out.get((service, trace_id))
        if trace is None:
            trace = out[(service, trace_id)] = {"trace_id": trace_id.hex(), "service": service, "spans": []}
        trace["spans"].append(read_span(span, trace))
        accepted += 1
    return Decoded(list(out.values()), accepted, reader.rejected, reader.error)


#: One span as :func:`span_records` indexes it: trace_id, span_id, parent_id (hex; the parent
#: ``None`` for a root), service, name, start_ns, end_ns, status, blocked (0 or 1), the span's
#: own ``Span`` message (bytes), and the trace fields of its service's record of the trace
#: (JSON; once per record, on the first span with a ``flowtracker.*`` attribute, else ``None``).
SpanRecord = tuple[str, str, "str | None", str, str, int, int, str, int, bytes, "bytes | None"]


class Records(NamedTuple):
    """What :func:`span_records` read: the records, then as :class:`Decoded` says."""

    records: list[SpanRecord]
    rejected: int
    error: str


def span_records(request: Any, policy: ExportPolicy | None = None) -> Records:
    """Each span of an ``ExportTraceServiceRequest`` as a flat record, its message kept as bytes.

    What a store indexes (ids, service, name, times, status, "blocked the
    loop") is read as :func:`traces_from_request` reads it; the rest of the
    span stays in its ``Span`` message, read by :func:`span_from_message`
    only when someone asks for the trace. Reading every attribute of every
    span into a dict cost a store three quarters of its ingest time.

    Example:
        >>> from flowtracker._wire.otlp_proto import request_message
        >>> span = {"span_id": "00f067aa0ba902b7", "name": "charge", "status": "error", "duration_ms": 5.0,
        ...         "start_time": "2026-11-20T10:00:00.000000Z", "end_time": "2026-11-20T10:00:00.005000Z",
        ...         "error": {"type": "ValueError", "message": "card declined"}}
        >>> trace = {"trace_id": "ab" * 16, "service": "pay", "spans": [span]}
        >>> request = request_message(otlp_request_dict([trace]))
        >>> record = span_records(request).records[0]
        >>> record[1:8]
        ('00f067aa0ba902b7', None, 'pay', 'charge', 1795168800000000000, 1795168800005000000, 'error')
        >>> span_from_message(record[9]) == span
        True
    """
    reader = _Reader(policy)
    records: list[SpanRecord] = []
    append = records.append
    fields: dict[tuple[str, bytes], tuple[int, dict[str, Any]]] = {}
    for service, span in reader.valid_spans(request):
        message = span.SerializeToString()
        status = "ok"
        if b"flowtracker." in message:  # only then can an attribute say more (a cheap test in C)
            key = (service, span.trace_id)
            if key not in fields:
                fields[key] = (len(records), {})
            status = reader.marks(span, fields[key][1])
        if span.status.code == STATUS_ERROR:
            status = "error"
        parent = span.parent_span_id
        start = span.start_time_unix_nano
        end = span.end_time_unix_nano
        append((
            span.trace_id.hex(), span.span_id.hex(), parent.hex() if parent else None, service,
            reader.name(span.name), start, end if end > start else start, status,
            1 if span.events and any(event.name == BLOCKED_EVENT for event in span.events) else 0,
            message, None,
        ))  # fmt: skip
    for index, found in fields.values():
        if found:  # on the span that carried them (flowtracker puts them on a record's first span)
            records[index] = (*records[index][:10], orjson.dumps(found))
    return Records(records, reader.rejected, reader.error)


def span_from_message(message: bytes, policy: ExportPolicy | None = None) -> dict[str, Any]:
    """The wire-format span of one ``Span`` message (a :data:`SpanRecord`'s), without its service.

    Trace fields it carries are left out: its record kept them.

    Raises:
        google.protobuf.message.DecodeError: the bytes are not a ``Span`` message.
    """
    from .otlp_proto import proto

    return _Reader(policy).span(proto().Span.FromString(message), {})


_ZERO_TRACE, _ZERO_SPAN = bytes(16), bytes(8)


def _id_problem(trace_id: bytes, span_id: bytes, parent: bytes) -> str:
    """What is wrong with a span's ids (called only when something is)."""
    for value, size, name in (
        (trace_id, 16, "trace_id"),
        (span_id, 8, "span_id"),
        (parent, 8, "parent_span_id"),
    ):
        if name == "parent_span_id" and not value:
            continue
        if len(value) != size:
            return f"{name} has {len(value)} bytes, not {size}"
        if not any(value):
            return f"{name} is all zeros"
    return "malformed ids"


class _Reader:
    """Reads spans and values out of protobuf messages (one per request)."""

    def __init__(self, policy: ExportPolicy | None) -> None:
        self.limit = policy.max_string if policy is not None else sys.maxsize
        self.policy = policy or DEFAULT_POLICY
        self.rejected = 0
        self.error = ""

    def valid_spans(self, request: Any) -> Iterator[tuple[str, Any]]:
        """Each span of the request with well-formed ids, and its resource's service; the rest rejected."""
        for resource_spans in request.resource_spans:
            service = UNKNOWN_SERVICE
            for item in resource_spans.resource.attributes:
                if item.key == "service.name":
                    service = self.text(str(self.value(item.value))) or UNKNOWN_SERVICE
                    break
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    trace_id = span.trace_id
                    span_id = span.span_id
                    parent = span.parent_span_id
                    if (
                        len(trace_id) != 16
                        or trace_id == _ZERO_TRACE
                        or len(span_id) != 8
                        or span_id == _ZERO_SPAN
                        or (parent and (len(parent) != 8 or parent == _ZERO_SPAN))
                    ):
                        self.reject(_id_problem(trace_id, span_id, parent))
                        continue
                    yield service, span

    def reject(self, problem: str) -> None:
        if not self.rejected:
            self.error = f"span rejected: {problem}"
        self.rejected += 1

    def text(self, value: str) -> str:
        if len(value) > self.limit:
            return safe_value(value, self.policy)  # type: ignore[no-any-return]
        return value

    def name(self, name: str) -> str:
        return (name if len(name) <= self.limit else self.text(name)) or "<unnamed>"

    def value(self, value: Any) -> Any:
        which = value.WhichOneof("value")
        if which == "string_value":
            text = value.string_value
            return text if len(text) <= self.limit else self.text(text)
        if which == "int_value" or which == "bool_value":
            return getattr(value, which)
        if which == "double_value":
            number = value.double_value
            return number if math.isfinite(number) else None
        if which == "array_value":
            return [self.value(item) for item in value.array_value.values]
        if which == "kvlist_value":
            return {self.text(item.key): self.value(item.value) for item in value.kvlist_value.values}
        if which == "bytes_value":
            return base64.b64encode(value.bytes_value).decode()  # as OTLP/JSON writes bytes
        return None

    def mark(
        self, key: str, value: Any, out: dict[str, Any], tags: dict[str, Any], trace: dict[str, Any],
        status: str,
    ) -> str:  # fmt: skip
        """One ``flowtracker.*`` attribute read into the span ``out``, its ``tags`` or its ``trace``.

        A span field (``busy_ms``), the status (``cancelled``, ``unfinished``;
        returned: the status after it) or a trace field; any other is a tag.
        """
        if key in _SPAN_KEYS and isinstance(value, (int, float)):
            out[_SPAN_KEYS[key]] = float(value)
        elif key == STATUS_KEY and value in ("cancelled", "unfinished"):
            return value  # type: ignore[no-any-return]
        elif key in _TRACE_FIELDS:
            _lift(trace, _TRACE_FIELDS[key], value)
        else:
            tags[self.text(key)] = value
        return status

    def marks(self, span: Any, trace: dict[str, Any]) -> str:
        """The status the span's ``flowtracker.*`` attributes give (its status code not yet read).

        Trace fields among them go to ``trace``.
        """
        status = "ok"
        unread: dict[str, Any] = {}  # span fields and tags: read with the rest of the span, when asked
        for item in span.attributes:
            key = item.key
            if key.startswith("flowtracker."):
                status = self.mark(key, self.value(item.value), unread, unread, trace, status)
        return status

    def span(self, span: Any, trace: dict[str, Any]) -> dict[str, Any]:
        start = span.start_time_unix_nano
        end = max(span.end_time_unix_nano, start)
        start_time, end_time = format_pair(start, end)
        tags: dict[str, Any] = {}
        status = "ok"
        out: dict[str, Any] = {"span_id": span.span_id.hex()}
        if span.parent_span_id:
            out["parent_id"] = span.parent_span_id.hex()
        out["name"] = self.name(span.name)
        out["start_time"] = start_time
        out["end_time"] = end_time
        out["duration_ms"] = (end - start) / 1e6
        out["status"] = status
        kind = _KIND_NAMES.get(span.kind)
        if kind is not None:
            out["kind"] = kind
        value_of = self.value
        for item in span.attributes:
            key = item.key
            value = value_of(item.value)
            if not key.startswith("flowtracker."):  # the common case: one check, not three
                tags[key if len(key) <= self.limit else self.text(key)] = value
            else:
                status = self.mark(key, value, out, tags, trace, status)
        if tags:
            out["tags"] = tags
        if span.dropped_attributes_count:
            out["dropped_tags"] = span.dropped_attributes_count
        messages = span.events
        events = [self.event(event) for event in messages] if messages else []
        code = span.status.code
        if code == STATUS_ERROR:
            status = "error"
            error = _error_of(events, messages, span.status.message, end)
            if error is not None:
                out["error"] = error
        out["status"] = status
        if events:
            out["events"] = events
        return out

    def event(self, event: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.text(event.name) or "<unnamed>",
            "time": format_rfc3339(event.time_unix_nano),
        }
        if event.attributes:
            out["attributes"] = {self.text(item.key): self.value(item.value) for item in event.attributes}
        return out


def _lift(trace: dict[str, Any], field: str, value: Any) -> None:
    """A trace field found on a span: counts add up (records of one trace in one request)."""
    if field == "loop_monitor":
        if isinstance(value, str):
            trace.setdefault(field, value)
    elif field == "follow_up":
        if value is True:
            trace[field] = True
    elif isinstance(value, int) and not isinstance(value, bool) and value > 0:
        trace[field] = trace.get(field, 0) + value


def _error_of(events: list[dict[str, Any]], messages: Any, message: str, end: int) -> dict[str, Any] | None:
    """The ``error`` of an ERROR span; drops the ``exception`` event flowtracker's encoding added.

    That event is the last one, at the end time, with exactly ``exception.type``
    and ``exception.message``. A foreign span's ``exception`` events (with a
    stack trace, say) stay events, and the last of them names the error.
    ``messages`` are the protobuf events ``events`` were read from.
    """
    error: dict[str, Any] | None = None
    for event in reversed(events):
        if event["name"] == "exception":
            attrs = event.get("attributes") or {}
            error = {
                "type": str(attrs.get("exception.type", "Error")),
                "message": str(attrs.get("exception.message", "")),
            }
            break
    if (
        events
        and events[-1]["name"] == "exception"
        and messages[len(events) - 1].time_unix_nano == end
        and set(events[-1].get("attributes") or ()) == _EXCEPTION_KEYS
    ):
        events.pop()
    if error is None and message:
        kind, sep, text = message.partition(": ")
        if sep and kind.replace(".", "").replace("_", "").isalnum():
            error = {"type": kind, "message": text}
        else:
            error = {"type": "Error", "message": message}
    return error
