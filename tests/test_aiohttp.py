"""aiohttp integration against real servers on 127.0.0.1: middleware, setup, client tracing."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import sys
import textwrap
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from web_helpers import collected, fetch, leave_mid_stream, serve

import flowtracker as ft
from flowtracker._core import clock as _clock
from flowtracker.aiohttp import TRACKER_KEY, client_trace_config, middleware, setup

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"




def by_name(trace: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {span["name"]: span for span in trace["spans"]}


async def hello(request: web.Request) -> web.Response:
    async with ft.span("load", order=request.match_info.get("id")):
        await asyncio.sleep(0)
    return web.Response(text="hi")


def app_with(tracker: ft.Tracker | None, **options: Any) -> web.Application:
    app = web.Application(middlewares=[middleware(tracker, **options)])
    app.router.add_get("/orders/{id}", hello)
    app.router.add_get("/health", hello)
    return app


class TestRootSpan:
    async def test_named_after_the_route_template_with_tags(self, tracker, memory):
        """One root per request, `GET /orders/{id}`, kind server, with method/route/target/status tags."""
        async with serve(app_with(tracker)) as url:
            assert (await fetch(url + "/orders/42?secret=1"))[2] == b"hi"
        (trace,) = await collected(tracker, memory, 1)
        root, child = trace["spans"]
        assert root["name"] == "GET /orders/{id}"
        assert root["kind"] == "server"
        assert root["status"] == "ok"
        assert root["tags"] == {
            "http.method": "GET",
            "http.route": "/orders/{id}",
            "http.target": "/orders/42",
            "http.status_code": 200,
        }
        assert "parent_id" not in root
        assert child["parent_id"] == root["span_id"]

    async def test_unmatched_routes_share_one_bounded_name(self, tracker, memory):
        """404s are named `GET <unmatched>` whatever the path; no http.route tag."""
        async with serve(app_with(tracker)) as url:
            for path in ("/a", "/b/c", "/d?x=1"):
                assert (await fetch(url + path))[0] == 404
            assert (await fetch(url + "/orders/1", "POST"))[0] == 405
        traces = await collected(tracker, memory, 4)
        assert {t["spans"][0]["name"] for t in traces} == {"GET <unmatched>", "POST <unmatched>"}
        assert all("http.route" not in t["spans"][0]["tags"] for t in traces)
        assert sorted(t["spans"][0]["tags"]["http.status_code"] for t in traces) == [404, 404, 404, 405]

    async def test_unmatched_route_fallback_is_configurable(self, tracker, memory):
        """`unmatched_route` replaces the fallback."""
        async with serve(app_with(tracker, unmatched_route="/*")) as url:
            await fetch(url + "/nothing")
        (trace,) = await collected(tracker, memory, 1)
        assert trace["spans"][0]["name"] == "GET /*"

    async def test_names_are_per_route_and_method(self, tracker, memory):
        """One route answering several methods names each request after its own method (names are cached)."""
        app = web.Application(middlewares=[middleware(tracker)])
        app.router.add_route("*", "/any/{id}", hello)
        async with serve(app) as url:
            for method in ("GET", "DELETE", "GET", "PROPFIND", "DELETE"):
                assert (await fetch(url + "/any/1", method))[0] == 200
        traces = await collected(tracker, memory, 5)
        assert sorted(t["spans"][0]["name"] for t in traces) == [
            "DELETE /any/{id}", "DELETE /any/{id}", "GET /any/{id}", "GET /any/{id}", "_OTHER /any/{id}",
        ]
        assert sorted(t["spans"][0]["tags"]["http.method"] for t in traces) == [
            "DELETE", "DELETE", "GET", "GET", "PROPFIND",
        ]

    async def test_zero_config_middleware_uses_the_tracker_in_effect(self, tracker, memory):
        """`middleware()` with no tracker reports to the running tracker (here the test's)."""
        async with serve(app_with(None)) as url:
            await fetch(url + "/orders/1")
        (trace,) = await collected(tracker, memory, 1)
        assert trace["service"] == "test"


class TestRouteNames:
    async def test_same_template_with_two_methods_is_named_per_route(self, tracker, memory):
        """aiohttp makes one route object per method of a resource, and the middleware
        remembers names per route object: GET and POST on one template, asked in turn
        (and a 404 and a 405 between them), are each named after their own method."""

        async def create(request: web.Request) -> web.Response:
            return web.Response(text="made", status=201)

        app = web.Application(middlewares=[middleware(tracker)])
        app.router.add_get("/orders/{id}", hello)
        app.router.add_post("/orders/{id}", create)
        async with serve(app) as url:
            for method, path, status in [
                ("GET", "/orders/1", 200), ("POST", "/orders/2", 201), ("GET", "/nothing", 404),
                ("GET", "/orders/3", 200), ("PUT", "/orders/4", 405), ("POST", "/orders/5", 201),
            ]:
                assert (await fetch(url + path, method))[0] == status
        traces = await collected(tracker, memory, 6)
        names = {t["spans"][0]["tags"]["http.target"]: t["spans"][0]["name"] for t in traces}
        assert names == {
            "/orders/1": "GET /orders/{id}", "/orders/2": "POST /orders/{id}", "/nothing": "GET <unmatched>",
            "/orders/3": "GET /orders/{id}", "/orders/4": "PUT <unmatched>", "/orders/5": "POST /orders/{id}",
        }
        tags = {t["spans"][0]["tags"]["http.target"]: t["spans"][0]["tags"] for t in traces}
        routes = {target: tagged.get("http.route") for target, tagged in tags.items()}
        assert routes["/nothing"] is None
        assert routes["/orders/5"] == "/orders/{id}"

    async def test_span_name_callback_sees_each_request(self, tracker, memory):
        """With a `span_name` callback nothing is remembered per route: the callback gets
        every request, matched or not, and may name it from the request itself."""
        seen: list[str] = []

        def name(method: str, route: str, request: web.Request) -> str:
            seen.append(request.path)
            return f"{method} {route} by {request.query.get('who', '-')}"

        async with serve(app_with(tracker, span_name=name)) as url:
            for who in ("ann", "bob", "cid"):
                assert (await fetch(url + f"/orders/1?who={who}"))[0] == 200
            assert (await fetch(url + "/nothing?who=dan"))[0] == 404
        traces = await collected(tracker, memory, 4)
        assert sorted(t["spans"][0]["name"] for t in traces) == [
            "GET /orders/{id} by ann", "GET /orders/{id} by bob", "GET /orders/{id} by cid",
            "GET <unmatched> by dan",
        ]
        assert sorted(seen) == ["/nothing", "/orders/1", "/orders/1", "/orders/1"]


class TestTraceContext:
    async def test_valid_traceparent_continues_the_callers_trace(self, tracker, memory):
        """Same trace id; the root's parent is the caller's span."""
        headers = {"TraceParent": f"00-{TRACE}-{PARENT}-01"}
        async with serve(app_with(tracker)) as url:
            await fetch(url + "/orders/1", headers=headers)
        (trace,) = await collected(tracker, memory, 1)
        assert trace["trace_id"] == TRACE
        assert trace["spans"][0]["parent_id"] == PARENT

    @pytest.mark.parametrize(
        "value",
        [f"00-{TRACE}-{PARENT}-1", f"ff-{TRACE}-{PARENT}-01", f"00-{'0' * 32}-{PARENT}-01", "garbage"],
    )
    async def test_malformed_traceparent_starts_a_new_trace(self, tracker, memory, value):
        """An invalid header is ignored: a fresh trace id and no parent."""
        async with serve(app_with(tracker)) as url:
            await fetch(url + "/orders/1", headers={"traceparent": value})
        (trace,) = await collected(tracker, memory, 1)
        assert trace["trace_id"] != TRACE
        assert "parent_id" not in trace["spans"][0]

    async def test_duplicated_traceparent_starts_a_new_trace(self, tracker, memory):
        """Two traceparent headers are ambiguous and ignored."""
        headers = [("traceparent", f"00-{TRACE}-{PARENT}-01"), ("traceparent", f"00-{TRACE}-{PARENT}-01")]
        async with serve(app_with(tracker)) as url:
            await fetch(url + "/orders/1", headers=headers)
        (trace,) = await collected(tracker, memory, 1)
        assert trace["trace_id"] != TRACE

    async def test_unsampled_caller_is_honoured(self, tracker, memory):
        """Flag 00: the request is served, nothing is exported, traceresponse says not sampled."""
        async with serve(app_with(tracker)) as url:
            _, headers, _ = await fetch(url + "/orders/1", headers={"traceparent": f"00-{TRACE}-{PARENT}-00"})
        assert headers["traceresponse"].endswith("-00")
        await asyncio.sleep(0.05)
        await tracker.flush()
        assert memory.traces == []

    async def test_tracestate_and_traceparent_flow_to_the_next_service(self, tracker, memory):
        """A -> B: B sees A's trace id, A's client span as parent, and the caller's tracestate unchanged."""
        seen: dict[str, str] = {}

        async def downstream(request: web.Request) -> web.Response:
            seen.update({k.lower(): v for k, v in request.headers.items()})
            return web.Response(text="ok")

        b_app = web.Application()
        b_app.router.add_get("/b", downstream)
        async with serve(b_app) as b_url:

            async def upstream(request: web.Request) -> web.Response:
                async with (
                    aiohttp.ClientSession(trace_configs=[client_trace_config()]) as session,
                    session.get(b_url + "/b") as response,
                ):
                    return web.Response(text=await response.text())

            a_app = web.Application(middlewares=[middleware(tracker)])
            a_app.router.add_get("/a", upstream)
            headers = {
                "traceparent": f"00-{TRACE}-{PARENT}-03",
                "tracestate": "rojo=00f067aa0ba902b7 , congo=t61",
            }
            async with serve(a_app) as a_url:
                assert (await fetch(a_url + "/a", headers=headers))[2] == b"ok"
        (trace,) = await collected(tracker, memory, 1)
        client_span = next(s for s in trace["spans"] if s.get("kind") == "client")
        assert seen["traceparent"] == f"00-{TRACE}-{client_span['span_id']}-03"
        assert seen["tracestate"] == "rojo=00f067aa0ba902b7,congo=t61"


class TestResponseHeaders:
    async def test_traceresponse_and_trace_id_header(self, tracker, memory):
        """Responses carry `traceresponse` naming the root, and the configured X-Trace-Id."""
        async with serve(app_with(tracker, trace_id_header="X-Trace-Id")) as url:
            _, headers, _ = await fetch(url + "/orders/1", headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
        (trace,) = await collected(tracker, memory, 1)
        assert headers["traceresponse"] == f"00-{TRACE}-{trace['spans'][0]['span_id']}-01"
        assert headers["X-Trace-Id"] == TRACE

    async def test_traceresponse_passes_the_callers_random_flag_on(self, tracker, memory):
        """Flags 03 in: the traceresponse says sampled and random (Level 2)."""
        async with serve(app_with(tracker)) as url:
            _, headers, _ = await fetch(url + "/orders/1", headers={"traceparent": f"00-{TRACE}-{PARENT}-03"})
        (trace,) = await collected(tracker, memory, 1)
        assert headers["traceresponse"] == f"00-{TRACE}-{trace['spans'][0]['span_id']}-03"

    async def test_traceresponse_can_be_turned_off(self, tracker, memory):
        """`traceresponse=False` sends no trace header."""
        async with serve(app_with(tracker, traceresponse=False)) as url:
            assert "traceresponse" not in (await fetch(url + "/orders/1"))[1]

    async def test_setup_adds_headers_to_streams_and_error_pages(self, tracker, memory):
        """With setup(), handler-prepared streams and aiohttp's own 500 page carry the headers too."""

        async def stream(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse()
            await response.prepare(request)
            await response.write(b"chunk")
            return response

        async def boom(request: web.Request) -> web.Response:
            raise RuntimeError("boom")

        app = web.Application()
        setup(app, tracker, trace_id_header="X-Trace-Id")
        app.router.add_get("/stream", stream)
        app.router.add_get("/boom", boom)
        async with serve(app) as url:
            for path, expected in (("/stream", 200), ("/boom", 500)):
                status, headers, _ = await fetch(url + path)
                assert status == expected
                assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", headers["traceresponse"])
                assert len(headers["X-Trace-Id"]) == 32


class TestStreaming:
    async def test_root_ends_after_the_body_is_sent_not_when_the_handler_returns(self, tracker, memory):
        """A returned response whose body is produced while it is sent: the root ends after its last chunk."""
        marks: dict[str, int] = {}

        async def chunks() -> AsyncIterator[bytes]:
            for number in range(3):
                await asyncio.sleep(0.01)
                yield b"chunk%d " % number
            marks["last_chunk"] = _clock.now_ns()

        async def lazy(request: web.Request) -> web.Response:
            marks["handler_returned"] = _clock.now_ns()
            return web.Response(body=chunks())

        app = web.Application(middlewares=[middleware(tracker)])
        app.router.add_get("/lazy", lazy)
        async with serve(app) as url:
            assert (await fetch(url + "/lazy"))[2] == b"chunk0 chunk1 chunk2 "
        await collected(tracker, memory, 1)
        root = memory.records[0].spans[0]
        assert marks["handler_returned"] < marks["last_chunk"] < root.end_ns

    async def test_stream_response_and_file_response(self, tracker, memory, tmp_path):
        """StreamResponse and FileResponse give ok roots with their status and the trace headers."""
        (tmp_path / "data.txt").write_bytes(b"x" * 100_000)

        async def stream(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(status=206)
            await response.prepare(request)
            for _ in range(3):
                async with ft.span("write chunk"):
                    await response.write(b"data")
            await response.write_eof()
            return response

        async def file(request: web.Request) -> web.FileResponse:
            return web.FileResponse(tmp_path / "data.txt")

        app = web.Application(middlewares=[middleware(tracker)])
        app.router.add_get("/stream", stream)
        app.router.add_get("/file", file)
        async with serve(app) as url:
            assert (await fetch(url + "/stream"))[2] == b"data" * 3
            _, headers, body = await fetch(url + "/file")
        assert len(body) == 100_000
        assert "traceresponse" in headers
        traces = await collected(tracker, memory, 2)
        roots = {t["spans"][0]["name"]: t["spans"][0] for t in traces}
        assert roots["GET /stream"]["tags"]["http.status_code"] == 206
        assert len(by_name(traces[0])) == 2  # root + "write chunk" (same name kept once)
        assert roots["GET /file"]["status"] == "ok"
        assert roots["GET /file"]["tags"]["http.status_code"] == 200


    @pytest.mark.parametrize(
        ("body", "compress", "ends_before_prepare"),
        [
            pytest.param(b"small", False, True, id="small-body"),
            pytest.param(b"x" * 200_000, False, False, id="large-body"),
            pytest.param(b"small", True, False, id="compressed"),
        ],
    )
    async def test_in_memory_bodies_end_at_return_others_once_sent(
        self, tracker, memory, body, compress, ends_before_prepare
    ):
        """A small in-memory body (one write that never waits) ends the root as the middleware returns
        it, before aiohttp prepares it; a large or compressed one only after it was sent."""
        prepared: list[int] = []

        async def reply(request: web.Request) -> web.Response:
            response = web.Response(body=body)
            if compress:
                response.enable_compression()
            return response

        async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
            prepared.append(_clock.now_ns())

        app = web.Application(middlewares=[middleware(tracker)])
        app.on_response_prepare.append(on_prepare)
        app.router.add_get("/reply", reply)
        async with serve(app) as url:
            status, headers, received = await fetch(url + "/reply", headers={"Accept-Encoding": "gzip"})
        assert (status, received) == (200, body)
        assert "traceresponse" in headers
        await collected(tracker, memory, 1)
        root = memory.records[0].spans[0]
        assert (root.end_ns < prepared[0]) is ends_before_prepare
        assert root.status == "ok"
        assert root.tags["http.status_code"] == 200


class TestErrors:
    async def test_unhandled_exception_is_500_error_and_still_reaches_aiohttp(self, tracker, memory, caplog):
        """The handler's exception: HTTP 500, status error with type and message, logged by aiohttp."""

        async def boom(request: web.Request) -> web.Response:
            async with ft.span("charge"):
                raise ValueError("card declined")

        app = web.Application(middlewares=[middleware(tracker)])
        app.router.add_get("/boom", boom)
        with caplog.at_level(logging.ERROR, logger="aiohttp.server"):
            async with serve(app) as url:
                assert (await fetch(url + "/boom"))[0] == 500
        (trace,) = await collected(tracker, memory, 1)
        root = trace["spans"][0]
        assert root["status"] == "error"
        assert root["error"] == {"type": "ValueError", "message": "card declined"}
        assert root["tags"]["http.status_code"] == 500
        assert by_name(trace)["charge"]["status"] == "error"
        assert any("Error handling request" in r.getMessage() for r in caplog.records)

    async def test_http_exceptions_and_5xx_responses(self, tracker, memory):
        """4xx raised or returned is ok with its code; 5xx raised or returned is an error."""

        async def not_found(request: web.Request) -> web.Response:
            raise web.HTTPNotFound()

        async def unavailable(request: web.Request) -> web.Response:
            raise web.HTTPServiceUnavailable()

        async def bad_gateway(request: web.Request) -> web.Response:
            return web.Response(status=502)

        app = web.Application(middlewares=[middleware(tracker)])
        app.router.add_get("/404", not_found)
        app.router.add_get("/503", unavailable)
        app.router.add_get("/502", bad_gateway)
        async with serve(app) as url:
            for path in ("/404", "/503", "/502"):
                assert (await fetch(url + path))[0] == int(path[1:])
        traces = await collected(tracker, memory, 3)
        roots = {t["spans"][0]["tags"]["http.status_code"]: t["spans"][0] for t in traces}
        assert roots[404]["status"] == "ok"
        assert "error" not in roots[404]
        assert roots[503]["status"] == "error"
        assert roots[503]["error"]["type"] == "aiohttp.web_exceptions.HTTPServiceUnavailable"
        assert roots[502]["status"] == "error"
        assert roots[502]["error"]["message"] == "HTTP 502 Bad Gateway"


class TestClientDisconnect:
    @pytest.mark.parametrize("size", [8, 200_000], ids=["small-body", "large-body"])
    async def test_client_gone_before_the_response_is_cancelled(self, tracker, memory, size):
        """The client hangs up while the handler works: the root ends `cancelled` (whichever way it ends)."""
        started, release = asyncio.Event(), asyncio.Event()

        async def slow(request: web.Request) -> web.Response:
            started.set()
            await release.wait()
            return web.Response(body=b"x" * size)

        app = web.Application(middlewares=[middleware(tracker)])
        app.router.add_get("/slow", slow)
        async with serve(app) as url:
            port = int(url.rsplit(":", 1)[1])
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n")
            await writer.drain()
            await started.wait()
            writer.close()
            await writer.wait_closed()
            await asyncio.sleep(0.05)  # let the server notice the closed connection
            release.set()
            (trace,) = await collected(tracker, memory, 1)
        assert trace["spans"][0]["status"] == "cancelled"

    async def test_client_gone_mid_stream_is_cancelled(self, tracker, memory):
        """The client leaves during a streaming response: cancelled, not error."""

        async def endless(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse()
            await response.prepare(request)
            while True:
                await response.write(b"tick\n")
                await asyncio.sleep(0.01)

        app = web.Application(middlewares=[middleware(tracker)])
        app.router.add_get("/endless", endless)
        async with serve(app) as url:
            await leave_mid_stream(url, "/endless", b"tick\n")
            (trace,) = await collected(tracker, memory, 1)
        assert trace["spans"][0]["status"] == "cancelled"
        assert "error" not in trace["spans"][0]

    async def test_handler_cancellation_on_disconnect_is_cancelled(self, tracker, memory):
        """With aiohttp's handler_cancellation=True the cancelled handler gives a cancelled root."""
        started = asyncio.Event()

        async def slow(request: web.Request) -> web.Response:
            started.set()
            await asyncio.sleep(30)
            return web.Response()

        app = web.Application(middlewares=[middleware(tracker)])
        app.router.add_get("/slow", slow)
        async with serve(app, handler_cancellation=True) as url:
            port = int(url.rsplit(":", 1)[1])
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n")
            await started.wait()
            writer.close()
            await writer.wait_closed()
            (trace,) = await collected(tracker, memory, 1)
        assert trace["spans"][0]["status"] == "cancelled"


class TestOptions:
    async def test_excluded_paths_produce_no_trace(self, tracker, memory):
        """Exact paths and regex patterns are served untraced."""
        app = app_with(tracker, excluded_paths=["/health", re.compile(r"/orders/9\d*")])
        async with serve(app) as url:
            for path in ("/health", "/orders/99", "/orders/1"):
                assert (await fetch(url + path))[0] == 200
        await asyncio.sleep(0.05)
        traces = await collected(tracker, memory, 1)
        assert [t["spans"][0]["tags"]["http.target"] for t in traces] == ["/orders/1"]

    async def test_header_allow_list_with_credentials_always_redacted(self, tracker, memory):
        """Allow-listed headers are recorded; Authorization, Cookie, API keys and tokens are redacted."""
        wanted = ["User-Agent", "X-Request-Id", "Authorization", "Cookie", "X-Api-Key", "X-Auth-Token"]
        sent = {
            "User-Agent": "pytest",
            "X-Request-Id": "r-1",
            "Authorization": "Bearer secret",
            "Cookie": "sid=secret",
            "X-Api-Key": "secret",
            "X-Auth-Token": "secret",
            "X-Not-Listed": "nope",
        }
        async with serve(app_with(tracker, record_headers=wanted)) as url:
            await fetch(url + "/orders/1", headers=sent)
        (trace,) = await collected(tracker, memory, 1)
        tags = trace["spans"][0]["tags"]
        recorded = {k.removeprefix("http.request.header."): v for k, v in tags.items() if "header" in k}
        assert recorded == {
            "user-agent": "pytest",
            "x-request-id": "r-1",
            "authorization": "[REDACTED]",
            "cookie": "[REDACTED]",
            "x-api-key": "[REDACTED]",
            "x-auth-token": "[REDACTED]",
        }
        assert "secret" not in str(trace)

    async def test_request_tag_callback(self, tracker, memory, caplog):
        """The callback's mapping becomes root tags; a raising callback is logged and ignored."""

        def tags(request: web.Request) -> dict[str, Any]:
            if request.query.get("fail"):
                raise KeyError("oops")
            return {"tenant": request.headers.get("X-Tenant"), "query.size": len(request.query)}

        async with serve(app_with(tracker, request_tags=tags)) as url:
            assert (await fetch(url + "/orders/1?a=1", headers={"X-Tenant": "acme"}))[0] == 200
            assert (await fetch(url + "/orders/2?fail=1"))[0] == 200
        traces = await collected(tracker, memory, 2)
        first = next(t for t in traces if t["spans"][0]["tags"]["http.target"] == "/orders/1")
        assert first["spans"][0]["tags"]["tenant"] == "acme"
        assert first["spans"][0]["tags"]["query.size"] == 1
        assert any("request_tags callback raised" in r.getMessage() for r in caplog.records)

    async def test_span_name_function(self, tracker, memory):
        """`span_name(method, route, request)` names the root; a failing one falls back to the default."""

        def name(method: str, route: str, request: web.Request) -> str:
            if request.query.get("fail"):
                raise ValueError("bad namer")
            return f"orders:{method.lower()}:{route}"

        async with serve(app_with(tracker, span_name=name)) as url:
            await fetch(url + "/orders/1")
            await fetch(url + "/orders/2?fail=1")
        traces = await collected(tracker, memory, 2)
        names = sorted(t["spans"][0]["name"] for t in traces)
        assert names == ["GET /orders/{id}", "orders:get:/orders/{id}"]

    def test_unknown_option_is_rejected_at_once(self):
        """A misspelt option raises TypeError when the middleware is built, not on the first request."""
        with pytest.raises(TypeError, match=r"middleware\(\) got an unknown option 'exclude_paths'"):
            middleware(exclude_paths=["/health"])  # type: ignore[call-arg]


class TestWebsocket:
    async def test_root_covers_the_whole_connection(self, tracker, memory):
        """A websocket request's root ends when the connection closes; spans inside nest under it."""

        async def echo(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for message in ws:
                async with ft.span("echo", size=len(message.data)):
                    await ws.send_str(message.data)
            return ws

        app = web.Application(middlewares=[middleware(tracker)])
        app.router.add_get("/ws", echo)
        async with serve(app) as url, aiohttp.ClientSession() as client, client.ws_connect(url + "/ws") as ws:
            for text in ("a", "bb"):
                await ws.send_str(text)
                assert (await ws.receive()).data == text
        (trace,) = await collected(tracker, memory, 1)
        root = trace["spans"][0]
        echoes = [s for s in trace["spans"] if s["name"] == "echo"]
        assert root["name"] == "GET /ws"
        assert root["tags"]["http.status_code"] == 101
        assert [e["parent_id"] for e in echoes] == [root["span_id"]] * 2
        assert root["end_time"] >= echoes[-1]["end_time"]


class TestSetupAndShutdown:
    async def test_setup_starts_and_closes_its_tracker(self, memory):
        """setup() starts the tracker at startup and closes it at cleanup, after the last request."""
        tracker = ft.Tracker(exporters=[memory], service="orders")
        app = web.Application()
        assert setup(app, tracker) is tracker
        app.router.add_get("/orders/{id}", hello)
        assert app[TRACKER_KEY] is tracker
        async with serve(app) as url:
            assert tracker.running
            for number in range(5):
                await fetch(f"{url}/orders/{number}")
        assert not tracker.running
        assert len(memory.traces) == 5
        assert memory.traces[0]["service"] == "orders"

    async def test_cleanup_in_a_cancelled_task_still_flushes_and_closes(self):
        """Ctrl-C under asyncio.run cancels the main task; its cleanup still exports and closes exporters."""

        class Recording(ft.MemoryExporter):
            closed = False

            async def aclose(self) -> None:
                self.closed = True

        exporter = Recording()
        served = asyncio.Event()

        async def main() -> None:
            app = web.Application()
            setup(app, ft.Tracker(exporters=[exporter]))
            app.router.add_get("/orders/{id}", hello)
            async with serve(app) as url:
                await fetch(url + "/orders/1")
                served.set()
                await asyncio.sleep(30)

        task = asyncio.create_task(main())
        await served.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(exporter.traces) == 1
        assert exporter.closed

    async def test_setup_with_a_running_tracker_only_flushes(self, tracker, memory):
        """A tracker that was already running is flushed at cleanup, not closed."""
        app = web.Application()
        setup(app, tracker)
        app.router.add_get("/orders/{id}", hello)
        async with serve(app) as url:
            await fetch(url + "/orders/1")
        assert tracker.running
        assert len(memory.traces) == 1

    async def test_bare_middleware_starts_an_unstarted_tracker_at_the_first_request(self, memory):
        """middleware(tracker) has no startup hook: the first request starts the tracker on the
        server's loop (it used to stay unstarted, its traces never exported)."""
        tracker = ft.Tracker(exporters=[memory])
        async with serve(app_with(tracker)) as url:
            for number in range(3):
                await fetch(f"{url}/orders/{number}")
            assert tracker.running
            assert len(await collected(tracker, memory, 3)) == 3
        await tracker.aclose()

    async def test_setup_without_tracker_creates_one(self, monkeypatch):
        """setup(app) alone creates a tracker from FLOWTRACKER_EXPORTERS."""
        monkeypatch.setenv("FLOWTRACKER_EXPORTERS", "none")
        app = web.Application()
        tracker = setup(app)
        assert isinstance(tracker, ft.Tracker)
        assert tracker.exporters == ()


ZERO_CONFIG_SERVER = textwrap.dedent(
    """
    import asyncio, socket, sys
    from aiohttp import web
    from flowtracker.aiohttp import middleware

    async def item(request):
        if request.query.get("slow"):
            print("SLOW STARTED", file=sys.stderr, flush=True)
            await asyncio.sleep(0.5)
        return web.Response(text="ok")

    app = web.Application(middlewares=[middleware()])
    app.router.add_get("/items/{id}", item)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections wait in the backlog until run_app accepts them
    print("PORT", sock.getsockname()[1], file=sys.stderr, flush=True)
    web.run_app(app, sock=sock, print=None, access_log=None)
    """
)


async def read_line_with(stream: asyncio.StreamReader, prefix: str) -> str:
    while True:
        line = (await asyncio.wait_for(stream.readline(), 20)).decode()
        if not line:
            raise AssertionError(f"stream ended before {prefix!r}")
        if line.startswith(prefix):
            return line


class TestZeroConfigShutdown:
    @pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
    async def test_bare_middleware_loses_no_trace_on_graceful_shutdown(self, tmp_path: Path, stop_signal):
        """web.run_app + middleware() with no configuration prints every trace, in-flight ones included."""
        script = tmp_path / "server.py"
        script.write_text(ZERO_CONFIG_SERVER)
        env = {k: v for k, v in os.environ.items() if k != "FLOWTRACKER_EXPORTERS"}
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(script), env=env, stdout=PIPE, stderr=PIPE
        )
        assert process.stderr is not None
        try:
            port = int((await read_line_with(process.stderr, "PORT")).split()[1])
            async with aiohttp.ClientSession() as client:
                for number in range(5):
                    async with client.get(f"http://127.0.0.1:{port}/items/{number}") as response:
                        assert await response.text() == "ok"
                in_flight = asyncio.create_task(client.get(f"http://127.0.0.1:{port}/items/slow?slow=1"))
                await read_line_with(process.stderr, "SLOW STARTED")
                process.send_signal(stop_signal)
                async with await in_flight as response:
                    assert response.status == 200
            stdout, _ = await asyncio.wait_for(process.communicate(), 30)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        lines = [line for line in stdout.decode().splitlines() if line.startswith("FLOW_LOG: ")]
        assert len(lines) == 6
        assert all('"name":"GET /items/{id}"' in line for line in lines)


class TestClientTraceConfig:
    @pytest.fixture
    async def peer(self) -> AsyncIterator[str]:
        """A plain server: /echo returns the headers it got; /fail 503; /slow waits; /moved redirects."""

        async def echo(request: web.Request) -> web.Response:
            return web.json_response({k.lower(): v for k, v in request.headers.items()})

        async def fail(request: web.Request) -> web.Response:
            return web.Response(status=503)

        async def slow(request: web.Request) -> web.Response:
            await asyncio.sleep(5)
            return web.Response()

        async def moved(request: web.Request) -> web.Response:
            raise web.HTTPFound("/echo?from=moved")

        app = web.Application()
        for path, handler in (("/echo", echo), ("/fail", fail), ("/slow", slow), ("/moved", moved)):
            app.router.add_get(path, handler)
        async with serve(app, handler_cancellation=True) as url:  # /slow stops when the client leaves
            yield url

    async def test_child_span_and_traceparent_naming_it(self, tracker, memory, peer):
        """Each request gets a `client` child span; the peer receives traceparent naming that span."""
        host = peer.removeprefix("http://")
        async with (
            aiohttp.ClientSession(trace_configs=[client_trace_config()]) as session,
            ft.span("checkout") as p,
            session.get(f"http://user:pw@{host}/echo?card=4111#frag") as response,
        ):
            received = await response.json()
        (trace,) = await collected(tracker, memory, 1)
        client = by_name(trace)[f"HTTP GET {host}/echo"]
        assert client["kind"] == "client"
        assert client["parent_id"] == p.span_id_hex
        url_tag = f"http://{host}/echo"
        assert client["tags"] == {"http.method": "GET", "http.url": url_tag, "http.status_code": 200}
        assert received["traceparent"] == f"00-{trace['trace_id']}-{client['span_id']}-01"
        assert "tracestate" not in received

    async def test_5xx_connection_errors_and_cancellation(self, tracker, memory, peer):
        """503 is an error; a refused connection is an error with its type; a cancelled call is cancelled."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
        async with aiohttp.ClientSession(trace_configs=[client_trace_config()]) as session, ft.span("parent"):
            async with session.get(peer + "/fail") as response:
                assert response.status == 503
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.get(f"http://127.0.0.1:{closed_port}/")
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(session.get(peer + "/slow"), 0.2)
        (trace,) = await collected(tracker, memory, 1)
        spans = [s for s in trace["spans"] if s.get("kind") == "client"]
        assert [s["status"] for s in spans] == ["error", "error", "cancelled"]
        assert spans[0]["tags"]["http.status_code"] == 503
        assert spans[1]["error"]["type"].startswith("aiohttp.client_exceptions.")

    async def test_outside_a_span_nothing_is_added(self, tracker, memory, peer):
        """A request made outside any span gets no span and no traceparent."""
        config = client_trace_config()
        async with aiohttp.ClientSession(trace_configs=[config]) as session, session.get(peer + "/echo") as r:
            assert "traceparent" not in await r.json()
        await asyncio.sleep(0.05)
        await tracker.flush()
        assert memory.traces == []

    async def test_propagate_false_and_custom_name_and_redirect_event(self, tracker, memory, peer):
        """propagate=False sends no header; span_name names the span; redirects become events."""
        config = client_trace_config(span_name=lambda m, url: f"peer {m} {url.path}", propagate=False)
        async with (
            aiohttp.ClientSession(trace_configs=[config]) as session,
            ft.span("parent"),
            session.get(peer + "/moved") as response,
        ):
            received = await response.json()
        (trace,) = await collected(tracker, memory, 1)
        client = by_name(trace)["peer GET /moved"]
        assert "traceparent" not in received
        assert client["events"][0]["name"] == "redirect"
        assert client["events"][0]["attributes"] == {"status": 302, "location": "/echo"}
