"""The pure ASGI middleware under a real uvicorn server on 127.0.0.1 (Starlette and bare ASGI apps)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket
from web_helpers import collected, fetch, leave_mid_stream, uvicorn_serve

import flowtracker as ft
from flowtracker._core import clock as _clock
from flowtracker.asgi import FlowTrackerMiddleware
from flowtracker.propagation import inject

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"





async def order(request: Request) -> JSONResponse:
    async with ft.span("DB: Select Order", order=request.path_params["order_id"]):
        await asyncio.sleep(0)
    return JSONResponse({"outgoing": inject({})})


async def boom(request: Request) -> PlainTextResponse:
    raise ValueError("card declined")


def shop(tracker: ft.Tracker | None, **options: Any) -> Starlette:
    items = Starlette(routes=[Route("/items/{item_id}", order)])
    app = Starlette(
        routes=[
            Route("/orders/{order_id}", order),
            Route("/boom", boom),
            Route("/health", order),
            Mount("/api/v1", app=items),
        ]
    )
    app.add_middleware(FlowTrackerMiddleware, tracker=tracker, **options)
    return app


class TestHttp:
    async def test_route_template_tags_and_children(self, tracker, memory):
        """Root named after Starlette's route template, kind server, tagged; spans inside nest under it."""
        async with uvicorn_serve(shop(tracker)) as url:
            status, _, _ = await fetch(url + "/orders/42?x=1")
        assert status == 200
        (trace,) = await collected(tracker, memory, 1)
        root, child = trace["spans"]
        assert root["name"] == "GET /orders/{order_id}"
        assert root["kind"] == "server"
        assert root["tags"] == {
            "http.method": "GET",
            "http.target": "/orders/42",
            "http.route": "/orders/{order_id}",
            "http.status_code": 200,
        }
        assert child["parent_id"] == root["span_id"]

    async def test_mounted_route_template_includes_the_mount(self, tracker, memory):
        """A route under Mount('/api/v1') is named with the whole template."""
        async with uvicorn_serve(shop(tracker)) as url:
            await fetch(url + "/api/v1/items/7")
        (trace,) = await collected(tracker, memory, 1)
        assert trace["spans"][0]["name"] == "GET /api/v1/items/{item_id}"

    async def test_unmatched_paths_get_the_bounded_fallback(self, tracker, memory):
        """404s all share `GET <unmatched>`."""
        async with uvicorn_serve(shop(tracker)) as url:
            for path in ("/x", "/y/z"):
                assert (await fetch(url + path))[0] == 404
        traces = await collected(tracker, memory, 2)
        assert {t["spans"][0]["name"] for t in traces} == {"GET <unmatched>"}
        assert all(t["spans"][0]["tags"]["http.status_code"] == 404 for t in traces)

    async def test_traceparent_continued_tracestate_passed_and_headers_returned(self, tracker, memory):
        """Incoming context is continued; calls made inside carry tracestate; responses name the root."""
        headers = {"Traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "congo=t61rcWkgMzE"}
        async with uvicorn_serve(shop(tracker, trace_id_header="X-Trace-Id")) as url:
            _, response_headers, body = await fetch(url + "/orders/1", headers=headers)
        (trace,) = await collected(tracker, memory, 1)
        root = trace["spans"][0]
        assert trace["trace_id"] == TRACE
        assert root["parent_id"] == PARENT
        outgoing = json.loads(body)["outgoing"]
        assert outgoing["traceparent"].startswith(f"00-{TRACE}-")
        assert outgoing["tracestate"] == "congo=t61rcWkgMzE"
        assert response_headers["traceresponse"] == f"00-{TRACE}-{root['span_id']}-01"
        assert response_headers["x-trace-id"] == TRACE

    async def test_trace_headers_read_from_a_server_that_does_not_lowercase_names(self, tracker, memory):
        """Header names in any case are found; the app's own response message and headers stay untouched."""
        sent: list[dict[str, Any]] = []
        start = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send(start)
            await send({"type": "http.response.body", "body": b"ok"})

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http", "method": "GET", "path": "/x",
            "headers": [(b"TraceParent", f"00-{TRACE}-{PARENT}-03".encode()), (b"TRACESTATE", b"a=1")],
        }
        await FlowTrackerMiddleware(app, tracker=tracker)(scope, receive, send)
        (trace,) = await collected(tracker, memory, 1)
        root = trace["spans"][0]
        assert (trace["trace_id"], root["parent_id"], root["name"]) == (TRACE, PARENT, "GET <unmatched>")
        assert dict(sent[0]["headers"])[b"traceresponse"] == f"00-{TRACE}-{root['span_id']}-03".encode()
        assert start["headers"] == [(b"content-type", b"text/plain")]

    async def test_malformed_traceparent_starts_a_new_trace(self, tracker, memory):
        """An uppercase (invalid) traceparent is ignored."""
        async with uvicorn_serve(shop(tracker)) as url:
            await fetch(url + "/orders/1", headers={"traceparent": f"00-{TRACE.upper()}-{PARENT}-01"})
        (trace,) = await collected(tracker, memory, 1)
        assert trace["trace_id"] != TRACE
        assert "parent_id" not in trace["spans"][0]

    async def test_exception_is_a_500_error_and_propagates(self, tracker, memory):
        """The app's exception: code 500, status error with type and message; the server still answers 500."""
        async with uvicorn_serve(shop(tracker)) as url:
            status, headers, _ = await fetch(url + "/boom")
        assert status == 500
        assert "traceresponse" not in headers  # Starlette's error page is sent outside add_middleware
        (trace,) = await collected(tracker, memory, 1)
        root = trace["spans"][0]
        assert root["status"] == "error"
        assert root["error"] == {"type": "ValueError", "message": "card declined"}
        assert root["tags"]["http.status_code"] == 500

    async def test_outermost_wrapping_puts_headers_on_error_pages(self, tracker, memory):
        """Wrapped around the whole app, even Starlette's 500 page carries traceresponse."""
        inner = Starlette(routes=[Route("/boom", boom)])
        async with uvicorn_serve(FlowTrackerMiddleware(inner, tracker=tracker)) as url:
            status, headers, _ = await fetch(url + "/boom")
        assert status == 500
        (trace,) = await collected(tracker, memory, 1)
        assert headers["traceresponse"] == f"00-{trace['trace_id']}-{trace['spans'][0]['span_id']}-01"
        assert trace["spans"][0]["status"] == "error"

    async def test_excluded_paths_trace_nothing(self, tracker, memory):
        """Excluded paths give no root, and spans inside them are not recorded either."""
        async with uvicorn_serve(shop(tracker, excluded_paths=["/health"])) as url:
            await fetch(url + "/health")
            await fetch(url + "/orders/1")
        traces = await collected(tracker, memory, 1)
        await asyncio.sleep(0.05)
        await tracker.flush()
        assert [t["spans"][0]["tags"]["http.target"] for t in traces] == ["/orders/1"]

    async def test_header_allow_list_redacts_credentials(self, tracker, memory):
        """Allow-listed headers are tags; credentials are redacted before they are stored."""
        wanted = ["user-agent", "authorization", "x-api-key", "set-cookie"]
        sent = {"User-Agent": "pytest", "Authorization": "Basic c2VjcmV0", "X-Api-Key": "k", "Accept": "x/y"}
        async with uvicorn_serve(shop(tracker, record_headers=wanted)) as url:
            await fetch(url + "/orders/1", headers=sent)
        (trace,) = await collected(tracker, memory, 1)
        tags = trace["spans"][0]["tags"]
        assert tags["http.request.header.user-agent"] == "pytest"
        assert tags["http.request.header.authorization"] == "[REDACTED]"
        assert tags["http.request.header.x-api-key"] == "[REDACTED]"
        assert not any("accept" in key or "set-cookie" in key for key in tags)

    async def test_request_tags_and_span_name_callbacks_get_the_scope(self, tracker, memory):
        """request_tags(scope) adds tags; span_name(method, route, scope) names the root."""

        def tags(scope: dict[str, Any]) -> dict[str, Any]:
            return {"client.scheme": scope["scheme"], "query": scope["query_string"].decode()}

        def name(method: str, route: str, scope: dict[str, Any]) -> str:
            return f"{scope['type']} {method} {route}"

        async with uvicorn_serve(shop(tracker, request_tags=tags, span_name=name)) as url:
            await fetch(url + "/orders/1?page=2")
        (trace,) = await collected(tracker, memory, 1)
        root = trace["spans"][0]
        assert root["name"] == "http GET /orders/{order_id}"
        assert root["tags"]["client.scheme"] == "http"
        assert root["tags"]["query"] == "page=2"

    async def test_plain_asgi_app_without_routing(self, tracker, memory):
        """Any ASGI callable works; without route information the root gets the fallback name."""

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                raise RuntimeError("no lifespan here")
            await send({"type": "http.response.start", "status": 201, "headers": [(b"x-app", b"1")]})
            await send({"type": "http.response.body", "body": b"made"})

        async with uvicorn_serve(FlowTrackerMiddleware(app, tracker=tracker, unmatched_route="*")) as url:
            status, headers, body = await fetch(url + "/anything")
        assert (status, body, headers["x-app"]) == (201, b"made", "1")
        (trace,) = await collected(tracker, memory, 1)
        assert trace["spans"][0]["name"] == "GET *"
        assert trace["spans"][0]["tags"]["http.status_code"] == 201


    async def test_span_name_callback_names_unrouted_requests_too(self, tracker, memory):
        """Without a route in the scope the root keeps the name it started with, unless a
        `span_name` callback is set: then it names every request once the app ran (here
        from the path of an app without a router, where each request differs)."""

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                raise RuntimeError("no lifespan here")
            scope.setdefault("state", {})["seen"] = True
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        def name(method: str, route: str, scope: dict[str, Any]) -> str:
            return f"{method} {route} {scope['path']} seen={scope.get('state', {}).get('seen', False)}"

        async with uvicorn_serve(FlowTrackerMiddleware(app, tracker=tracker, span_name=name)) as url:
            for path in ("/a", "/b"):
                assert (await fetch(url + path))[0] == 200
        traces = await collected(tracker, memory, 2)
        assert sorted(t["spans"][0]["name"] for t in traces) == [
            "GET <unmatched> /a seen=True", "GET <unmatched> /b seen=True",
        ]


class TestStreaming:
    async def test_root_ends_at_the_final_body_message(self, tracker, memory):
        """The root of a StreamingResponse ends after its last chunk, long after the endpoint returned."""
        marks: dict[str, int] = {}

        async def stream(request: Request) -> StreamingResponse:
            async def chunks() -> AsyncIterator[bytes]:
                for number in range(3):
                    async with ft.span("chunk", number=number):
                        await asyncio.sleep(0.01)
                    yield b"%d;" % number
                marks["last_chunk"] = _clock.now_ns()

            marks["endpoint_returned"] = _clock.now_ns()
            return StreamingResponse(chunks())

        app = Starlette(routes=[Route("/stream", stream)])
        app.add_middleware(FlowTrackerMiddleware, tracker=tracker)
        async with uvicorn_serve(app) as url:
            assert (await fetch(url + "/stream"))[2] == b"0;1;2;"
        await collected(tracker, memory, 1)
        root = memory.records[0].spans[0]
        assert marks["endpoint_returned"] < marks["last_chunk"] < root.end_ns
        chunks = [s for s in memory.traces[0]["spans"] if s["name"] == "chunk"]
        assert [c["parent_id"] for c in chunks] == [root.span_id_hex] * 3

    async def test_background_work_after_the_response_is_not_in_the_roots_duration(self, tracker, memory):
        """Background tasks run after the final body: the root has ended; their spans join the trace."""
        marks: dict[str, int] = {}

        async def send_mail() -> None:
            marks["background_started"] = _clock.now_ns()
            async with ft.span("send mail"):
                await asyncio.sleep(0.05)

        async def checkout(request: Request) -> PlainTextResponse:
            return PlainTextResponse("ok", background=BackgroundTask(send_mail))

        app = Starlette(routes=[Route("/checkout", checkout)])
        app.add_middleware(FlowTrackerMiddleware, tracker=tracker)
        async with uvicorn_serve(app) as url:
            assert (await fetch(url + "/checkout"))[2] == b"ok"
            await collected(tracker, memory, 1)
        root, mail = memory.records[0].spans
        assert root.end_ns <= marks["background_started"] < mail.end_ns
        assert mail.parent_id == root.span_id

    async def test_client_disconnect_mid_stream_is_cancelled(self, tracker, memory):
        """The client leaves during a stream: the root ends cancelled, not error."""

        async def endless(request: Request) -> StreamingResponse:
            async def ticks() -> AsyncIterator[bytes]:
                while True:
                    yield b"tick\n"
                    await asyncio.sleep(0.01)

            return StreamingResponse(ticks())

        app = Starlette(routes=[Route("/endless", endless)])
        app.add_middleware(FlowTrackerMiddleware, tracker=tracker)
        async with uvicorn_serve(app) as url:
            await leave_mid_stream(url, "/endless", b"tick\n")
            (trace,) = await collected(tracker, memory, 1)
        assert trace["spans"][0]["status"] == "cancelled"


class TestWebsocket:
    async def test_span_covers_the_connection(self, tracker, memory):
        """A websocket gets `WEBSOCKET <route>` spanning the connection, with its close code and headers."""

        async def echo(websocket: WebSocket) -> None:
            await websocket.accept()
            async for text in websocket.iter_text():
                async with ft.span("echo"):
                    await websocket.send_text(text.upper())

        app = Starlette(routes=[WebSocketRoute("/ws/{room}", echo)])
        app.add_middleware(FlowTrackerMiddleware, tracker=tracker, trace_id_header="X-Trace-Id")
        async with uvicorn_serve(app) as url, aiohttp.ClientSession() as client:
            async with client.ws_connect(url + "/ws/lobby") as ws:
                await ws.send_str("hi")
                assert (await ws.receive()).data == "HI"
                handshake_trace_id = ws._response.headers["X-Trace-Id"]
            (trace,) = await collected(tracker, memory, 1)
        root = trace["spans"][0]
        assert root["name"] == "WEBSOCKET /ws/{room}"
        assert root["status"] == "ok"
        assert root["tags"]["websocket.close_code"] == 1000
        assert trace["trace_id"] == handshake_trace_id
        assert trace["spans"][1]["name"] == "echo"
        assert trace["spans"][1]["parent_id"] == root["span_id"]


class TestLifespan:
    async def test_starts_and_closes_a_tracker_it_was_given_unstarted(self, memory):
        """Lifespan startup starts the tracker on the server's loop; shutdown flushes and closes it."""
        tracker = ft.Tracker(exporters=[memory], service="shop")
        async with uvicorn_serve(shop(tracker)) as url:
            assert tracker.running
            for number in range(3):
                await fetch(f"{url}/orders/{number}")
        assert not tracker.running
        assert len(memory.traces) == 3

    async def test_only_flushes_a_running_tracker(self, tracker, memory):
        """A tracker that was already running is flushed at shutdown, not closed."""
        async with uvicorn_serve(shop(tracker)) as url:
            await fetch(url + "/orders/1")
        assert tracker.running
        assert len(memory.traces) == 1

    async def test_zero_config_reports_to_the_tracker_in_effect_and_flushes_it_at_shutdown(
        self, tracker, memory
    ):
        """Without a tracker, requests go to the tracker in effect (by default the default tracker,
        on its own thread; here the test's), and lifespan shutdown flushes it without closing it."""
        middleware = FlowTrackerMiddleware(Starlette(routes=[Route("/orders/{order_id}", order)]))
        async with uvicorn_serve(middleware) as url:
            await fetch(url + "/orders/1")
        assert len(memory.traces) == 1  # flushed by the shutdown, not by this test
        assert tracker.running

    async def test_answers_lifespan_for_an_app_that_does_not(self, memory):
        """An app that raises on lifespan still gets its tracker started and flushed (lifespan='on')."""
        tracker = ft.Tracker(exporters=[memory])

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            assert scope["type"] == "http"
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        async with uvicorn_serve(FlowTrackerMiddleware(app, tracker=tracker)) as url:
            assert tracker.running
            assert (await fetch(url + "/"))[0] == 204
        assert not tracker.running
        assert len(memory.traces) == 1

    async def test_without_lifespan_requests_still_reach_the_given_tracker(self, tracker, memory):
        """With --lifespan off a given tracker is used as it is."""
        async with uvicorn_serve(shop(tracker), lifespan="off") as url:
            await fetch(url + "/orders/1")
        assert len(await collected(tracker, memory, 1)) == 1

    async def test_without_lifespan_the_first_request_starts_the_tracker_and_monitor(self, memory):
        """--lifespan off runs no startup: the first request starts the given tracker and the loop
        monitor on the server's loop, so traces are exported (their spans timed by the monitor)."""
        tracker = ft.Tracker(exporters=[memory])
        middleware = FlowTrackerMiddleware(
            Starlette(routes=[Route("/orders/{order_id}", order)]), tracker=tracker, monitor_loop=True
        )
        try:
            async with uvicorn_serve(middleware, lifespan="off") as url:
                for number in range(3):
                    await fetch(f"{url}/orders/{number}")
                assert tracker.running
                assert middleware.loop_monitor is not None
                traces = await collected(tracker, memory, 3)
        finally:
            await middleware.lifecycle.shutdown()  # what lifespan would have done: stop, close
        assert len(traces) == 3
        assert all("busy_ms" in span for trace in traces for span in trace["spans"])
        assert not tracker.running

    async def test_other_scope_types_pass_through_untouched(self):
        """A scope type the middleware does not know reaches the app with the very same objects."""
        seen: list[tuple[Any, Any, Any]] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            seen.append((scope, receive, send))

        scope: dict[str, Any] = {"type": "webtransport"}

        async def receive() -> dict[str, Any]:
            return {}

        async def send(message: Any) -> None:
            pass

        await FlowTrackerMiddleware(app)(scope, receive, send)
        assert seen == [(scope, receive, send)]
        assert scope == {"type": "webtransport"}


class TestImports:
    def test_importing_the_middleware_does_not_import_starlette(self):
        """flowtracker.asgi works for any ASGI app: Starlette is not imported."""
        code = "import sys, flowtracker.asgi; print('starlette' in sys.modules)"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert result.stdout.strip() == "False"

    def test_starlette_add_middleware_accepts_it(self):
        """add_middleware builds the middleware stack with it, not as BaseHTTPMiddleware."""
        from starlette.middleware.base import BaseHTTPMiddleware

        assert not issubclass(FlowTrackerMiddleware, BaseHTTPMiddleware)
        app = shop(None, excluded_paths=["/health"])
        assert any(m.cls is FlowTrackerMiddleware for m in app.user_middleware)


@pytest.fixture(autouse=True)
def _quiet_uvicorn_errors(caplog):
    """uvicorn logs the app's exceptions at ERROR; they are expected in these tests."""
    caplog.set_level("CRITICAL", logger="uvicorn.error")
