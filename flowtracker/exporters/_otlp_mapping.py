"""Wire-format traces to OTLP, as plain JSON-ready dicts (no dependencies).

Pure functions: they read what :meth:`Trace.to_dict` returns (or lines of a
``FileExporter`` file) and build an ``ExportTraceServiceRequest`` following the
OTLP/JSON rules: trace and span ids as lowercase hex, 64-bit integers
(timestamps, ``intValue``) as decimal strings, enums as integers, field names
in lowerCamelCase. ``otlp.py`` turns the same dict into protobuf.

How flowtracker's fields land in OTLP:

* resource: ``service.name`` (the ``service`` argument, else the trace's own
  ``service``, else ``unknown_service``), ``telemetry.sdk.name=flowtracker``;
  one ``resourceSpans`` entry per service, one scope ``flowtracker`` in each.
* span kind: ``server`` → SERVER, ``client`` → CLIENT, ``producer`` /
  ``consumer`` likewise, anything else → INTERNAL.
* times: unix nanoseconds; the end is the start plus ``duration_ms`` (measured
  with the monotonic clock, so it is exact where the wall-clock strings are
  rounded to microseconds).
* tags and event attributes: typed ``AnyValue`` (string, bool, int, double,
  array, kvlist); ``dropped_tags`` → ``droppedAttributesCount``.
* status: ``ok`` → OK, ``error`` → ERROR with ``"Type: message"`` plus an
  ``exception`` event (``exception.type`` / ``exception.message``), as the
  OpenTelemetry semantic conventions record errors; ``cancelled`` and
  ``unfinished`` → UNSET with the attribute ``flowtracker.status``.
* trace-level fields go on the trace's first span: ``flowtracker.dropped_spans``,
  ``flowtracker.follow_up``, ``flowtracker.unfinished_spans``.

Example:
    >>> trace = {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "service": "orders", "spans": [
    ...     {"span_id": "00f067aa0ba902b7", "name": "GET /", "kind": "server", "status": "ok",
    ...      "start_time": "2026-11-20T10:00:00.000000Z", "end_time": "2026-11-20T10:00:01.000000Z",
    ...      "duration_ms": 1000.0, "tags": {"http.status_code": 200}}]}
    >>> span = otlp_request_dict([trace])["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    >>> span["kind"], span["endTimeUnixNano"], span["attributes"][0]["value"]
    (2, '1795168801000000000', {'intValue': '200'})
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .._core.clock import parse_rfc3339

__all__ = (
    "SPAN_KINDS",
    "STATUS_ERROR",
    "STATUS_OK",
    "STATUS_UNSET",
    "any_value",
    "attributes",
    "otlp_request",
    "otlp_request_dict",
    "otlp_span_dict",
    "otlp_trace_spans",
    "span_times",
)

#: ``SpanKind`` enum values (opentelemetry-proto ``trace.proto``).
SPAN_KINDS = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
#: ``Status.StatusCode`` enum values.
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2

SCOPE_NAME = "flowtracker"
UNKNOWN_SERVICE = "unknown_service"

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


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
    ``Span`` messages for :func:`~flowtracker.exporters.otlp.request_to_protobuf`.
    """
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": _resource_attributes(service_name)},
                "scopeSpans": [{"scope": _scope(), "spans": spans}],
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
        tags["flowtracker.status"] = status
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
    """Start and end of a wire-format span in unix nanoseconds."""
    start = parse_rfc3339(span["start_time"])
    duration = span.get("duration_ms")
    if isinstance(duration, (int, float)) and math.isfinite(duration) and duration >= 0:
        return start, start + round(duration * 1_000_000)
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
    extra: dict[str, Any] = {}
    if trace.get("dropped_spans"):
        extra["flowtracker.dropped_spans"] = trace["dropped_spans"]
    if trace.get("follow_up"):
        extra["flowtracker.follow_up"] = True
    if trace.get("unfinished_spans"):
        extra["flowtracker.unfinished_spans"] = trace["unfinished_spans"]
    return extra


def _resource_attributes(service: str) -> list[dict[str, Any]]:
    return attributes(
        {
            "service.name": service,
            "telemetry.sdk.name": SCOPE_NAME,
            "telemetry.sdk.language": "python",
            "telemetry.sdk.version": library_version(),
        }
    )


def _scope() -> dict[str, Any]:
    return {"name": SCOPE_NAME, "version": library_version()}


_VERSION: str | None = None


def library_version() -> str:
    global _VERSION
    if _VERSION is None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            _VERSION = version("flowtracker")
        except PackageNotFoundError:  # running from a source tree
            _VERSION = "0"
    return _VERSION
