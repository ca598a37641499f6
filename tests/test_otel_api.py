"""flowtracker.otel: OpenTelemetry API spans recorded as flowtracker spans, one current span for both."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from doubles import ReportingSink
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.context.context import _RuntimeContext
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import flowtracker as ft
from flowtracker._core import activate, clock, deactivate, patches, start_root_span, suppressed
from flowtracker._core.clock import format_rfc3339, parse_rfc3339
from flowtracker.otel import BridgedRuntimeContext, BridgeError, BridgeSpan, TracerProvider
from flowtracker.testing import capture_traces

ROOT = Path(__file__).resolve().parent.parent
REMOTE_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
REMOTE_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    """A flowtracker TracerProvider; OpenTelemetry's runtime context is put back afterwards
    through flowtracker's patch registry, so the bridge does not outlive the test (other
    tests use the SDK in this process)."""
    yield TracerProvider()
    for patch in patches.active():
        if patch.name == "_RUNTIME_CONTEXT":
            assert patch.undo()
    assert not isinstance(otel_context._RUNTIME_CONTEXT, BridgedRuntimeContext)


@pytest.fixture
def tracer(provider: TracerProvider) -> trace.Tracer:
    """A tracer of the flowtracker provider."""
    return provider.get_tracer("tests.otel")


def by_name(trace_dict: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {span["name"]: span for span in trace_dict["spans"]}


def run_python(code: str) -> str:
    """Runs ``code`` in a fresh interpreter (the global provider can be set once per process)."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


class TestNesting:
    async def test_start_as_current_span_nests_both_ways(self, tracer: trace.Tracer) -> None:
        """An OTel span in a flowtracker span is its child; flowtracker spans inside it are its children."""
        async with capture_traces() as traces, ft.span("handler"):
            with tracer.start_as_current_span("charge") as charge:
                assert trace.get_current_span() is charge
                assert ft.current_span() is charge.ft  # type: ignore[attr-defined]
                async with ft.span("ledger"):
                    pass
            assert ft.current_span().name == "handler"  # type: ignore[union-attr]
        [recorded] = traces
        spans = by_name(recorded)
        assert spans["charge"]["parent_id"] == spans["handler"]["span_id"]
        assert spans["ledger"]["parent_id"] == spans["charge"]["span_id"]
        assert "parent_id" not in spans["handler"]

    async def test_start_span_and_use_span(self, tracer: trace.Tracer) -> None:
        """``start_span`` starts a span without making it current; ``trace.use_span`` makes it current."""
        async with capture_traces() as traces, ft.span("handler") as handler:
            span = tracer.start_span("work")
            assert ft.current_span() is handler
            with trace.use_span(span, end_on_exit=True):
                assert ft.current_span() is span.ft  # type: ignore[attr-defined]
                with ft.span("inner"):
                    pass
            assert ft.current_span() is handler
        spans = by_name(traces[0])
        assert spans["work"]["parent_id"] == spans["handler"]["span_id"]
        assert spans["inner"]["parent_id"] == spans["work"]["span_id"]

    async def test_decorator_makes_a_span_per_call(self, tracer: trace.Tracer) -> None:
        """``@tracer.start_as_current_span(name)`` on sync and async functions: a child span per call."""

        @tracer.start_as_current_span("load")
        async def load(n: int) -> int:
            ft.add_tag("n", n)
            return n

        @tracer.start_as_current_span("parse")
        def parse() -> str:
            return "ok"

        async with capture_traces() as traces, ft.span("handler"):
            assert await load(1) + await load(2) == 3
            assert parse() == "ok"
        spans = traces[0]["spans"]
        loads = [span for span in spans if span["name"] == "load"]
        assert [span["tags"]["n"] for span in loads] == [1, 2]
        assert loads[0]["span_id"] != loads[1]["span_id"]
        handler = by_name(traces[0])["handler"]["span_id"]
        assert {span["parent_id"] for span in spans if span["name"] != "handler"} == {handler}

    async def test_explicit_context_names_the_parent(self, tracer: trace.Tracer) -> None:
        """A ``context=`` holding another flowtracker span makes that span the parent, not the current one."""
        async with capture_traces() as traces, ft.span("root"):
            with tracer.start_as_current_span("first") as first:
                parent_context = trace.set_span_in_context(first)
            with tracer.start_as_current_span("second"):
                late = tracer.start_span("late", context=parent_context)
                assert ft.current_span().name == "second"  # type: ignore[union-attr]
                late.end()
        spans = by_name(traces[0])
        assert spans["late"]["parent_id"] == spans["first"]["span_id"]

    async def test_root_otel_span_starts_a_trace(self, tracer: trace.Tracer) -> None:
        """An OTel span with no current span starts a new flowtracker trace; its children join it."""
        async with capture_traces() as traces:
            with tracer.start_as_current_span("job") as job:
                assert ft.current_trace_id() == f"{job.get_span_context().trace_id:032x}"
                async with ft.span("step"):
                    pass
        [recorded] = traces
        spans = by_name(recorded)
        assert "parent_id" not in spans["job"]
        assert spans["step"]["parent_id"] == spans["job"]["span_id"]

    async def test_remote_parent_from_a_propagator(self, tracer: trace.Tracer) -> None:
        """A root whose context came from an OTel propagator's ``extract`` continues that trace."""
        headers = {
            "traceparent": f"00-{REMOTE_TRACE}-{REMOTE_SPAN}-03",
            "tracestate": "vendor=abc",
        }
        incoming = TraceContextTextMapPropagator().extract(headers)
        async with capture_traces() as traces:
            with tracer.start_as_current_span("GET /orders", context=incoming, kind=SpanKind.SERVER):
                outgoing: dict[str, str] = {}
                TraceContextTextMapPropagator().inject(outgoing)
            token = otel_context.attach(incoming)  # the other way: the extracted context made current
            try:
                with tracer.start_as_current_span("consumer"):
                    pass
            finally:
                otel_context.detach(token)
        assert len(traces) == 2
        for recorded in traces:
            assert recorded["trace_id"] == REMOTE_TRACE
            assert recorded["spans"][0]["parent_id"] == REMOTE_SPAN
        server = by_name(traces[0])["GET /orders"]
        assert outgoing["traceparent"] == f"00-{REMOTE_TRACE}-{server['span_id']}-03"
        assert outgoing["tracestate"] == "vendor=abc"

    async def test_unsampled_remote_parent_records_nothing(self, tracer: trace.Tracer) -> None:
        """A remote parent with the sampled flag off: the span does not record, and propagates ``-00``."""
        incoming = TraceContextTextMapPropagator().extract(
            {"traceparent": f"00-{REMOTE_TRACE}-{REMOTE_SPAN}-00"}
        )
        async with capture_traces() as traces:
            with tracer.start_as_current_span("GET /", context=incoming) as span:
                assert not span.is_recording()
                with tracer.start_as_current_span("child") as child:
                    assert not child.is_recording()
                    outgoing: dict[str, str] = {}
                    propagate.inject(outgoing)
        assert traces == []
        assert outgoing["traceparent"].startswith(f"00-{REMOTE_TRACE}-")
        assert outgoing["traceparent"].endswith("-00")

    async def test_tasks_and_threads_inherit_the_otel_span(self, tracer: trace.Tracer) -> None:
        """Tasks and ``to_thread`` workers started inside an OTel span make their spans its children."""

        def in_thread() -> None:
            with tracer.start_as_current_span("thread"):
                pass

        async def in_task() -> None:
            async with ft.span("task"):
                await asyncio.sleep(0)

        async with capture_traces() as traces:
            with tracer.start_as_current_span("root"):
                await asyncio.gather(in_task(), asyncio.to_thread(in_thread))
        spans = by_name(traces[0])
        assert spans["task"]["parent_id"] == spans["root"]["span_id"]
        assert spans["thread"]["parent_id"] == spans["root"]["span_id"]


class TestMapping:
    async def test_attributes_events_and_kind(self, tracer: trace.Tracer) -> None:
        """Attributes become tags, events become events (with attributes), the kind becomes ``kind``."""
        async with capture_traces() as traces:
            with tracer.start_as_current_span(
                "GET shipping", kind=SpanKind.CLIENT, attributes={"http.method": "GET", "ids": (1, 2)}
            ) as span:
                span.set_attribute("http.status_code", 200)
                span.set_attributes({"retry": False, "peer": "127.0.0.1"})
                span.add_event("cache miss", {"key": "u:1"})
                span.update_name("GET shipping/rates")
        [recorded] = by_name(traces[0]).values()
        assert recorded["name"] == "GET shipping/rates"
        assert recorded["kind"] == "client"
        assert recorded["tags"] == {
            "http.method": "GET",
            "ids": [1, 2],
            "http.status_code": 200,
            "retry": False,
            "peer": "127.0.0.1",
        }
        assert [(event["name"], event["attributes"]) for event in recorded["events"]] == [
            ("cache miss", {"key": "u:1"})
        ]

    @pytest.mark.parametrize(
        ("kind", "expected"),
        [
            (SpanKind.SERVER, "server"),
            (SpanKind.CLIENT, "client"),
            (SpanKind.PRODUCER, "producer"),
            (SpanKind.CONSUMER, "consumer"),
            (SpanKind.INTERNAL, None),
        ],
    )
    async def test_each_kind(self, tracer: trace.Tracer, kind: SpanKind, expected: str | None) -> None:
        """Every OTel span kind maps to flowtracker's (``internal``, the default, is left out)."""
        async with capture_traces() as traces:
            tracer.start_span("s", kind=kind).end()
        assert traces[0]["spans"][0].get("kind") == expected

    async def test_set_status_error_without_exception(self, tracer: trace.Tracer) -> None:
        """``set_status(ERROR, description)`` ends the span ``error``, the description as its message."""
        async with capture_traces() as traces:
            span = tracer.start_span("call")
            span.set_status(Status(StatusCode.ERROR, "HTTP 503"))
            span.end()
            other = tracer.start_span("other")
            other.set_status(StatusCode.ERROR)
            other.end()
        spans = {t["spans"][0]["name"]: t["spans"][0] for t in traces}
        assert spans["call"]["status"] == "error"
        assert spans["call"]["error"] == {"type": "flowtracker.otel.StatusError", "message": "HTTP 503"}
        assert spans["other"]["error"] == {"type": "flowtracker.otel.StatusError", "message": ""}

    async def test_record_exception_records_the_error(self, tracer: trace.Tracer) -> None:
        """``record_exception`` gives status ``error`` with that exception; ``set_status(OK)`` is final."""
        async with capture_traces() as traces:
            span = tracer.start_span("query")
            span.record_exception(ConnectionResetError("peer hung up"), {"retry": 1})
            span.end()
            healed = tracer.start_span("healed")
            healed.set_status(StatusCode.OK)
            healed.record_exception(ValueError("handled"))
            healed.set_status(StatusCode.ERROR, "ignored after OK")
            healed.end()
        spans = {t["spans"][0]["name"]: t["spans"][0] for t in traces}
        assert spans["query"]["status"] == "error"
        assert spans["query"]["error"] == {"type": "ConnectionResetError", "message": "peer hung up"}
        assert spans["query"]["events"][0]["name"] == "exception"
        assert spans["query"]["events"][0]["attributes"] == {"retry": 1}
        assert spans["healed"]["status"] == "ok"

    async def test_exception_leaving_the_block(self, tracer: trace.Tracer) -> None:
        """An exception leaving ``start_as_current_span`` ends the span ``error`` and propagates unchanged;
        with ``record_exception=False, set_status_on_exception=False`` the span stays ``ok``."""
        error = KeyError("sku")
        async with capture_traces() as traces:
            with pytest.raises(KeyError) as raised, tracer.start_as_current_span("lookup"):
                raise error
            with (
                pytest.raises(KeyError),
                tracer.start_as_current_span("quiet", record_exception=False, set_status_on_exception=False),
            ):
                raise KeyError("expected")
            with pytest.raises(ValueError, match="context manager"), tracer.start_span("direct"):
                raise ValueError("as a context manager too")
        assert raised.value is error
        spans = {t["spans"][0]["name"]: t["spans"][0] for t in traces}
        assert spans["lookup"]["status"] == "error"
        assert spans["lookup"]["error"]["type"] == "KeyError"
        assert spans["quiet"]["status"] == "ok"
        assert spans["direct"]["status"] == "error"

    async def test_cancellation_is_cancelled(self, tracer: trace.Tracer) -> None:
        """A task cancelled inside an OTel span ends it ``cancelled``, as flowtracker's own spans."""
        started = asyncio.Event()

        async def work() -> None:
            with tracer.start_as_current_span("slow"):
                started.set()
                await asyncio.sleep(60)

        async with capture_traces() as traces:
            task = asyncio.create_task(work())
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert traces[0]["spans"][0]["status"] == "cancelled"

    async def test_links(self, tracer: trace.Tracer) -> None:
        """Links are kept as ``<trace id>-<span id>`` in the ``links`` tag; invalid ones are skipped."""
        linked = SpanContext(int(REMOTE_TRACE, 16), int(REMOTE_SPAN, 16), is_remote=True)
        async with capture_traces() as traces:
            span = tracer.start_span("batch", links=[Link(linked), Link(trace.INVALID_SPAN_CONTEXT)])
            span.add_link(SpanContext(1, 2, is_remote=True), {"ignored": True})
            span.end()
        assert traces[0]["spans"][0]["tags"]["links"] == [
            f"{REMOTE_TRACE}-{REMOTE_SPAN}",
            f"{1:032x}-{2:016x}",
        ]

    async def test_explicit_times(self, tracer: trace.Tracer) -> None:
        """Explicit start, end and event times (wall-clock ns) are written as given."""
        start = time.time_ns() - 5_000_000_000
        end = start + 1_500_000_000
        event_at = start + 250_000_000
        async with capture_traces() as traces:
            span = tracer.start_span("imported", start_time=start)
            span.add_event("midway", timestamp=event_at)
            span.end(end_time=end)
            backwards = tracer.start_span("backwards", start_time=time.time_ns())
            backwards.end(end_time=start)  # before its start: clamped to a zero duration
        spans = {t["spans"][0]["name"]: t["spans"][0] for t in traces}
        imported = spans["imported"]
        assert parse_rfc3339(imported["start_time"]) == start // 1000 * 1000
        assert parse_rfc3339(imported["end_time"]) == end // 1000 * 1000
        assert imported["duration_ms"] == 1500.0
        assert imported["events"][0]["time"] == format_rfc3339(event_at)
        assert spans["backwards"]["duration_ms"] == 0.0

    def test_explicit_times_are_set_before_the_span_is_reported(self, provider: TracerProvider) -> None:
        """The bridge hands explicit times to the core as it starts and ends spans: when the
        tracker is told a trace's last span ended, every span already has its given times."""
        sink = ReportingSink()
        tracer = TracerProvider(sink).get_tracer("tests.otel")
        start = time.time_ns() - 5_000_000_000
        root = tracer.start_span("root", start_time=start)
        child = tracer.start_span(
            "child", context=trace.set_span_in_context(root), start_time=start + 1_000_000
        )
        root.end(end_time=start + 3_000_000)
        child.end(end_time=start + 2_000_000)  # the last span: the trace is reported now
        anchor = clock.wall_anchor_ns
        assert sink.reported == [
            [
                ("root", start - anchor, start + 3_000_000 - anchor),
                ("child", start + 1_000_000 - anchor, start + 2_000_000 - anchor),
            ]
        ]

    async def test_calls_after_end_are_ignored(self, tracer: trace.Tracer) -> None:
        """After ``end()``, attributes, events, status and a second ``end()`` change nothing."""
        async with capture_traces() as traces:
            span = tracer.start_span("done")
            span.end()
            span.set_attribute("late", 1)
            span.add_event("late")
            span.set_status(StatusCode.ERROR)
            span.record_exception(ValueError("late"))
            span.update_name("renamed")
            span.end()
            assert not span.is_recording()
        [recorded] = traces[0]["spans"]
        assert (recorded["name"], recorded["status"]) == ("done", "ok")
        assert "tags" not in recorded
        assert "events" not in recorded


class TestBadInput:
    async def test_odd_attributes_never_raise(self, tracer: trace.Tracer) -> None:
        """A megabyte value is cut, a secret-looking key redacted, bytes and non-string keys kept as
        text, in attributes and events alike: the caller's code never sees an error."""
        async with capture_traces() as traces:
            with tracer.start_as_current_span(
                "query", attributes={"db.statement": "x" * 1_000_000, "db.password": "hunter2", 1: "int key"}
            ) as span:
                span.set_attribute("raw", b"\xff\x00")
                span.add_event("row", {2: "int key", "data": b"\x01"})
        [recorded] = traces[0]["spans"]
        tags = recorded["tags"]
        assert 0 < len(tags["db.statement"]) < 10_000
        assert tags["db.password"] != "hunter2"
        assert tags["1"] == "int key"
        assert isinstance(tags["raw"], str)
        assert recorded["events"][0]["attributes"]["2"] == "int key"


class TestNonRecording:
    async def test_foreign_non_recording_span_made_current(self, tracer: trace.Tracer) -> None:
        """``use_span`` of a span that is not flowtracker's (a remote ``NonRecordingSpan``) leaves no
        flowtracker span current; a span started under it continues its trace."""
        remote = NonRecordingSpan(
            SpanContext(int(REMOTE_TRACE, 16), int(REMOTE_SPAN, 16), True, TraceFlags(TraceFlags.SAMPLED))
        )
        async with capture_traces() as traces, ft.span("unrelated"):
            with trace.use_span(remote):
                assert ft.current_span() is None
                assert trace.get_current_span() is remote
                with tracer.start_as_current_span("continued"):
                    pass
            assert ft.current_span().name == "unrelated"  # type: ignore[union-attr]
        continued = next(t for t in traces if t["spans"][0]["name"] == "continued")
        assert continued["trace_id"] == REMOTE_TRACE
        assert continued["spans"][0]["parent_id"] == REMOTE_SPAN

    async def test_suppressed_block_records_nothing(self, tracer: trace.Tracer) -> None:
        """Inside ``suppressed()`` (an exporter's own work) OTel spans record nothing, nest nothing,
        and suppression holds inside them."""
        async with capture_traces() as traces, ft.span("handler"):
            with suppressed():
                with tracer.start_as_current_span("exporter call") as span:
                    assert not span.is_recording()
                    assert not span.get_span_context().is_valid
                    with ft.span("inner") as inner:
                        assert not inner.sampled
                span.set_attribute("x", 1)
                span.end()
        assert [span["name"] for span in traces[0]["spans"]] == ["handler"]

    async def test_unsampled_flowtracker_trace(self, tracer: trace.Tracer) -> None:
        """Under a flowtracker root head sampling said no to, OTel spans do not record, yet propagate."""
        async with capture_traces(sample_rate=0.0) as traces, ft.span("unsampled") as root:
            with tracer.start_as_current_span("child") as child:
                assert not child.is_recording()
                assert child.get_span_context().trace_id == int(root.trace_id, 16)  # type: ignore[arg-type]
                assert not child.get_span_context().trace_flags.sampled
        assert traces == []

    async def test_view_of_a_flowtracker_span(self, tracer: trace.Tracer) -> None:
        """Inside a flowtracker span, the current OTel span tags that span but never ends it."""
        async with capture_traces() as traces, ft.span("handler") as handler:
            current = trace.get_current_span()
            assert isinstance(current, BridgeSpan)
            assert current.is_recording()
            current.set_attribute("http.route", "/orders/{id}")
            current.end()
            assert handler.end_ns is None
        assert traces[0]["spans"][0]["tags"] == {"http.route": "/orders/{id}"}


class TestCurrentSpan:
    async def test_get_current_span_carries_flowtracker_ids(self, provider: TracerProvider) -> None:
        """Inside a flowtracker span, ``get_current_span()`` has its trace and span ids, and OTel's
        global propagator injects a ``traceparent`` naming it (tracestate passed on)."""
        async with capture_traces():
            root = start_root_span("GET /", trace_id=int(REMOTE_TRACE, 16), parent_id=1, tracestate="k=v")
            with root, ft.span("call") as call:
                context = trace.get_current_span().get_span_context()
                carrier: dict[str, str] = {}
                propagate.inject(carrier)
        assert context.trace_id == int(REMOTE_TRACE, 16)
        assert context.span_id == call.span_id
        assert not context.is_remote
        assert carrier["traceparent"] == f"00-{REMOTE_TRACE}-{call.span_id_hex}-01"
        assert carrier["tracestate"] == "k=v"

    def test_outside_any_span(self, provider: TracerProvider) -> None:
        """Outside any span the current OTel span is the invalid one, and nothing is injected."""
        assert trace.get_current_span() is trace.INVALID_SPAN
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        assert "traceparent" not in carrier

    async def test_flowtracker_leaving_every_span(self, tracer: trace.Tracer) -> None:
        """When flowtracker makes no span current (``activate(None)``), OTel sees none either."""
        async with capture_traces():
            with tracer.start_as_current_span("job"):
                token = activate(None)
                try:
                    assert trace.get_current_span() is trace.INVALID_SPAN
                finally:
                    deactivate(None, token)
                assert isinstance(trace.get_current_span(), BridgeSpan)

    async def test_values_set_through_otel_context_keep_the_span(self, tracer: trace.Tracer) -> None:
        """A context attached with another value (baggage, a suppression key) keeps the current span."""
        from opentelemetry import baggage

        async with capture_traces() as traces, ft.span("handler") as handler:
            token = otel_context.attach(baggage.set_baggage("tenant", "t1"))
            try:
                assert ft.current_span() is handler
                with tracer.start_as_current_span("child"):
                    assert baggage.get_baggage("tenant") == "t1"
            finally:
                otel_context.detach(token)
        spans = by_name(traces[0])
        assert spans["child"]["parent_id"] == spans["handler"]["span_id"]

    async def test_detach_in_another_context(
        self, tracer: trace.Tracer, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Detaching in another context than attached: flowtracker's span is not disturbed, and
        OpenTelemetry reports it exactly as it would without flowtracker."""
        async with capture_traces():
            span = tracer.start_span("crossing")
            token = otel_context.attach(trace.set_span_in_context(span))
            with caplog.at_level(logging.ERROR, logger="opentelemetry.context"):
                contextvars.Context().run(otel_context.detach, token)
            assert ft.current_span() is span.ft
            otel_context.detach(token)
            assert ft.current_span() is None
            span.end()
        assert "Failed to detach context" in caplog.text


class TestOpenTelemetryInternals:
    """The bridge's reliance on OpenTelemetry internals, pinned: a release that changes them fails here."""

    def test_runtime_context_is_the_one_routing_point(self) -> None:
        """``opentelemetry.context`` keeps its runtime context in the module global ``_RUNTIME_CONTEXT``,
        a ``_RuntimeContext``, and its public functions read it on every call."""
        saved = otel_context._RUNTIME_CONTEXT
        assert isinstance(saved, _RuntimeContext)
        marker = Context({"marker": True})

        class Fixed(_RuntimeContext):
            def attach(self, context: Context) -> Any:
                return "token"

            def get_current(self) -> Context:
                return marker

            def detach(self, token: Any) -> None:
                pass

        otel_context._RUNTIME_CONTEXT = Fixed()
        try:
            assert otel_context.get_current() is marker
            assert otel_context.get_value("marker") is True
            assert otel_context.attach(Context()) == "token"
        finally:
            otel_context._RUNTIME_CONTEXT = saved

    def test_bridge_wraps_once_and_keeps_earlier_tokens(self, provider: TracerProvider) -> None:
        """A second provider does not wrap twice; a context attached before the bridge detaches cleanly."""
        wrapped = otel_context._RUNTIME_CONTEXT
        assert isinstance(wrapped, BridgedRuntimeContext)
        early = wrapped.inner.attach(Context({"early": 1}))
        TracerProvider()
        assert otel_context._RUNTIME_CONTEXT is wrapped
        otel_context.detach(early)
        assert otel_context.get_value("early") is None

    def test_bridge_error_when_the_routing_point_moves(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """If ``opentelemetry.context`` stopped reading ``_RUNTIME_CONTEXT`` (simulated: its functions
        bound to the original object), the bridge says so instead of silently not nesting."""
        original = otel_context._RUNTIME_CONTEXT
        monkeypatch.setattr(otel_context, "_RUNTIME_CONTEXT", original)
        monkeypatch.setattr(otel_context, "attach", original.attach)
        monkeypatch.setattr(otel_context, "get_current", original.get_current)
        monkeypatch.setattr(otel_context, "detach", original.detach)
        with pytest.raises(BridgeError, match="_RUNTIME_CONTEXT"):
            TracerProvider()


# -- a real instrumentation package, against a real server --------------------------------------


class EchoServer:
    """A real aiohttp server on its own thread and loop: replies with the trace headers it got."""

    def __init__(self) -> None:
        self.url = ""
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="echo-server", daemon=True)
        self._runner: web.AppRunner | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()
        assert self._runner is not None
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    async def _start(self) -> None:
        async def echo(request: web.Request) -> web.Response:
            status = 500 if request.path == "/fail" else 200
            headers = {name: request.headers.get(name) for name in ("traceparent", "tracestate")}
            return web.json_response(headers, status=status)

        app = web.Application()
        app.router.add_get("/{tail:.*}", echo)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> EchoServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


class TestRealInstrumentation:
    def test_urllib_instrumentation_records_into_flowtracker(
        self, provider: TracerProvider, echo_server: EchoServer
    ) -> None:
        """opentelemetry-instrumentation-urllib, given the flowtracker provider, records each stdlib
        ``urlopen`` against a real aiohttp server as a client span in the flowtracker trace, with its
        attributes as tags, a 5xx or a refused connection as ``error``, and the ``traceparent``
        naming that span."""
        from opentelemetry.instrumentation.urllib import URLLibInstrumentor

        instrumentor = URLLibInstrumentor()
        instrumentor.instrument(tracer_provider=provider)
        try:
            with capture_traces() as traces, ft.span("sync job"):
                with urllib.request.urlopen(f"{echo_server.url}/rates?currency=EUR", timeout=10) as reply:
                    received = json.loads(reply.read())
                with pytest.raises(urllib.error.HTTPError) as failed:
                    urllib.request.urlopen(f"{echo_server.url}/fail", timeout=10)
                failed.value.close()
                with pytest.raises(urllib.error.URLError):
                    urllib.request.urlopen(f"http://127.0.0.1:{closed_port()}/", timeout=10)
        finally:
            instrumentor.uninstrument()
        [recorded] = traces
        job, ok_call, failed_call, refused_call = recorded["spans"]
        assert job["name"] == "sync job"
        for call in (ok_call, failed_call):
            assert call["parent_id"] == job["span_id"]
            assert call["kind"] == "client"
        assert ok_call["status"] == "ok"
        assert ok_call["tags"]["http.method"] == "GET"
        assert ok_call["tags"]["http.url"] == f"{echo_server.url}/rates?currency=EUR"
        assert ok_call["tags"]["http.status_code"] == 200
        assert received["traceparent"] == f"00-{recorded['trace_id']}-{ok_call['span_id']}-01"
        assert failed_call["status"] == "error"
        assert failed_call["tags"]["http.status_code"] == 500
        assert ok_call["name"] == failed_call["name"] == "GET"
        assert refused_call["parent_id"] == job["span_id"]
        assert refused_call["status"] == "error"
        assert refused_call["error"]["type"] == "urllib.error.URLError"

    def test_install_then_instrument_without_a_provider(self, echo_server: EchoServer) -> None:
        """After ``install()``, an instrumentor given no provider records into flowtracker (fresh process)."""
        code = f"""
import json, urllib.request
import flowtracker as ft
from flowtracker import otel
from flowtracker.testing import capture_traces
from opentelemetry.instrumentation.urllib import URLLibInstrumentor
provider = otel.install()
URLLibInstrumentor().instrument()
with capture_traces() as traces, ft.span("job"):
    urllib.request.urlopen("{echo_server.url}/x", timeout=10).read()
print(json.dumps(traces))
"""
        [recorded] = json.loads(run_python(code))
        job, call = recorded["spans"]
        assert call["parent_id"] == job["span_id"]
        assert call["tags"]["http.status_code"] == 200


def _tomllib() -> Any:
    """``tomllib`` (Python 3.11+), else its backport ``tomli`` (the test extra installs it on 3.10)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib


class TestInstall:
    def test_install_sets_the_global_provider(self) -> None:
        """``install()`` makes flowtracker the global provider, idempotently; a tracer taken before it
        (OpenTelemetry's proxy) records into flowtracker once it ran."""
        code = """
import json
from opentelemetry import trace
import flowtracker as ft
from flowtracker import otel
from flowtracker.testing import capture_traces
early = trace.get_tracer("early")
provider = otel.install()
assert otel.install() is provider
assert trace.get_tracer_provider() is provider
with capture_traces() as traces, ft.span("root"):
    with early.start_as_current_span("from proxy"):
        pass
print(json.dumps([s["name"] for s in traces[0]["spans"]]))
"""
        assert json.loads(run_python(code)) == ["root", "from proxy"]

    def test_another_provider_already_installed(self) -> None:
        """With the SDK's provider already global, ``install()`` raises ``ProviderConflictError`` naming
        it and changes nothing; an explicit ``TracerProvider`` still works."""
        code = """
import json
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider as SdkProvider
import flowtracker as ft
from flowtracker import otel
from flowtracker.testing import capture_traces
sdk = SdkProvider()
trace.set_tracer_provider(sdk)
try:
    otel.install()
except otel.ProviderConflictError as error:
    message, installed = str(error), error.installed
assert installed is sdk and trace.get_tracer_provider() is sdk
with capture_traces() as traces, ft.span("root"):
    with otel.TracerProvider().get_tracer("x").start_as_current_span("explicit"):
        pass
print(json.dumps({"message": message, "names": [s["name"] for s in traces[0]["spans"]]}))
"""
        out = json.loads(run_python(code))
        assert "opentelemetry.sdk.trace.TracerProvider" in out["message"]
        assert "tracer_provider=" in out["message"]
        assert out["names"] == ["root", "explicit"]

    def test_needs_only_the_api(self) -> None:
        """With ``opentelemetry.sdk`` impossible to import, the bridge imports, installs and records."""
        code = """
import importlib.abc, json, sys
class NoSdk(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry.sdk" or name.startswith("opentelemetry.sdk."):
            raise ModuleNotFoundError(f"blocked: {name}", name=name)
        return None
sys.meta_path.insert(0, NoSdk())
try:
    import opentelemetry.sdk
    raise SystemExit("the blocker did not block")
except ModuleNotFoundError:
    pass
import flowtracker as ft
from flowtracker import otel
from flowtracker.testing import capture_traces
from opentelemetry import trace
otel.install()
with capture_traces() as traces:
    with trace.get_tracer("t").start_as_current_span("api only"):
        pass
assert not [m for m in sys.modules if m.startswith("opentelemetry.sdk")]
print(json.dumps(traces[0]["spans"][0]["name"]))
"""
        assert json.loads(run_python(code)) == "api only"

    def test_provider_named_by_environment_variable(self, tmp_path: Path) -> None:
        """``OTEL_PYTHON_TRACER_PROVIDER=flowtracker`` loads flowtracker's provider through the entry point
        pyproject.toml declares (installed here as a bare dist-info, as pip would write it)."""
        tomllib = _tomllib()

        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        target = project["entry-points"]["opentelemetry_tracer_provider"]["flowtracker"]
        dist_info = tmp_path / "flowtracker_entry_points-0.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: flowtracker-entry-points\nVersion: 0\n"
        )
        (dist_info / "entry_points.txt").write_text(
            f"[opentelemetry_tracer_provider]\nflowtracker = {target}\n"
        )
        code = """
import json
from opentelemetry import trace
import flowtracker as ft
from flowtracker import otel
from flowtracker.testing import capture_traces
provider = trace.get_tracer_provider()
assert isinstance(provider, otel.TracerProvider), provider
assert otel.install() is provider
with capture_traces() as traces, ft.span("root"):
    with trace.get_tracer("t").start_as_current_span("by env"):
        pass
print(json.dumps([s["name"] for s in traces[0]["spans"]]))
"""
        env = {
            **os.environ,
            "OTEL_PYTHON_TRACER_PROVIDER": "flowtracker",
            "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        }
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT, env=env
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == ["root", "by env"]

    def test_pyproject_declares_the_api_extra(self) -> None:
        """The ``otel-api`` extra installs the OpenTelemetry API alone."""
        tomllib = _tomllib()

        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        assert extras["otel-api"] == ["opentelemetry-api>=1.27"]


class TestCost:
    def test_benchmark_suite_runs(self, tmp_path: Path) -> None:
        """``python -m benchmarks otel-api --smoke`` measures the bridge and the SDK; every span arrives."""
        env = {**os.environ, "FLOWTRACKER_EXPORTERS": "none", "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks",
                "otel-api",
                "--smoke",
                "--cpu",
                "-2",
                "--out",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        result = json.loads((tmp_path / "otel-api-smoke.json").read_text())
        assert set(result["workloads"]) == {"nested", "attrs5"}
        for workload, entry in result["workloads"].items():
            for variant in ("bridge", "sdk"):
                assert entry["variants"][variant]["delivered_share"] == 1.0, (workload, variant)
            assert entry["bridge_over_sdk"] > 0
        assert "bridge / sdk" in done.stdout
