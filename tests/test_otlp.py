"""OTLPExporter and the OTLP mapping, decoded with opentelemetry-proto on a real receiver."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from http_receiver import Receiver, Recorded
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

import flowtracker as ft
from flowtracker._core import start_root_span
from flowtracker._core.clock import format_rfc3339, parse_rfc3339
from flowtracker._wire.names import BLOCKED_EVENT
from flowtracker._wire.otlp import (
    EXPORT_METHOD,
    SpanRecord,
    any_value,
    otlp_request_dict,
    span_from_message,
    span_records,
    traces_from_request,
)
from flowtracker._wire.otlp_proto import parse_request, proto, request_message
from flowtracker.exporters.otlp import OTLPExporter
from flowtracker.exporters.otlp_grpc import OTLPGrpcExporter
from flowtracker.testing import FakeClock, capture_traces, sequential_ids


def decode(request: Recorded) -> ExportTraceServiceRequest:
    """Parses a request body with opentelemetry-proto, whichever the encoding."""
    message = ExportTraceServiceRequest()
    if request.headers["Content-Type"] == "application/x-protobuf":
        message.ParseFromString(request.body)
        return message
    assert request.headers["Content-Type"] == "application/json"
    data = orjson.loads(request.body)
    # OTLP/JSON writes ids as hex where protobuf's JSON mapping expects base64.
    for resource in data["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    json_format.ParseDict(data, message)  # strict: unknown fields or wrong types raise
    return message


def all_spans(message: ExportTraceServiceRequest) -> list[Span]:
    return [span for rs in message.resource_spans for ss in rs.scope_spans for span in ss.spans]


def attributes(span: Any) -> dict[str, Any]:
    """KeyValues as plain Python values (via protobuf's own JSON view)."""
    out = {}
    for item in span.attributes:
        value = json_format.MessageToDict(item.value)
        out[item.key] = next(iter(value.values())) if value else None
    return out


def emit(count: int) -> None:
    for index in range(count):
        with ft.span(f"t{index}"):
            pass


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as running:
        yield running


def make_request_trace(tracker: ft.Tracker) -> None:
    """A server root with a client call, a failing internal step and typed tags."""
    root = start_root_span("GET /orders", {"http.status_code": 200}, tracker=tracker, kind="server")
    with root:
        ft.add_tag("user", "u1")
        ft.add_tag("ratio", 0.5)
        ft.add_tag("cached", True)
        ft.add_tag("ids", [1, 2])
        ft.add_tag("meta", {"a": 1})
        ft.add_event("cache miss", key="u:1")
        with ft.span("GET payments") as call:
            call.kind = "client"
        try:
            with ft.span("validate"):
                raise ValueError("bad order")
        except ValueError:
            pass


ENCODINGS = [("protobuf", None), ("protobuf", "gzip"), ("json", None), ("json", "gzip")]


class TestOverTheWire:
    @pytest.mark.parametrize(("encoding", "compression"), ENCODINGS)
    async def test_decoded_by_opentelemetry_proto(
        self, receiver: Receiver, encoding: Any, compression: Any
    ) -> None:
        """Every field of a trace survives OTLP encoding: ids, kinds, times, attributes, status, events."""
        memory = ft.MemoryExporter()
        otlp = OTLPExporter(receiver.url + "/v1/traces", encoding=encoding, compression=compression)
        async with ft.Tracker(exporters=[otlp, memory], service="orders") as tracker:
            make_request_trace(tracker)
        [request] = receiver.requests
        assert request.path == "/v1/traces"
        assert (request.headers.get("Content-Encoding") == "gzip") == (compression == "gzip")
        if compression:
            assert request.raw[:2] == b"\x1f\x8b"
        message = decode(request)
        [resource_spans] = message.resource_spans
        assert attributes(resource_spans.resource)["service.name"] == "orders"
        [scope_spans] = resource_spans.scope_spans
        assert scope_spans.scope.name == "flowtracker"

        wire = memory.traces[0]
        by_name = {span.name: span for span in all_spans(message)}
        assert set(by_name) == {"GET /orders", "GET payments", "validate"}
        for wire_span in wire["spans"]:
            span = by_name[wire_span["name"]]
            assert span.trace_id.hex() == wire["trace_id"]
            assert span.span_id.hex() == wire_span["span_id"]
            assert span.parent_span_id.hex() == wire_span.get("parent_id", "")
            # both ends land on their microsecond; the duration is the exact one
            assert span.start_time_unix_nano // 1000 * 1000 == parse_rfc3339(wire_span["start_time"])
            assert span.end_time_unix_nano // 1000 * 1000 == parse_rfc3339(wire_span["end_time"])
            assert span.end_time_unix_nano - span.start_time_unix_nano == round(
                wire_span["duration_ms"] * 1e6
            )
        root, call, failing = by_name["GET /orders"], by_name["GET payments"], by_name["validate"]
        assert (root.kind, call.kind, failing.kind) == (
            Span.SPAN_KIND_SERVER,
            Span.SPAN_KIND_CLIENT,
            Span.SPAN_KIND_INTERNAL,
        )
        assert attributes(root) == {
            "http.status_code": "200",  # int64 is a string in protobuf's JSON view
            "user": "u1",
            "ratio": 0.5,
            "cached": True,
            "ids": {"values": [{"intValue": "1"}, {"intValue": "2"}]},
            "meta": {"values": [{"key": "a", "value": {"intValue": "1"}}]},
        }
        assert root.attributes[0].value.int_value == 200
        assert root.status.code == Status.STATUS_CODE_OK
        [event] = root.events
        assert event.name == "cache miss"
        assert attributes(event) == {"key": "u:1"}
        assert event.time_unix_nano == parse_rfc3339(wire["spans"][0]["events"][0]["time"])
        assert failing.status.code == Status.STATUS_CODE_ERROR
        assert failing.status.message == "ValueError: bad order"
        [exception] = failing.events
        assert exception.name == "exception"
        assert attributes(exception) == {"exception.type": "ValueError", "exception.message": "bad order"}

    @pytest.mark.parametrize(("encoding", "compression"), ENCODINGS)
    async def test_retryable_faults_then_recovery_lose_nothing(
        self, receiver: Receiver, encoding: Any, compression: Any
    ) -> None:
        """503, 502, 429 and 504 are retried; after close the receiver holds exactly the N traces."""
        receiver.script = [503, 502, (429, {"Retry-After": "0"}), 504]
        otlp = OTLPExporter(
            receiver.url, encoding=encoding, compression=compression, backoff=0.01, max_backoff=0.05
        )
        async with ft.Tracker(exporters=[otlp], max_batch=32) as tracker:
            emit(300)
        trace_ids = [span.trace_id.hex() for r in receiver.delivered for span in all_spans(decode(r))]
        assert len(trace_ids) == len(set(trace_ids)) == 300
        stats = tracker.stats.exporters["otlp"]
        assert (stats.exported, stats.failed, stats.dropped) == (300, 0, 0)
        assert otlp.attempts == len(receiver.delivered) + 4

    @pytest.mark.parametrize("status", [400, 500])
    async def test_other_statuses_not_retried(self, receiver: Receiver, status: int) -> None:
        """As the OTLP spec says, 400 and 500 fail the batch at once; it is counted."""
        receiver.script = [status]
        otlp = OTLPExporter(receiver.url, backoff=0.01)
        async with ft.Tracker(exporters=[otlp]) as tracker:
            emit(3)
        assert len(receiver.requests) == 1
        assert tracker.stats.exporters["otlp"].failed == 3

    async def test_service_argument_overrides(self, receiver: Receiver) -> None:
        """OTLPExporter(service=...) sets service.name regardless of the tracker's."""
        otlp = OTLPExporter(receiver.url, service="edge", encoding="json")
        async with ft.Tracker(exporters=[otlp], service="orders"):
            emit(1)
        resource = decode(receiver.requests[0]).resource_spans[0].resource
        assert attributes(resource)["service.name"] == "edge"


class TestMapping:
    def test_literal_request(self) -> None:
        """A deterministic trace maps to exactly this OTLP/JSON span."""
        with (
            capture_traces(ids=sequential_ids(), clock=FakeClock(step_ms=1)) as traces,
            ft.span("root", n=3),
            ft.span("child"),
        ):
            pass
        request = otlp_request_dict(traces, service="svc")
        [resource] = request["resourceSpans"]
        assert resource["resource"]["attributes"][0] == {
            "key": "service.name",
            "value": {"stringValue": "svc"},
        }
        root, child = resource["scopeSpans"][0]["spans"]
        trace_id = traces[0]["trace_id"]
        assert root == {
            "traceId": trace_id,
            "spanId": traces[0]["spans"][0]["span_id"],
            "name": "root",
            "kind": 1,
            "startTimeUnixNano": str(parse_rfc3339(traces[0]["spans"][0]["start_time"])),
            "endTimeUnixNano": str(parse_rfc3339(traces[0]["spans"][0]["end_time"])),
            "attributes": [{"key": "n", "value": {"intValue": "3"}}],
            "status": {"code": 1},
        }
        assert child["parentSpanId"] == root["spanId"]
        assert "parentSpanId" not in root

    def test_any_value_types(self) -> None:
        """Tag values become typed AnyValues; ints beyond int64 become strings."""
        assert any_value("a") == {"stringValue": "a"}
        assert any_value(False) == {"boolValue": False}
        assert any_value(-5) == {"intValue": "-5"}
        assert any_value(2**63) == {"stringValue": str(2**63)}
        assert any_value(0.25) == {"doubleValue": 0.25}
        assert any_value(None) == {}
        assert any_value({"k": [True]}) == {
            "kvlistValue": {
                "values": [{"key": "k", "value": {"arrayValue": {"values": [{"boolValue": True}]}}}]
            }
        }

    def test_traces_grouped_by_service(self) -> None:
        """Traces of different services land in separate resourceSpans."""
        base = {
            "span_id": "00f067aa0ba902b7",
            "name": "x",
            "status": "ok",
            "duration_ms": 1.0,
            "start_time": "2026-11-20T10:00:00.000000Z",
            "end_time": "2026-11-20T10:00:00.001000Z",
        }
        traces = [
            {"trace_id": "1" * 32, "service": "a", "spans": [base]},
            {"trace_id": "2" * 32, "service": "b", "spans": [base]},
            {"trace_id": "3" * 32, "spans": [base]},
        ]
        services = [
            resource["resource"]["attributes"][0]["value"]["stringValue"]
            for resource in otlp_request_dict(traces)["resourceSpans"]
        ]
        assert services == ["a", "b", "unknown_service"]

    def test_cancelled_unfinished_and_trace_fields(self) -> None:
        """cancelled/unfinished map to UNSET plus flowtracker.status; trace fields go on the first span."""
        base = {"name": "x", "duration_ms": 1.0, "start_time": "2026-11-20T10:00:00.000000Z",
                "end_time": "2026-11-20T10:00:00.001000Z"}  # fmt: skip
        trace = {
            "trace_id": "1" * 32,
            "dropped_spans": 4,
            "follow_up": True,
            "spans": [
                {**base, "span_id": "a" * 16, "status": "cancelled"},
                {**base, "span_id": "b" * 16, "status": "unfinished", "dropped_tags": 2},
            ],
        }
        first, second = otlp_request_dict([trace])["resourceSpans"][0]["scopeSpans"][0]["spans"]
        assert first["status"] == {} == second["status"]
        assert {a["key"]: a["value"] for a in first["attributes"]} == {
            "flowtracker.status": {"stringValue": "cancelled"},
            "flowtracker.dropped_spans": {"intValue": "4"},
            "flowtracker.follow_up": {"boolValue": True},
        }
        assert second["attributes"] == [{"key": "flowtracker.status", "value": {"stringValue": "unfinished"}}]
        assert second["droppedAttributesCount"] == 2


class TestConfiguration:
    def test_content_types(self) -> None:
        """protobuf is the default encoding; json is available."""
        assert OTLPExporter().content_type == "application/x-protobuf"
        assert OTLPExporter(encoding="json").content_type == "application/json"

    def test_bad_options_rejected(self) -> None:
        """Unknown encodings or compressions fail at construction."""
        with pytest.raises(ValueError, match="encoding"):
            OTLPExporter(encoding="xml")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="compression"):
            OTLPExporter(compression="br")  # type: ignore[arg-type]

    def test_protobuf_without_package_says_what_to_install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without opentelemetry-proto, protobuf encoding fails at construction naming the extra."""
        monkeypatch.setitem(sys.modules, "opentelemetry.proto.collector.trace.v1.trace_service_pb2", None)
        proto.cache_clear()
        try:
            with pytest.raises(ImportError, match=r"flowtracker\[otlp\]"):
                OTLPExporter()
            assert OTLPExporter(encoding="json").encoding == "json"
        finally:
            proto.cache_clear()


class TestOutageLogging:
    async def test_outage_summarised_with_counts_then_recovery_said_once(
        self, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A real receiver goes down for several summary intervals, then comes back: the first failure
        is logged at once, then one summary per interval with the traces failed in it and the last
        error, then one line saying export recovered. The counts in the lines add up to the stats."""
        from flowtracker._pipeline import failure_log

        monkeypatch.setattr(failure_log, "WARN_INTERVAL", 0.4)
        receiver = Receiver()
        url = await receiver.start()
        port = receiver.port
        otlp = OTLPExporter(url + "/v1/traces", encoding="json", max_retries=0, max_time=2.0, backoff=0.01)
        caplog.set_level(logging.WARNING, logger="flowtracker")
        try:
            async with ft.Tracker(exporters=[otlp]) as tracker:
                emit(1)
                await tracker.flush()
                await receiver.close()  # the collector goes down
                began = time.monotonic()
                for _ in range(12):  # 1.2 s or more of failing batches, 3 traces each
                    emit(3)
                    await tracker.flush()
                    await asyncio.sleep(0.1)
                outage = time.monotonic() - began
                await receiver.start(port)  # and comes back
                for _ in range(3):
                    emit(2)
                    await tracker.flush()
        finally:
            await receiver.close()
        stats = tracker.stats.exporters["otlp"]
        assert (stats.exported, stats.failed) == (7, 36)
        lines = [r.getMessage() for r in caplog.records if r.name == "flowtracker"]
        first, *summaries, recovered = lines
        assert first.startswith("exporter otlp failed: DeliveryError(")
        assert first.endswith("; 3 traces failed")
        assert 1 <= len(summaries) <= outage / 0.4 + 1, lines  # at most one per interval
        for line in summaries:
            assert re.fullmatch(
                r"exporter otlp: \d+ traces failed in the last \d s \(\d+ batches\); last error: "
                r"DeliveryError\(.*\)",
                line,
            ), line
        summed = 3 + sum(int(line.split(": ")[1].split()[0]) for line in summaries)
        since_last = int(re.search(r"\((\d+) since the last message\)", recovered).group(1))  # type: ignore[union-attr]
        assert summed + since_last == 36
        assert recovered.startswith("exporter otlp recovered: exporting again after 36 failed traces")


# ---- the round trip: wire -> OTLP -> wire ----------------------------------------------------

_RESERVED = {"flowtracker.status", "flowtracker.busy_ms", "flowtracker.stalled_ms"} | {
    f"flowtracker.{field}" for field in ("dropped_spans", "follow_up", "unfinished_spans", "loop_monitor")
}
_EPOCH_US = 1_700_000_000_000_000  # 2023-11-14, microseconds


def _values() -> st.SearchStrategy[Any]:
    """Every tag value type flowtracker writes: None, bool, int64, finite float, str, list, dict."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=20)
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=8,
    )


_tags = st.dictionaries(st.text(max_size=12).filter(lambda key: key not in _RESERVED), _values(), min_size=1,
                        max_size=4)  # fmt: skip
_names = st.text(min_size=1, max_size=30).filter(lambda name: name != "exception")
_hex16 = st.integers(min_value=1, max_value=2**64 - 1).map(lambda n: f"{n:016x}")


@st.composite
def _events(draw: st.DrawFn, start_us: int) -> dict[str, Any]:
    at = format_rfc3339((start_us + draw(st.integers(0, 10**9))) * 1000)
    if draw(st.booleans()):  # what the event-loop monitor records
        stack = draw(st.text(min_size=1, max_size=200))
        return {"name": BLOCKED_EVENT, "time": at,
                "attributes": {"duration_ms": draw(st.floats(0, 1e6)), "stack": stack}}  # fmt: skip
    event: dict[str, Any] = {"name": draw(_names), "time": at}
    if draw(st.booleans()):
        event["attributes"] = draw(_tags)
    return event


@st.composite
def _spans(draw: st.DrawFn, span_id: str, parent_id: str | None) -> dict[str, Any]:
    start_us = _EPOCH_US + draw(st.integers(0, 10**12))
    true_start = start_us * 1000 + draw(st.integers(0, 999))
    length = draw(st.integers(0, 10**13))  # nanoseconds, as the monotonic clock measures them
    span: dict[str, Any] = {"span_id": span_id}
    if parent_id is not None:
        span["parent_id"] = parent_id
    span["name"] = draw(_names)
    span["start_time"] = format_rfc3339(start_us * 1000)
    span["end_time"] = format_rfc3339(true_start + length)
    span["duration_ms"] = length / 1e6
    span["status"] = status = draw(st.sampled_from(["ok", "error", "cancelled", "unfinished"]))
    kind = draw(st.sampled_from([None, "server", "client", "producer", "consumer"]))
    if kind:
        span["kind"] = kind
    for field in ("busy_ms", "stalled_ms"):
        if draw(st.booleans()):
            span[field] = draw(st.floats(0, 1e7))
    if draw(st.booleans()):
        span["tags"] = draw(_tags)
    if draw(st.booleans()):
        span["dropped_tags"] = draw(st.integers(1, 1000))
    if status == "error" and draw(st.booleans()):
        span["error"] = {"type": draw(st.text(max_size=20)), "message": draw(st.text(max_size=40))}
    events = draw(st.lists(_events(start_us), max_size=3))
    if events:
        span["events"] = events
    return span


@st.composite
def wire_traces(draw: st.DrawFn) -> dict[str, Any]:
    """A wire-format trace with every optional field flowtracker writes, each present or not."""
    ids = draw(st.lists(_hex16, min_size=1, max_size=5, unique=True))
    spans = [
        draw(_spans(span_id, None if index == 0 else draw(st.sampled_from([*ids[:index], draw(_hex16)]))))
        for index, span_id in enumerate(ids)
    ]
    trace: dict[str, Any] = {
        "trace_id": f"{draw(st.integers(1, 2**128 - 1)):032x}",
        "service": draw(st.text(min_size=1, max_size=20)),
        "spans": spans,
    }
    for field in ("dropped_spans", "unfinished_spans"):
        if draw(st.booleans()):
            trace[field] = draw(st.integers(1, 10**6))
    if draw(st.booleans()):
        trace["follow_up"] = True
    if draw(st.booleans()):
        trace["loop_monitor"] = draw(st.sampled_from(["full", "blocks"]))
    return trace


def _one_span_trace(trace_id: int, service: str) -> dict[str, Any]:
    span = {"span_id": "1" * 16, "name": "0", "start_time": "2023-11-14T22:13:20.000000Z",
            "end_time": "2023-11-14T22:13:20.000000Z", "duration_ms": 0.0, "status": "ok"}  # fmt: skip
    return {"trace_id": f"{trace_id:032x}", "service": service, "spans": [span]}


class TestRoundTrip:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(wire_traces(), min_size=1, max_size=3))
    # A service's traces on either side of another service's: grouped per service.
    @example([_one_span_trace(2, "0"), _one_span_trace(1, "00"), _one_span_trace(1, "0")])
    def test_wire_to_otlp_to_wire_loses_nothing(self, traces: list[dict[str, Any]]) -> None:
        """Wire traces sent as OTLP protobuf and as OTLP JSON read back exactly as they were.

        Status (``cancelled`` and ``unfinished`` included), kind, every tag
        type, events (the loop monitor's ``event_loop.blocked`` with its
        stack), dropped counts, ``busy_ms``, ``stalled_ms``, the trace's own
        fields (``loop_monitor`` too), the times to the microsecond and the
        exact duration all survive: the mapping is one module, both ways.
        """
        request = otlp_request_dict(traces)
        binary = request_message(request).SerializeToString()
        bodies = ((binary, "application/x-protobuf"), (orjson.dumps(request), "application/json"))
        for body, content_type in bodies:
            decoded = traces_from_request(parse_request(body, content_type))
            assert decoded.rejected == 0
            assert decoded.traces == _grouped(traces), content_type
            # serve's path: the indexed fields, then each span read from its kept message later.
            records = span_records(parse_request(body, content_type))
            assert records.rejected == 0
            assert _from_records(records.records) == decoded.traces, content_type

    def test_loop_monitor_fields_travel_as_attributes(self) -> None:
        """``busy_ms`` and ``stalled_ms`` are the attributes ``flowtracker.busy_ms`` / ``.stalled_ms``.

        Jaeger and Tempo show attributes, so the loop insight reaches them too;
        the trace's ``loop_monitor`` rides on its first span.
        """
        span = {"span_id": "a" * 16, "name": "x", "status": "ok", "duration_ms": 1.0, "busy_ms": 0.75,
                "stalled_ms": 12.5, "start_time": "2026-11-20T10:00:00.000000Z",
                "end_time": "2026-11-20T10:00:00.001000Z"}  # fmt: skip
        request = otlp_request_dict([{"trace_id": "1" * 32, "loop_monitor": "full", "spans": [span]}])
        [otlp_span] = request["resourceSpans"][0]["scopeSpans"][0]["spans"]
        assert {item["key"]: item["value"] for item in otlp_span["attributes"]} == {
            "flowtracker.busy_ms": {"doubleValue": 0.75},
            "flowtracker.stalled_ms": {"doubleValue": 12.5},
            "flowtracker.loop_monitor": {"stringValue": "full"},
        }


def _from_records(records: list[SpanRecord]) -> list[dict[str, Any]]:
    """Wire traces from ``span_records``: spans read back from their messages, checked against their index."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        trace_id, span_id, parent, service, name, start, end, status, blocked, message, extra = record
        span = span_from_message(message)
        assert (span_id, parent, name, status) == (span["span_id"], span.get("parent_id"), span["name"],
                                                   span["status"])  # fmt: skip
        assert (span["start_time"], span["end_time"]) == (format_rfc3339(start), format_rfc3339(end))
        assert blocked == any(event["name"] == BLOCKED_EVENT for event in span.get("events", ()))
        trace = out.setdefault((service, trace_id), {"trace_id": trace_id, "service": service, "spans": []})
        trace["spans"].append(span)
        if extra is not None:  # a request's trace fields, on one span of each service's record of it
            assert trace.keys() == {"trace_id", "service", "spans"}
            trace.update(orjson.loads(extra))
    return list(out.values())


def _grouped(traces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the decoder answers: one trace per service and trace id (records of both joined).

    In the request's order: the spans are grouped per service (services in
    the order first seen), so a service's traces come together even when
    another service's trace came between them.
    """
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for trace in traces:
        key = (trace["service"], trace["trace_id"])
        if key not in out:
            out[key] = {**trace, "spans": list(trace["spans"])}
            continue
        joined = out[key]
        joined["spans"] += trace["spans"]
        for field in ("dropped_spans", "unfinished_spans"):
            if trace.get(field):
                joined[field] = joined.get(field, 0) + trace[field]
        if trace.get("follow_up"):
            joined["follow_up"] = True
        if trace.get("loop_monitor"):
            joined.setdefault("loop_monitor", trace["loop_monitor"])
    services = list(dict.fromkeys(service for service, _ in out))
    return [out[key] for key in sorted(out, key=lambda key: services.index(key[0]))]


class _ScriptedGrpcReceiver:
    """A grpc.aio server whose Export answers follow a script of status codes, then OK."""

    def __init__(self, script: list[Any]) -> None:
        self.script = list(script)
        self.bodies: list[bytes] = []
        self.metadata: list[dict[str, str]] = []

    async def __aenter__(self) -> _ScriptedGrpcReceiver:
        import grpc

        async def export(body: bytes, context: Any) -> bytes:
            self.bodies.append(body)
            self.metadata.append(dict(context.invocation_metadata()))
            if self.script:
                await context.abort(self.script.pop(0), "scripted")
            return b""

        self.server = grpc.aio.server()
        service, method = EXPORT_METHOD.lstrip("/").split("/")
        handler = grpc.unary_unary_rpc_method_handler(export)
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {method: handler}),)
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop(None)


class TestGrpcExporter:
    async def test_retryable_codes_are_retried_then_delivered(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """UNAVAILABLE twice, then OK: gRPC's retry policy delivers the batch; headers ride as metadata."""
        import grpc

        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "api-key=k1")
        async with _ScriptedGrpcReceiver([grpc.StatusCode.UNAVAILABLE] * 2) as receiver:
            exporter = OTLPGrpcExporter.from_url(f"otlp+grpc://127.0.0.1:{receiver.port}")
            exporter_fast = OTLPGrpcExporter(exporter.target, headers={"api-key": "k1"}, backoff=0.01)
            async with ft.Tracker(exporters=[exporter_fast], service="g") as tracker:
                emit(1)
                await tracker.flush()
                assert tracker.stats.exporters["otlp-grpc"].exported == 1
            assert exporter.metadata == (("api-key", "k1"),)
        assert len(receiver.bodies) == 3
        assert receiver.metadata[-1]["api-key"] == "k1"
        message = ExportTraceServiceRequest()
        message.ParseFromString(receiver.bodies[-1])
        assert [span.name for span in all_spans(message)] == ["t0"]

    async def test_other_codes_fail_the_batch(self) -> None:
        """INVALID_ARGUMENT is not retried: one attempt, the batch counted as failed."""
        import grpc

        async with _ScriptedGrpcReceiver([grpc.StatusCode.INVALID_ARGUMENT]) as receiver:
            exporter = OTLPGrpcExporter(f"127.0.0.1:{receiver.port}", backoff=0.01)
            async with ft.Tracker(exporters=[exporter], service="g") as tracker:
                emit(1)
                await tracker.flush()
                assert tracker.stats.exporters["otlp-grpc"].failed == 1
        assert len(receiver.bodies) == 1

    def test_url_options(self) -> None:
        """otlp+grpc:// is plaintext, otlp+grpcs:// TLS; port 4317 by default; bad options refused."""
        plain = OTLPGrpcExporter.from_url("otlp+grpc://collector?compression=gzip&service=s&timeout=3")
        assert (plain.target, plain.tls, plain.compression, plain.service, plain.max_time) == (
            "collector:4317", False, "gzip", "s", 3.0,
        )  # fmt: skip
        assert OTLPGrpcExporter.from_url("otlp+grpcs://[::1]:9999").target == "[::1]:9999"
        assert OTLPGrpcExporter.from_url("otlp+grpcs://[::1]:9999").tls is True
        with pytest.raises(ValueError, match="max_attempts"):
            OTLPGrpcExporter(max_attempts=9)
        with pytest.raises(ValueError, match="compression"):
            OTLPGrpcExporter(compression="br")  # type: ignore[arg-type]
