"""OTelSpanExporterBridge: flowtracker traces through OpenTelemetry SDK exporters."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Sequence

import pytest
from http_receiver import Receiver
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import flowtracker as ft
from flowtracker._core import start_root_span
from flowtracker._core.clock import parse_rfc3339
from flowtracker.exporters import OTelSpanExporterBridge


class Recording(SpanExporter):
    """A real SpanExporter that remembers which thread called it and can refuse."""

    def __init__(self, result: SpanExportResult = SpanExportResult.SUCCESS) -> None:
        self.result = result
        self.threads: list[str] = []
        self.spans: list[ReadableSpan] = []
        self.shut_down_in: str | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.threads.append(threading.current_thread().name)
        self.spans.extend(spans)
        return self.result

    def shutdown(self) -> None:
        self.shut_down_in = threading.current_thread().name


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as running:
        yield running


class TestMapping:
    async def test_readable_spans_keep_ids_times_and_meaning(self) -> None:
        """Ids, timestamps, parent links, kinds, status, events and tags reach the SDK exporter."""
        in_memory = InMemorySpanExporter()
        memory = ft.MemoryExporter()
        async with ft.Tracker(
            exporters=[OTelSpanExporterBridge(in_memory), memory], service="orders"
        ) as tracker:
            remote_parent = 0x1234
            with start_root_span("GET /", {"n": 1, "d": {"a": 1}, "l": [1, 2]}, tracker=tracker,
                                 kind="server", trace_id=0xABC, parent_id=remote_parent):  # fmt: skip
                ft.add_event("hit", key="k")
                with ft.span("call") as call:
                    call.kind = "client"
                try:
                    with ft.span("fail"):
                        raise KeyError("x")
                except KeyError:
                    pass
        wire = memory.traces[0]
        spans = {span.name: span for span in in_memory.get_finished_spans()}
        assert set(spans) == {"GET /", "call", "fail"}
        for wire_span in wire["spans"]:
            span = spans[wire_span["name"]]
            assert span.context.trace_id == 0xABC
            assert f"{span.context.span_id:016x}" == wire_span["span_id"]
            # both ends on their microsecond (the start carries the sub-microsecond offset)
            assert span.start_time // 1000 * 1000 == parse_rfc3339(wire_span["start_time"])
            assert span.end_time // 1000 * 1000 == parse_rfc3339(wire_span["end_time"])
            assert span.end_time - span.start_time == round(wire_span["duration_ms"] * 1e6)
            assert span.resource.attributes["service.name"] == "orders"
            assert span.instrumentation_scope.name == "flowtracker"
        root, call, fail = spans["GET /"], spans["call"], spans["fail"]
        assert root.parent.span_id == remote_parent
        assert root.parent.is_remote
        assert call.parent.span_id == root.context.span_id
        assert not call.parent.is_remote
        assert (root.kind, call.kind, fail.kind) == (SpanKind.SERVER, SpanKind.CLIENT, SpanKind.INTERNAL)
        assert dict(root.attributes) == {"n": 1, "d": '{"a":1}', "l": (1, 2)}
        assert root.status.status_code is StatusCode.OK
        assert [(event.name, dict(event.attributes)) for event in root.events] == [("hit", {"key": "k"})]
        assert fail.status.status_code is StatusCode.ERROR
        assert fail.status.description == "KeyError: 'x'"
        assert fail.events[-1].name == "exception"
        assert fail.events[-1].attributes["exception.type"] == "KeyError"


class TestThreads:
    async def test_export_and_shutdown_run_off_the_loop(self) -> None:
        """SDK exporters block, so export() and shutdown() run in worker threads."""
        recording = Recording()
        async with ft.Tracker(exporters=[OTelSpanExporterBridge(recording)]):
            with ft.span("x"):
                pass
        loop_thread = threading.current_thread().name
        assert recording.threads
        assert loop_thread not in recording.threads
        assert recording.shut_down_in not in (None, loop_thread)

    async def test_failure_result_is_counted(self) -> None:
        """A SpanExporter answering FAILURE makes the batch count as failed."""
        recording = Recording(SpanExportResult.FAILURE)
        bridge = OTelSpanExporterBridge(recording)
        async with ft.Tracker(exporters=[bridge]) as tracker:
            for index in range(3):
                with ft.span(f"x{index}"):
                    pass
        assert tracker.stats.exporters["otel"].failed == 3


class TestRealSDKExporter:
    async def test_sdk_otlp_http_exporter_reaches_a_receiver(self, receiver: Receiver) -> None:
        """The SDK's own (blocking) OTLP/HTTP exporter delivers through the bridge while the
        loop keeps serving the receiver that runs on it."""
        sdk_exporter = OTLPSpanExporter(endpoint=receiver.url + "/v1/traces", timeout=5)
        memory = ft.MemoryExporter()
        async with ft.Tracker(exporters=[OTelSpanExporterBridge(sdk_exporter, service="bridged"), memory]):
            for index in range(5):
                with ft.span(f"op{index}"), ft.span("inner"):
                    pass
        spans = []
        for request in receiver.delivered:
            message = ExportTraceServiceRequest()
            message.ParseFromString(request.body)
            for resource_spans in message.resource_spans:
                service = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
                assert service["service.name"] == "bridged"
                spans += [span for scope in resource_spans.scope_spans for span in scope.spans]
        assert len(spans) == 10
        assert {span.trace_id.hex() for span in spans} == {trace["trace_id"] for trace in memory.traces}
        assert len(memory.traces) == 5
