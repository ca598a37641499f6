"""``flowtracker serve`` in-process: OTLP in from real SDKs, the JSON API, the live feed, bad bodies.

Every peer is real: the OpenTelemetry SDK's own HTTP and gRPC exporters,
flowtracker's OTLP exporters, aiohttp and grpcio clients, all on loopback
ports the OS picked.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import orjson
import pytest
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from serve_helpers import JSON, PROTOBUF, get_json, post, protobuf_body, running_server, wire_span

import flowtracker as ft
from flowtracker._wire.names import BLOCKED_EVENT
from flowtracker._wire.otlp import EXPORT_METHOD, otlp_request_dict
from flowtracker._wire.otlp_proto import request_message
from flowtracker.exporters.otlp import OTLPExporter
from flowtracker.serve.command import Server
from flowtracker.serve.rows import MAX_MESSAGE

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(str(tmp_path / "store.db")) as running:
        yield running


def sdk_provider(service: str, exporter: Any) -> TracerProvider:
    provider = TracerProvider(resource=Resource({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


class TestOTLPIn:
    async def test_sdk_http_and_grpc_exporters_join_in_one_trace(self, server: Server) -> None:
        """Spans of one trace sent by two services, one over OTLP/HTTP and one over OTLP/gRPC, are one trace.

        Each span keeps its own ``service`` (from its resource's
        ``service.name``), the summary lists both services, and the root is
        the HTTP service's span.
        """
        front = sdk_provider("front", HttpSpanExporter(f"http://127.0.0.1:{server.port}/v1/traces"))
        back = sdk_provider("back", GrpcSpanExporter(f"127.0.0.1:{server.grpc_port}", insecure=True))

        def traced() -> str:
            with (
                front.get_tracer("t").start_as_current_span("GET /orders", kind=SpanKind.SERVER) as root,
                back.get_tracer("t").start_as_current_span("SELECT orders", kind=SpanKind.CLIENT) as call,
            ):
                call.set_attribute("db.rows", 3)
                call.set_status(Status(StatusCode.ERROR, "TimeoutError: slow"))
            front.shutdown()
            back.shutdown()
            return f"{root.get_span_context().trace_id:032x}"

        trace_id = await asyncio.to_thread(traced)
        status, trace = await get_json(server.port, f"/api/traces/{trace_id}")
        assert status == 200
        by_name = {span["name"]: span for span in trace["spans"]}
        assert by_name["GET /orders"]["service"] == "front"
        assert by_name["GET /orders"]["kind"] == "server"
        call = by_name["SELECT orders"]
        assert (call["service"], call["kind"], call["status"]) == ("back", "client", "error")
        assert call["error"] == {"type": "TimeoutError", "message": "slow"}
        assert call["tags"] == {"db.rows": 3}
        assert call["parent_id"] == by_name["GET /orders"]["span_id"]
        _, listing = await get_json(server.port, "/api/traces")
        [summary] = listing["traces"]
        assert (summary["name"], summary["service"], summary["services"]) == (
            "GET /orders",
            "front",
            ["back", "front"],
        )
        assert (summary["span_count"], summary["status"]) == (2, "error")

    async def test_otlp_json_with_hex_ids_and_links(self, server: Server) -> None:
        """OTLP JSON (hex ids in spans and links, camelCase, times as strings, enum names) is read.

        protobuf's own JSON parser would take the ids for base64; they arrive as the hex they are.
        """
        body = {
            "resourceSpans": [{
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "js-app"}}]},
                "scopeSpans": [{"spans": [{
                    "traceId": TRACE, "spanId": "00f067aa0ba902b7", "name": "GET /",
                    "kind": "SPAN_KIND_SERVER", "startTimeUnixNano": "1795168800000000000",
                    "endTimeUnixNano": "1795168800250000000",
                    "attributes": [{"key": "http.status_code", "value": {"intValue": "200"}},
                                   {"key": "ratio", "value": {"doubleValue": 0.5}}],
                    "links": [{"traceId": "a" * 32, "spanId": "b" * 16}],
                    "status": {"code": 1},
                }]}],
            }]
        }  # fmt: skip
        status, answer = await post(server.port, orjson.dumps(body), JSON)
        assert (status, orjson.loads(answer)) == (200, {})
        _, trace = await get_json(server.port, f"/api/traces/{TRACE}")
        assert trace["spans"] == [
            {"span_id": "00f067aa0ba902b7", "name": "GET /", "start_time": "2026-11-20T10:00:00.000000Z",
             "end_time": "2026-11-20T10:00:00.250000Z", "duration_ms": 250.0, "status": "ok",
             "kind": "server", "tags": {"http.status_code": 200, "ratio": 0.5}, "service": "js-app"}
        ]  # fmt: skip

    async def test_gzip_bodies_in_both_encodings(self, server: Server) -> None:
        """``Content-Encoding: gzip`` works for protobuf and for JSON bodies."""
        traces = [{"trace_id": TRACE, "service": "s", "spans": [wire_span("a" * 16, "root")]}]
        for body, content_type in (
            (protobuf_body(traces), PROTOBUF),
            (orjson.dumps(otlp_request_dict(traces)), JSON),
        ):
            status, _ = await post(
                server.port, gzip.compress(body), content_type, **{"Content-Encoding": "gzip"}
            )
            assert status == 200
        _, listing = await get_json(server.port, "/api/traces")
        assert [summary["span_count"] for summary in listing["traces"]] == [1]

    async def test_flowtracker_exporter_with_the_loop_monitor_round_trips(self, server: Server) -> None:
        """flowtracker's OTLP exporter, loop monitor on: ``busy_ms`` and the blocked event survive.

        The span that held the loop arrives with its busy time (from the
        attribute ``flowtracker.busy_ms``, lifted back out of the tags) and its
        ``event_loop.blocked`` event with the stack naming this file.
        """
        exporter = OTLPExporter(f"http://127.0.0.1:{server.port}/v1/traces")
        async with (
            ft.monitor_event_loop(0.05),
            ft.Tracker(exporters=[exporter], service="shop") as tracker,
        ):
            async with ft.span("checkout"):
                await asyncio.sleep(0)
                async with ft.span("price"):
                    time.sleep(0.12)  # noqa: ASYNC251 - holds the loop: a block, pinned to this span
            await tracker.flush()
        _, listing = await get_json(server.port, "/api/traces")
        [summary] = listing["traces"]
        assert summary["blocked"] is True
        assert summary["service"] == "shop"
        _, trace = await get_json(server.port, f"/api/traces/{summary['trace_id']}")
        price = next(span for span in trace["spans"] if span["name"] == "price")
        assert price["busy_ms"] >= 100
        [block] = [event for event in price["events"] if event["name"] == BLOCKED_EVENT]
        assert block["attributes"]["duration_ms"] >= 100
        assert "test_serve.py" in block["attributes"]["stack"]
        assert "flowtracker.busy_ms" not in price.get("tags", {})

    async def test_flowtracker_grpc_exporter_url(self, server: Server) -> None:
        """``otlp+grpc://host:port`` is an exporter URL; its traces land in serve, gzip on."""
        url = f"otlp+grpc://127.0.0.1:{server.grpc_port}?compression=gzip"
        async with ft.Tracker(exporters=[url], service="grpc-app") as tracker:
            async with ft.span("job", n=1):
                pass
            await tracker.flush()
            assert tracker.stats.exporters["otlp-grpc"].exported == 1
        _, listing = await get_json(server.port, "/api/traces?service=grpc-app")
        assert [summary["name"] for summary in listing["traces"]] == ["job"]

    async def test_late_spans_join_and_the_root_is_recomputed(self, server: Server) -> None:
        """A child that arrives first is the root until its parent arrives; then the summary changes."""
        child = wire_span("c" * 16, "child", "a" * 16, start_us=100, ms=5)
        await post(server.port, protobuf_body([{"trace_id": TRACE, "service": "late", "spans": [child]}]))
        _, first = await get_json(server.port, "/api/traces")
        assert (first["traces"][0]["name"], first["traces"][0]["span_count"]) == ("child", 1)
        root = wire_span("a" * 16, "root", start_us=0, ms=50)
        await post(server.port, protobuf_body([{"trace_id": TRACE, "service": "early", "spans": [root]}]))
        _, second = await get_json(server.port, "/api/traces")
        summary = second["traces"][0]
        assert (summary["name"], summary["service"], summary["span_count"]) == ("root", "early", 2)
        assert summary["services"] == ["early", "late"]
        assert summary["duration_ms"] == 50.0

    async def test_same_span_sent_twice_is_stored_once(self, server: Server) -> None:
        """A retried request (same span ids) replaces, never duplicates."""
        body = protobuf_body([{"trace_id": TRACE, "service": "s", "spans": [wire_span("a" * 16, "root")]}])
        for _ in range(2):
            assert (await post(server.port, body))[0] == 200
        _, trace = await get_json(server.port, f"/api/traces/{TRACE}")
        assert len(trace["spans"]) == 1


def _traces_for_api() -> list[dict[str, Any]]:
    """Four traces: different services, names, statuses, durations, one blocked."""
    block = {"name": BLOCKED_EVENT, "time": "2026-11-20T10:00:00.000100Z",
             "attributes": {"duration_ms": 120.0, "stack": "app.py:3 in handler"}}  # fmt: skip
    return [
        {"trace_id": "1" * 32, "service": "web",
         "spans": [wire_span("1" * 16, "GET /orders", start_us=1000, ms=10),
                   {**wire_span("2" * 16, "db", "1" * 16, start_us=1001, ms=5), "service": "db"}]},
        {"trace_id": "2" * 32, "service": "web",
         "spans": [wire_span("3" * 16, "GET /users", start_us=2000, ms=300, status="error",
                             error={"type": "KeyError", "message": "'id'"})]},
        {"trace_id": "3" * 32, "service": "jobs",
         "spans": [wire_span("4" * 16, "nightly_orders", start_us=3000, ms=150, events=[block])]},
        {"trace_id": "4" * 32, "service": "jobs",
         "spans": [wire_span("5" * 16, "cleanup", start_us=4000, ms=1, status="cancelled")]},
    ]  # fmt: skip


class TestAPI:
    @pytest.fixture
    async def loaded(self, server: Server) -> Server:
        for trace in _traces_for_api():
            service = trace["service"]
            spans = [span for span in trace["spans"] if span.get("service", service) == service]
            others = [
                {k: v for k, v in span.items() if k != "service"}
                for span in trace["spans"]
                if span not in spans
            ]
            await post(server.port, protobuf_body([{**trace, "spans": spans}]))
            if others:
                await post(server.port, protobuf_body([{**trace, "service": "db", "spans": others}]))
        return server

    async def names(self, server: Server, query: str) -> list[str]:
        status, answer = await get_json(server.port, f"/api/traces{query}")
        assert status == 200, answer
        return [summary["name"] for summary in answer["traces"]]

    async def test_summaries_newest_first_with_every_field(self, loaded: Server) -> None:
        """``GET /api/traces`` lists summaries newest first, with the contract's fields."""
        _status, answer = await get_json(loaded.port, "/api/traces")
        assert [summary["name"] for summary in answer["traces"]] == [
            "cleanup",
            "nightly_orders",
            "GET /users",
            "GET /orders",
        ]
        assert answer["traces"][-1] == {
            "trace_id": "1" * 32, "name": "GET /orders", "service": "web", "services": ["db", "web"],
            "start_time": "2026-11-20T10:00:00.001000Z", "duration_ms": 10.0, "span_count": 2, "status": "ok",
            "blocked": False,
        }  # fmt: skip

    async def test_each_filter(self, loaded: Server) -> None:
        """service (any span), name (substring, any case), status, min_duration_ms, blocked, limit."""
        assert await self.names(loaded, "?service=db") == ["GET /orders"]
        assert await self.names(loaded, "?service=jobs") == ["cleanup", "nightly_orders"]
        assert await self.names(loaded, "?name=ORDERS") == ["nightly_orders", "GET /orders"]
        assert await self.names(loaded, "?name=%25") == []  # a literal %, not a wildcard
        assert await self.names(loaded, "?status=error") == ["GET /users"]
        assert await self.names(loaded, "?status=cancelled") == ["cleanup"]
        assert await self.names(loaded, "?min_duration_ms=100") == ["nightly_orders", "GET /users"]
        assert await self.names(loaded, "?blocked=true") == ["nightly_orders"]
        assert await self.names(loaded, "?limit=1") == ["cleanup"]
        assert await self.names(loaded, "?service=web&min_duration_ms=100&status=error") == ["GET /users"]

    async def test_bad_parameters_are_400(self, loaded: Server) -> None:
        """A bad value or an unknown parameter is a 400 that names it."""
        for query, word in (("?status=weird", "status"), ("?limit=0", "limit"), ("?limit=x", "limit"),
                            ("?min_duration_ms=-1", "min_duration_ms"), ("?blocked=maybe", "blocked"),
                            ("?serivce=web", "serivce")):  # fmt: skip
            status, answer = await get_json(loaded.port, f"/api/traces{query}")
            assert status == 400, query
            assert word in answer["error"]

    async def test_one_trace_in_the_wire_format(self, loaded: Server) -> None:
        """``GET /api/traces/{id}``: the wire format, ``service`` on every span; 404 unknown, 400 bad id."""
        status, trace = await get_json(loaded.port, f"/api/traces/{'1' * 32}")
        assert status == 200
        assert trace["trace_id"] == "1" * 32
        assert [(span["name"], span["service"]) for span in trace["spans"]] == [
            ("GET /orders", "web"),
            ("db", "db"),
        ]
        status, answer = await get_json(loaded.port, f"/api/traces/{'9' * 32}")
        assert status == 404
        assert "9" * 32 in answer["error"]
        for bad in ("xyz", "1" * 31, "g" * 32):
            status, answer = await get_json(loaded.port, f"/api/traces/{bad}")
            assert status == 400
            assert "32 hex digits" in answer["error"]

    async def test_trace_fields_of_records_are_joined(self, server: Server) -> None:
        """``dropped_spans`` of two records of one trace add up; ``loop_monitor`` is kept."""
        first = {"trace_id": TRACE, "service": "a", "dropped_spans": 2, "loop_monitor": "full",
                 "spans": [wire_span("a" * 16, "root")]}  # fmt: skip
        second = {"trace_id": TRACE, "service": "b", "dropped_spans": 3, "follow_up": True,
                  "spans": [wire_span("b" * 16, "late", "a" * 16)]}  # fmt: skip
        await post(server.port, protobuf_body([first]))
        await post(server.port, protobuf_body([second]))
        _, trace = await get_json(server.port, f"/api/traces/{TRACE}")
        assert (trace["dropped_spans"], trace["loop_monitor"]) == (5, "full")
        assert "follow_up" not in trace


class TestLiveFeed:
    async def test_new_and_updated_traces_arrive_as_events(self, server: Server) -> None:
        """An open ``/api/live`` gets a ``trace`` event for a new trace, and again when a late span joins."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{server.port}/api/live") as feed,
        ):
            assert feed.headers["Content-Type"] == "text/event-stream"
            assert await feed.content.readline() == b"retry: 1000\n"
            await feed.content.readline()
            await post(
                server.port,
                protobuf_body([{"trace_id": TRACE, "service": "s", "spans": [wire_span("a" * 16, "root")]}]),
            )
            event = await asyncio.wait_for(_next_event(feed), 5)
            assert (event[0], event[1]["trace_id"], event[1]["span_count"]) == ("trace", TRACE, 1)
            late = wire_span("b" * 16, "late", "a" * 16, start_us=10)
            await post(server.port, protobuf_body([{"trace_id": TRACE, "service": "s", "spans": [late]}]))
            event = await asyncio.wait_for(_next_event(feed), 5)
            assert (event[1]["span_count"], event[1]["name"]) == (2, "root")

    async def test_a_slow_feed_gets_a_reset_not_an_endless_buffer(self) -> None:
        """Past MAX_WAITING distinct traces waiting, a feed drops them for one ``reset`` event."""
        from flowtracker.serve.feed import MAX_WAITING, Hub

        hub = Hub()
        subscription = hub.subscribe()
        events = subscription.events()
        assert await events.__anext__() == b"retry: 1000\n\n"
        hub.publish([{"trace_id": f"{n:032x}"} for n in range(MAX_WAITING + 1)])
        assert subscription.waiting == {}
        assert await events.__anext__() == b"event: reset\ndata: {}\n\n"
        hub.publish([{"trace_id": "1" * 32}, {"trace_id": "1" * 32, "v": 2}])  # updates of one trace coalesce
        chunk = await events.__anext__()
        assert chunk.count(b"event: trace") == 1
        assert b'"v":2' in chunk
        hub.close()
        with pytest.raises(StopAsyncIteration):
            await events.__anext__()


async def _next_event(feed: aiohttp.ClientResponse) -> tuple[str, Any]:
    name, data = "", b""
    while True:
        line = await feed.content.readline()
        if line.startswith(b"event: "):
            name = line[7:].strip().decode()
        elif line.startswith(b"data: "):
            data = line[6:].strip()
        elif line == b"\n" and name:
            return name, orjson.loads(data)


class TestBadBodies:
    async def assert_still_serving(self, server: Server) -> None:
        body = protobuf_body(
            [{"trace_id": "f" * 32, "service": "ok", "spans": [wire_span("f" * 16, "fine")]}]
        )
        assert (await post(server.port, body))[0] == 200

    async def test_each_bad_body_gets_its_status(self, server: Server) -> None:
        """400 for what does not decode, 415 for other types and encodings; the server keeps serving.

        Error bodies are a ``google.rpc.Status`` in the request's encoding.
        """
        good = otlp_request_dict([{"trace_id": TRACE, "spans": [wire_span("a" * 16, "x")]}])
        not_hex = orjson.loads(orjson.dumps(good))
        not_hex["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = "zz" * 8
        cases = [
            (b"\xff\xff\xff garbage", PROTOBUF, {}, 400, "protobuf"),
            (b"{not json", JSON, {}, 400, "not JSON"),
            (b"[1, 2]", JSON, {}, 400, "no JSON object"),
            (b'{"resourceSpans": "nope"}', JSON, {}, 400, "resourceSpans"),
            (orjson.dumps(not_hex), JSON, {}, 400, "spanId"),
            (b"hello", "text/plain", {}, 415, "Content-Type"),
            (protobuf_body([]), PROTOBUF, {"Content-Encoding": "br"}, 415, "Content-Encoding"),
            (b"not gzip", PROTOBUF, {"Content-Encoding": "gzip"}, 400, "gzip"),
        ]
        for body, content_type, headers, expected, words in cases:
            status, answer = await post(server.port, body, content_type, **headers)
            assert status == expected, (body[:20], answer)
            if content_type == PROTOBUF:
                message = status_pb2.Status()
                message.ParseFromString(answer)
                assert words in message.message
            else:
                assert words in orjson.loads(answer)["message"]
            await self.assert_still_serving(server)

    async def test_over_the_size_limit_is_413(self, server: Server) -> None:
        """A body over 32 MiB, or a gzip body that inflates past it, is 413; the server keeps serving."""
        huge = b"\x00" * (32 * 1024 * 1024 + 1)
        assert (await post(server.port, huge))[0] == 413
        bomb = gzip.compress(b"\x00" * (40 * 1024 * 1024))  # 40 KiB that inflate to 40 MiB
        assert (await post(server.port, bomb, **{"Content-Encoding": "gzip"}))[0] == 413
        await self.assert_still_serving(server)

    async def test_too_many_spans_in_one_request_is_413(self, tmp_path: Path) -> None:
        """More spans than ``max_spans`` in one request are refused whole, with the count named."""
        async with running_server(str(tmp_path / "s.db")) as server:
            spans = [wire_span(f"{n + 1:016x}", "s") for n in range(100_001)]
            status, answer = await post(server.port, protobuf_body([{"trace_id": TRACE, "spans": spans}]))
            assert status == 413
            message = status_pb2.Status()
            message.ParseFromString(answer)
            assert "100001 spans" in message.message
            await self.assert_still_serving(server)

    async def test_malformed_ids_are_a_partial_success(self, server: Server) -> None:
        """Spans with malformed ids are left out and counted; the rest of the request is stored."""
        spans = [wire_span("a" * 16, "good"), wire_span("b" * 16, "short id")]
        message = request_message(otlp_request_dict([{"trace_id": TRACE, "service": "s", "spans": spans}]))
        message.resource_spans[0].scope_spans[0].spans[1].span_id = b"\x01\x02\x03"
        extra = message.resource_spans[0].scope_spans[0].spans.add()
        extra.CopyFrom(message.resource_spans[0].scope_spans[0].spans[0])
        extra.trace_id = bytes(16)
        status, answer = await post(server.port, message.SerializeToString())
        assert status == 200
        response = ExportTraceServiceResponse()
        response.ParseFromString(answer)
        assert response.partial_success.rejected_spans == 2
        assert "span_id has 3 bytes" in response.partial_success.error_message
        _, trace = await get_json(server.port, f"/api/traces/{TRACE}")
        assert [span["name"] for span in trace["spans"]] == ["good"]

    async def test_huge_attributes_are_cut_and_marked(self, server: Server) -> None:
        """A 5 MB attribute value is stored cut to 4096 characters, marked as flowtracker marks cuts.

        A span of ordinary size is kept as its message, cut when read, the same.
        """
        small = wire_span("b" * 16, "y", "a" * 16, tags={"blob": "z" * 5_000})
        span = wire_span("a" * 16, "x", tags={"blob": "y" * 5_000_000})
        body = protobuf_body([{"trace_id": TRACE, "spans": [span, small]}])
        assert (await post(server.port, body))[0] == 200
        _, trace = await get_json(server.port, f"/api/traces/{TRACE}")
        blob, cut = (span["tags"]["blob"] for span in trace["spans"])
        assert blob.startswith("y" * 4096)
        assert blob.endswith("…[truncated 4995904 chars]")
        assert cut == "z" * 4096 + "…[truncated 904 chars]"
        with contextlib.closing(sqlite3.connect(server.options.db)) as connection:
            sizes = [row[0] for row in connection.execute("SELECT length(body) FROM spans ORDER BY span_id")]
        assert sizes[0] < 5_000 < sizes[1] < MAX_MESSAGE  # the huge one stored cut, the small one whole

    async def test_grpc_bad_requests_get_their_codes(self, server: Server) -> None:
        """Over gRPC: garbage is INVALID_ARGUMENT, a message over the limit RESOURCE_EXHAUSTED."""
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{server.grpc_port}", options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
        ) as channel:
            export = channel.unary_unary(EXPORT_METHOD)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await export(b"\xff\xff garbage", timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await export(b"\x0a" + b"\xff" * (33 * 1024 * 1024), timeout=30)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            good = protobuf_body([{"trace_id": TRACE, "spans": [wire_span("a" * 16, "x")]}])
            assert await export(good, timeout=10) == b""
