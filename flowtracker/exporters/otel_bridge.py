"""``OTelSpanExporterBridge``: hands traces to any OpenTelemetry SDK ``SpanExporter``.

Every exporter written for the OpenTelemetry Python SDK (OTLP over gRPC,
Zipkin, a vendor's, the in-memory one in tests) becomes a flowtracker
exporter. Each span becomes a ``ReadableSpan`` with flowtracker's own ids and
timestamps (nothing is re-timed), the kind, status, events and tags mapped as
for :class:`~flowtracker.exporters.OTLPExporter`, and ``service.name`` on the
resource.

SDK exporters block (``requests``, gRPC), so conversion and ``export`` run in
a worker thread: the event loop keeps serving. Needs the ``otel`` extra
(``opentelemetry-sdk``).

Tag values that OpenTelemetry attributes cannot hold (dicts, mixed lists,
``None``) are written as JSON strings. Traces are converted one at a time: a
trace that cannot be converted is left out and counted failed, and the rest
of its batch is exported.

Example:
    >>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    >>> from flowtracker.exporters import OTelSpanExporterBridge
    >>> bridge = OTelSpanExporterBridge(InMemorySpanExporter())
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from .._core.clock import parse_rfc3339
from .._core.version import package_version
from .._wire.batch import BatchFailures
from .._wire.otlp import SCOPE_NAME, UNKNOWN_SERVICE, resource_attributes, span_times, trace_attributes
from .._wire.record import Trace

_KINDS = {
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
}
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


class OTelSpanExporterBridge:
    """Exports flowtracker traces through an OpenTelemetry SDK ``SpanExporter``.

    Args:
        span_exporter: Any ``opentelemetry.sdk.trace.export.SpanExporter``.
        service: ``service.name`` for every span; default: each trace's
            ``service`` (the tracker's), else ``unknown_service``.

    Example:
        >>> from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        >>> bridge = OTelSpanExporterBridge(OTLPSpanExporter("http://localhost:4318/v1/traces"))
    """

    name = "otel"

    def __init__(self, span_exporter: SpanExporter, *, service: str | None = None) -> None:
        self.span_exporter = span_exporter
        self.service = service
        self._resources: dict[str, Resource] = {}

    async def export(self, traces: Sequence[Trace]) -> None:
        failures = BatchFailures(len(traces))
        dicts = failures.each(traces, Trace.to_dict)
        if dicts:
            # The loop's default executor: at interpreter exit it is the
            # tracker's prestarted pool, when no new thread may start.
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(None, self._export_blocking, dicts, failures)
            if result is not SpanExportResult.SUCCESS:
                raise RuntimeError(f"{type(self.span_exporter).__name__}.export returned {result.name}")
        failures.raise_if_any()

    def _export_blocking(self, traces: list[dict[str, Any]], failures: BatchFailures) -> SpanExportResult:
        spans = [span for spans in failures.each(traces, self.readable_spans) for span in spans]
        if not spans and failures.failed:
            return SpanExportResult.SUCCESS  # nothing left to export; the failures are counted
        return self.span_exporter.export(spans)

    def readable_spans(self, trace: Mapping[str, Any]) -> list[ReadableSpan]:
        """The ``ReadableSpan`` objects for one wire-format trace."""
        service = str(self.service or trace.get("service") or UNKNOWN_SERVICE)
        resource = self._resources.get(service)
        if resource is None:
            resource = self._resources[service] = Resource(resource_attributes(service))
        scope = InstrumentationScope(SCOPE_NAME, package_version())
        trace_id = int(trace["trace_id"], 16)
        spans = trace.get("spans", ())
        own_ids = {span["span_id"] for span in spans}
        extra = trace_attributes(trace)
        return [
            _readable_span(trace_id, span, own_ids, resource, scope, extra if index == 0 else {})
            for index, span in enumerate(spans)
        ]

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.span_exporter.shutdown)


def _readable_span(
    trace_id: int,
    span: Mapping[str, Any],
    own_ids: set[str],
    resource: Resource,
    scope: InstrumentationScope,
    extra: Mapping[str, Any],
) -> ReadableSpan:
    start, end = span_times(span)
    status_name = span.get("status", "ok")
    tags = dict(span.get("tags") or {})
    if status_name in ("cancelled", "unfinished"):
        tags["flowtracker.status"] = status_name
    tags.update(extra)
    events = [
        Event(
            str(event.get("name", "")),
            _attributes(event.get("attributes") or {}),
            parse_rfc3339(event["time"]),
        )
        for event in span.get("events") or ()
    ]
    status = Status(StatusCode.OK) if status_name == "ok" else Status(StatusCode.UNSET)
    if status_name == "error":
        error = span.get("error")
        error = error if isinstance(error, Mapping) else {}
        kind_name, message = str(error.get("type", "Error")), str(error.get("message", ""))
        status = Status(StatusCode.ERROR, f"{kind_name}: {message}")
        events.append(Event("exception", {"exception.type": kind_name, "exception.message": message}, end))
    parent_hex = span.get("parent_id")
    parent = None
    if parent_hex:
        # A parent outside this trace's spans is another service's: a remote parent.
        parent = SpanContext(
            trace_id, int(parent_hex, 16), is_remote=parent_hex not in own_ids, trace_flags=_SAMPLED
        )
    return ReadableSpan(
        name=str(span.get("name", "")),
        context=SpanContext(trace_id, int(span["span_id"], 16), is_remote=False, trace_flags=_SAMPLED),
        parent=parent,
        resource=resource,
        attributes=_attributes(tags),
        events=events,
        kind=_KINDS.get(str(span.get("kind", "internal")), SpanKind.INTERNAL),
        status=status,
        start_time=start,
        end_time=end,
        instrumentation_scope=scope,
    )


def _attributes(values: Mapping[str, Any]) -> dict[str, Any]:
    return {str(key): _attribute(value) for key, value in values.items()}


def _attribute(value: Any) -> Any:
    """An OpenTelemetry attribute value: a primitive or a list of one primitive type."""
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)) and value:
        kinds = {type(item) for item in value}
        if len(kinds) == 1 and kinds <= {str, bool, int, float}:
            return tuple(value)
    return orjson.dumps(value).decode()
