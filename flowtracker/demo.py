"""The demo: the Go FlowTracker README's order flow, as two real aiohttp services.

``orders`` answers ``GET /``: ``Process Payment`` (50 ms, ``currency=USD``),
``DB: Select User`` (120 ms, ``db.query``), then ``HTTP: Shipping Service``,
a real aiohttp client call (traced with :func:`~flowtracker.aiohttp.client_trace_config`)
to ``shipping``, a second app on 127.0.0.1 whose ``POST /ship`` runs
``Calculate Weight`` (10 ms); the response body is ``Order Processed``.

Each request gives two trace records with the same ``trace_id``: the orders
service's (root ``GET /``, kind ``server``, down to the ``client`` span of the
outgoing call) and the shipping service's (root ``POST /ship``, whose
``parent_id`` is that client span: the ``traceparent`` header carried it).
Merged by ``trace_id`` they form one tree.

Example:
    >>> import asyncio
    >>> from flowtracker.demo import run_demo
    >>> traces = asyncio.run(run_demo(requests=1, traces_path="/tmp/demo.jsonl"))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
from aiohttp import web

from ._core.span import span
from ._pipeline.tracker import Tracker
from .aiohttp import client_trace_config, setup
from .exporters import ConsoleExporter, FileExporter, MemoryExporter
from .exporters._base import Exporter

__all__ = ("orders_app", "run_demo", "shipping_app")

SHIPPING_PATH = "/ship"
_SESSION_KEY = web.AppKey("flowtracker.demo.session", aiohttp.ClientSession)


def shipping_app(tracker: Tracker) -> web.Application:
    """The shipping service: ``POST /ship`` runs ``Calculate Weight`` (10 ms)."""

    async def ship(request: web.Request) -> web.Response:
        order = await request.json()
        async with span("Calculate Weight", items=len(order.get("items", []))):
            await asyncio.sleep(0.010)
        return web.json_response({"carrier": "parcel", "weight_kg": 1.2})

    app = web.Application()
    setup(app, tracker)
    app.router.add_post(SHIPPING_PATH, ship)
    return app


def orders_app(tracker: Tracker, shipping_url: str) -> web.Application:
    """The orders service: ``GET /`` runs the demo flow and calls ``shipping_url``."""

    async def client_session(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(trace_configs=[client_trace_config()]) as session:
            app[_SESSION_KEY] = session
            yield

    async def index(request: web.Request) -> web.Response:
        async with span("Process Payment", currency="USD"):
            await asyncio.sleep(0.050)
        async with span("DB: Select User") as select:
            select.set_tag("db.query", "SELECT * FROM users WHERE id = $1")
            await asyncio.sleep(0.120)
        async with span("HTTP: Shipping Service"):
            session = request.app[_SESSION_KEY]
            async with session.post(shipping_url, json={"items": ["book", "lamp"]}) as response:
                response.raise_for_status()
                await response.read()
        return web.Response(text="Order Processed")

    app = web.Application()
    setup(app, tracker)
    app.cleanup_ctx.append(client_session)
    app.router.add_get("/", index)
    return app


async def _serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound_host, bound_port = runner.addresses[0][:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    return runner, f"http://{shown}:{bound_port}"


def _exporters(traces_path: str | os.PathLike[str], memory: MemoryExporter) -> list[Exporter]:
    return [ConsoleExporter(), FileExporter(traces_path), memory]


def _in_request_order(traces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Groups records by trace (first-started first), the caller's record before the callee's."""
    first: dict[str, str] = {}
    for trace in traces:
        start = min(s["start_time"] for s in trace["spans"])
        first[trace["trace_id"]] = min(first.get(trace["trace_id"], start), start)
    return sorted(traces, key=lambda t: (first[t["trace_id"]], min(s["start_time"] for s in t["spans"])))


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """Ctrl-C / SIGTERM set ``stop`` (main thread only; elsewhere, cancel the task)."""
    loop = asyncio.get_running_loop()
    installed: list[tuple[signal.Signals, Any]] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
            continue
        installed.append((sig, previous))
    try:
        yield
    finally:
        for sig, previous in installed:
            loop.remove_signal_handler(sig)
            signal.signal(sig, previous)


async def run_demo(
    requests: int = 3,
    *,
    serve: bool = False,
    host: str = "127.0.0.1",
    port: int = 0,
    traces_path: str | os.PathLike[str] = "traces.jsonl",
) -> list[dict[str, Any]]:
    """Serves the demo, sends it ``requests`` requests, and returns their traces.

    Every trace is printed as a ``FLOW_LOG:`` line on stdout and appended to
    ``traces_path`` as JSON Lines. The shipping service always listens on
    127.0.0.1; the orders service on ``host``:``port`` (0: any free port).

    Args:
        requests: How many ``GET /`` requests the demo sends itself.
        serve: Keep serving after that, printing the URL on stderr, until
            Ctrl-C, SIGTERM or cancellation; traces are flushed either way
            (after a cancellation, the ``CancelledError`` propagates).
        host: The orders service's interface.
        port: The orders service's port.
        traces_path: The JSON Lines file (appended to).

    Returns:
        The trace records in wire format, grouped by request: for each, the
        orders record then the shipping record (same ``trace_id``).

    Example:
        >>> import asyncio
        >>> traces = asyncio.run(run_demo(1, traces_path="/tmp/demo.jsonl"))  # doctest: +SKIP
        >>> sorted(t["service"] for t in traces)  # doctest: +SKIP
        ['orders', 'shipping']
    """
    memory = MemoryExporter()
    shipping = shipping_app(Tracker(exporters=_exporters(traces_path, memory), service="shipping"))
    shipping_runner, shipping_url = await _serve(shipping, "127.0.0.1", 0)
    orders_runner: web.AppRunner | None = None
    try:
        orders = orders_app(
            Tracker(exporters=_exporters(traces_path, memory), service="orders"), shipping_url + SHIPPING_PATH
        )
        orders_runner, url = await _serve(orders, host, port)
        async with aiohttp.ClientSession() as visitor:
            for _ in range(requests):
                async with visitor.get(url + "/") as response:
                    body = await response.text()
                    if response.status != 200 or body != "Order Processed":
                        raise RuntimeError(f"demo request failed: {response.status} {body!r}")
        if serve:
            stop = asyncio.Event()
            with _stop_on_signals(stop):
                print(f"flowtracker demo: serving {url}/ (Ctrl-C to stop)", file=sys.stderr, flush=True)
                await stop.wait()
    finally:
        # Cleanup flushes each app's tracker (setup() closes what it started).
        # It runs in a task of its own: after a cancellation this task is still
        # "cancelling", and Tracker.aclose() would take that for its own.
        runners = [runner for runner in (orders_runner, shipping_runner) if runner is not None]
        await asyncio.shield(asyncio.ensure_future(_cleanup(runners)))
    return _in_request_order(memory.traces)


async def _cleanup(runners: list[web.AppRunner]) -> None:
    for runner in runners:
        await runner.cleanup()
