"""ft.instrument("httpx"): a client span per request of every Client and AsyncClient.

Against a real aiohttp server on loopback that echoes the headers it received.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from web_helpers import collected

import flowtracker as ft

OWN = {
    (httpx.HTTPTransport, "handle_request"): httpx.HTTPTransport.__dict__["handle_request"],
    (httpx.AsyncHTTPTransport, "handle_async_request"): httpx.AsyncHTTPTransport.__dict__[
        "handle_async_request"
    ],
}


def client_spans(trace: dict[str, Any]) -> list[dict[str, Any]]:
    return [span for span in trace["spans"] if span.get("kind") == "client"]


class Peer:
    """The test server: its base URL, and a gate that holds /slow until opened."""

    def __init__(self) -> None:
        self.url = ""
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    """An aiohttp server on 127.0.0.1 (free port): /echo returns the request's headers and body size."""
    state = Peer()

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({**{k.lower(): v for k, v in request.headers.items()}, "size": len(body)})

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="status")

    async def slow(request: web.Request) -> web.Response:
        state.entered.set()
        await state.gate.wait()
        return web.json_response(dict(request.headers))

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield state
    finally:
        state.gate.set()
        await runner.cleanup()


@pytest.fixture(autouse=True)
def instrumented() -> Iterator[None]:
    """httpx instrumented for the test, restored afterwards."""
    assert ft.instrument("httpx") == ["httpx"]
    yield
    ft.uninstrument("httpx")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TestSpans:
    async def test_async_client_span_tags_and_traceparent_naming_it(self, tracker, memory, peer):
        """An AsyncClient request is a `client` child, HTTP GET host:port/path; its traceparent names it."""
        host = peer.url.removeprefix("http://")
        async with httpx.AsyncClient() as client, ft.span("checkout") as parent:
            response = await client.get(f"http://user:pw@{host}/echo?card=4111#frag")
        received = response.json()
        (trace,) = await collected(tracker, memory, 1)
        (span,) = client_spans(trace)
        assert span["name"] == f"HTTP GET {host}/echo"
        assert span["parent_id"] == parent.span_id_hex
        assert span["status"] == "ok"
        url = f"http://{host}/echo"  # no userinfo, query or fragment
        assert span["tags"] == {"http.method": "GET", "http.url": url, "http.status_code": 200}
        assert received["traceparent"] == f"00-{trace['trace_id']}-{span['span_id']}-01"
        assert "tracestate" not in received

    async def test_sync_client_in_a_worker_thread(self, tracker, memory, peer):
        """A sync Client request (in a thread that copied the context) is a child span, with traceparent."""

        def call() -> dict[str, Any]:
            with httpx.Client() as client:
                return dict(client.post(peer.url + "/echo", content=b"abc").json())

        async with ft.span("job"):
            received = await asyncio.to_thread(call)
        (trace,) = await collected(tracker, memory, 1)
        (span,) = client_spans(trace)
        assert span["name"] == f"HTTP POST {peer.url.removeprefix('http://')}/echo"
        assert span["tags"]["http.method"] == "POST"
        assert received["traceparent"] == f"00-{trace['trace_id']}-{span['span_id']}-01"
        assert received["size"] == 3

    async def test_tracestate_passed_on(self, tracker, memory, peer):
        """A trace continued from an incoming traceparent/tracestate passes the tracestate on."""
        incoming = {
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "tracestate": "congo=t61rcWkgMzE",
        }
        async with httpx.AsyncClient() as client:
            with ft.continue_trace("consume", incoming):
                received = (await client.get(peer.url + "/echo", headers={"TraceState": "stale=1"})).json()
        (trace,) = await collected(tracker, memory, 1)
        (span,) = client_spans(trace)
        assert received["traceparent"] == f"00-4bf92f3577b34da6a3ce929d0e0e4736-{span['span_id']}-01"
        assert received["tracestate"] == "congo=t61rcWkgMzE"

    async def test_status_codes_5xx_error_4xx_ok(self, tracker, memory, peer):
        """A 503 is an error span with its code; a 404 is ok with its code; the responses are unchanged."""
        async with httpx.AsyncClient() as client, ft.span("parent"):
            failed = await client.get(peer.url + "/status/503")
            missing = await client.get(peer.url + "/status/404")
        assert (failed.status_code, missing.status_code) == (503, 404)
        (trace,) = await collected(tracker, memory, 1)
        spans = client_spans(trace)
        assert [(s["status"], s["tags"]["http.status_code"]) for s in spans] == [("error", 503), ("ok", 404)]
        assert spans[0]["error"]["message"] == "HTTP 503 Service Unavailable"

    async def test_transport_error_propagates_unchanged(self, tracker, memory):
        """A refused connection raises httpx's own ConnectError, and the span is an error naming it."""
        url = f"http://127.0.0.1:{closed_port()}/x"
        async with httpx.AsyncClient() as client, ft.span("parent"):
            with pytest.raises(httpx.ConnectError) as traced:
                await client.get(url)
        ft.uninstrument("httpx")
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.ConnectError) as plain:
                await client.get(url)
        assert str(traced.value) == str(plain.value)
        (trace,) = await collected(tracker, memory, 1)
        (span,) = client_spans(trace)
        assert span["status"] == "error"
        assert span["error"]["type"] == "httpx.ConnectError"

    async def test_cancelled_request_is_cancelled(self, tracker, memory, peer):
        """A request cancelled while waiting for the answer ends `cancelled`."""
        async with httpx.AsyncClient() as client, ft.span("parent"):
            call = asyncio.ensure_future(client.get(peer.url + "/slow"))
            await peer.entered.wait()
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
        (trace,) = await collected(tracker, memory, 1)
        assert [s["status"] for s in client_spans(trace)] == ["cancelled"]

    async def test_megabyte_body(self, tracker, memory, peer):
        """A megabyte request body goes out whole; the span records no body."""
        async with httpx.AsyncClient() as client, ft.span("upload"):
            received = (await client.post(peer.url + "/echo", content=b"x" * 1_000_000)).json()
        assert received["size"] == 1_000_000
        (trace,) = await collected(tracker, memory, 1)
        (span,) = client_spans(trace)
        assert set(span["tags"]) == {"http.method", "http.url", "http.status_code"}


class TestNotTraced:
    async def test_outside_a_span_nothing_is_added(self, tracker, memory, peer):
        """A request with no current span starts no trace and sends no traceparent."""
        async with httpx.AsyncClient() as client:
            received = (await client.get(peer.url + "/echo")).json()
        assert "traceparent" not in received
        await tracker.flush()
        assert memory.traces == []

    async def test_instrumenting_twice_never_doubles(self, tracker, memory, peer):
        """A second ft.instrument("httpx") returns the same list and keeps one wrapper: one span a request."""
        assert ft.instrument("httpx") == ["httpx"]
        wrapper = httpx.AsyncHTTPTransport.__dict__["handle_async_request"]
        assert wrapper.__wrapped__ is OWN[(httpx.AsyncHTTPTransport, "handle_async_request")]
        async with httpx.AsyncClient() as client, ft.span("parent"):
            await client.get(peer.url + "/echo")
        (trace,) = await collected(tracker, memory, 1)
        assert len(client_spans(trace)) == 1

    async def test_uninstrument_restores_httpx_exactly(self, tracker, memory, peer):
        """After ft.uninstrument("httpx") both transports hold httpx's own functions and nothing is traced."""
        ft.uninstrument("httpx")
        for (owner, name), own in OWN.items():
            assert owner.__dict__[name] is own
        async with httpx.AsyncClient() as client, ft.span("parent"):
            received = (await client.get(peer.url + "/echo")).json()
        assert "traceparent" not in received
        (trace,) = await collected(tracker, memory, 1)
        assert client_spans(trace) == []

    async def test_uninstrument_while_a_request_is_in_flight(self, tracker, memory, peer):
        """A request in flight when httpx is uninstrumented completes normally and its span ends ok."""
        async with httpx.AsyncClient() as client, ft.span("parent"):
            call = asyncio.ensure_future(client.get(peer.url + "/slow"))
            await peer.entered.wait()
            ft.uninstrument("httpx")
            peer.gate.set()
            response = await call
            after = (await client.get(peer.url + "/echo")).json()
        assert response.status_code == 200
        assert "traceparent" in response.json()
        assert "traceparent" not in after
        (trace,) = await collected(tracker, memory, 1)
        assert [(s["name"].split()[-1][-5:], s["status"]) for s in client_spans(trace)] == [("/slow", "ok")]
