"""The demo: the Go FlowTracker README's order flow, as two real aiohttp services.

``orders`` answers ``GET /``: ``Process Payment`` (50 ms, ``currency=USD``),
``DB: Select User`` (a real SQLite query through SQLAlchemy and aiosqlite,
recorded by :func:`flowtracker.instrument` as a ``SELECT users`` span), then
``HTTP: Shipping Service``, a real httpx call (also instrumented: a ``client``
span and the ``traceparent`` it sends) to ``shipping``, a second app on
127.0.0.1 whose ``POST /ship`` runs ``Calculate Weight`` (10 ms); the
response body is ``Order Processed``. The demo instruments SQLAlchemy and
httpx for the process, as a service would at start-up.

Each request gives two trace records with the same ``trace_id``: the orders
service's (root ``GET /``, kind ``server``, down to the ``client`` span of the
outgoing call) and the shipping service's (root ``POST /ship``, whose
``parent_id`` is that client span: the ``traceparent`` header carried it).
Merged by ``trace_id`` they form one tree. :func:`overview_text` is what
``flowtracker demo`` prints: one request's tree, then a line per request.

Example:
    >>> import asyncio, os, tempfile
    >>> import flowtracker as ft
    >>> from flowtracker.demo import overview_text, run_demo
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "traces.jsonl")
    ...     traces = asyncio.run(run_demo(requests=1, traces_path=path, console=False))
    >>> ft.uninstrument()  # the demo instruments httpx and SQLAlchemy, as a service does at start-up
    >>> sorted(record["service"] for record in traces)
    ['orders', 'shipping']
    >>> print(overview_text(traces))  # doctest: +ELLIPSIS
    1 request, one trace across the orders and shipping services.
    <BLANKLINE>
    Request 1:
    GET /  ...
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import shlex
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, TextIO

import aiohttp
import httpx
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ._core.span import span
from ._graph.model import plural
from ._pipeline.tracker import Tracker
from .aiohttp import setup
from .exporters import ConsoleExporter, Exporter, FileExporter, MemoryExporter
from .instrumentation import instrument
from .viz import TraceTree, format_ms, merge_traces, tree_text

__all__ = ("closing_text", "orders_app", "overview_text", "run_demo", "shipping_app")

SHIPPING_PATH = "/ship"
#: The demo's one query (SQLite's named placeholder: the value is never in the trace).
SELECT_USER = "SELECT id, name FROM users WHERE id = :id"
_CLIENT_KEY = web.AppKey("flowtracker.demo.client", httpx.AsyncClient)
_ENGINE_KEY = web.AppKey("flowtracker.demo.engine", AsyncEngine)


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

    async def clients(app: web.Application) -> AsyncIterator[None]:
        with tempfile.TemporaryDirectory(prefix="flowtracker-demo-") as folder:
            engine = create_async_engine(f"sqlite+aiosqlite:///{os.path.join(folder, 'users.db')}")
            async with engine.begin() as connection:
                await connection.execute(text("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)"))
                await connection.execute(text("INSERT INTO users VALUES (1, 'Ada'), (2, 'Grace')"))
            async with httpx.AsyncClient() as client:
                app[_CLIENT_KEY], app[_ENGINE_KEY] = client, engine
                yield
            await engine.dispose()

    async def index(request: web.Request) -> web.Response:
        async with span("Process Payment", currency="USD"):
            await asyncio.sleep(0.050)
        engine = request.app[_ENGINE_KEY]
        async with span("DB: Select User", **{"db.query": SELECT_USER}), engine.connect() as connection:
            user = (await connection.execute(text(SELECT_USER), {"id": 1})).one()
        async with span("HTTP: Shipping Service"):
            response = await request.app[_CLIENT_KEY].post(
                shipping_url, json={"items": ["book", "lamp"], "user": user.name}
            )
            response.raise_for_status()
        return web.Response(text="Order Processed")

    app = web.Application()
    setup(app, tracker)
    app.cleanup_ctx.append(clients)
    app.router.add_get("/", index)
    return app


async def _serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound_host, bound_port = runner.addresses[0][:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    return runner, f"http://{shown}:{bound_port}"


def _exporters(
    traces_path: str | os.PathLike[str], memory: MemoryExporter, console: bool | TextIO
) -> list[Exporter]:
    exporters: list[Exporter] = [FileExporter(traces_path), memory]
    if console is not False:
        exporters.insert(0, ConsoleExporter(stream=None if console is True else console))
    return exporters


def _start_empty(path: str | os.PathLike[str]) -> None:
    """Empties (or creates) ``path``, so it ends up holding this run's traces only.

    Truncated in place rather than replaced: the FileExporters then append to
    it, and a file that already exists keeps its owner and permissions (a new
    one gets ``0o600``, as FileExporter would create it: traces may hold user data).
    """
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))


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
    console: bool | TextIO = True,
) -> list[dict[str, Any]]:
    """Serves the demo, sends it ``requests`` requests, and returns their traces.

    ``traces_path`` is emptied first, then every trace of this run is written
    to it as JSON Lines; ``console`` decides where the ``FLOW_LOG:`` lines go.
    The shipping service always listens on 127.0.0.1; the orders service on
    ``host``:``port`` (0: any free port).

    Args:
        requests: How many ``GET /`` requests the demo sends itself.
        serve: Keep serving after that, printing the URL on stderr, until
            Ctrl-C, SIGTERM or cancellation; traces are flushed either way
            (after a cancellation, the ``CancelledError`` propagates).
        host: The orders service's interface.
        port: The orders service's port.
        traces_path: The JSON Lines file (replaced: it holds this run's traces).
        console: ``True`` (default): a ``FLOW_LOG:`` line per trace on stdout
            as it is exported, as a service logs them; a text stream: those
            lines go there instead; ``False``: no such lines.

    Returns:
        The trace records in wire format, grouped by request: for each, the
        orders record then the shipping record (same ``trace_id``).

    See the module's example.
    """
    instrument("sqlalchemy", "httpx")  # as a service does at start-up: for the whole process
    memory = MemoryExporter()
    _start_empty(traces_path)
    shipping = shipping_app(Tracker(exporters=_exporters(traces_path, memory, console), service="shipping"))
    shipping_runner, shipping_url = await _serve(shipping, "127.0.0.1", 0)
    orders_runner: web.AppRunner | None = None
    try:
        orders = orders_app(
            Tracker(exporters=_exporters(traces_path, memory, console), service="orders"),
            shipping_url + SHIPPING_PATH,
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


#: Tags left out of the demo's tree: they repeat what the span's name already says.
_REPEATED_TAGS = frozenset({"http.method", "http.route", "http.target", "http.url"})


def overview_text(records: Sequence[Mapping[str, Any]], *, color: bool = False) -> str:
    """What ``flowtracker demo`` prints: the first request's tree, then a line per request.

    The records of one request (one per service) are merged by ``trace_id``
    into one tree first; tags that repeat a span's name (``http.method``,
    ``http.url``, ...) are left out of the tree.

    Args:
        records: Trace records as :func:`run_demo` returns them.
        color: ANSI colours in the tree.

    Returns:
        Lines joined by newlines, without a trailing newline; ``""`` without records.

    For the demo's three requests it reads::

        3 requests, each one trace across the orders and shipping services.

        Request 1:
        GET /  192.3 ms  http.status_code=200
        ├─ Process Payment  50.3 ms  26%  currency=USD
        ...

        One line per request:
          1  GET /  200  192.3 ms  7 spans  trace 812b0a86e1e8f32785e75b050a963d66
          ...

    Example:
        >>> overview_text([])
        ''
    """
    traces = merge_traces(records)
    if not traces:
        return ""
    services = sorted({str(record.get("service")) for record in records if record.get("service")})
    count = len(traces)
    across = f" across the {' and '.join(services)} services" if len(services) > 1 else ""
    first = traces[0]
    shown = sorted({key for span in first["spans"] for key in span.get("tags") or ()} - _REPEATED_TAGS)
    lines = [
        f"1 request, one trace{across}." if count == 1 else f"{count} requests, each one trace{across}.",
        "",
        "Request 1:",
        tree_text(first, color=color, tags=shown, header=False),
        "",
        "One line per request:",
    ]
    lines.extend(_request_line(number, trace) for number, trace in enumerate(traces, 1))
    return "\n".join(lines)


def closing_text(
    records: Sequence[Mapping[str, Any]],
    *,
    traces_path: str | os.PathLike[str],
    report_path: str | os.PathLike[str],
) -> str:
    """What ``flowtracker demo`` says last: what it wrote, then three next steps.

    Records and requests are counted apart: each service writes its own
    record of a request's trace (same ``trace_id``), so 3 requests through
    two services are 6 records.

    Args:
        records: Trace records as :func:`run_demo` returns them.
        traces_path: The JSON Lines file, as the user named it (shown in the
            ``flowtracker tree`` command to run next).
        report_path: The HTML report.

    Returns:
        Four lines joined by newlines.

    Example:
        >>> records = [{"trace_id": "a", "service": s, "spans": []} for s in ("orders", "shipping")]
        >>> print(closing_text(records, traces_path="t.jsonl", report_path="/r.html"))  # doctest: +ELLIPSIS
        1 request → 2 trace records (one per service), written to .../t.jsonl
        next: flowtracker tree t.jsonl        each request's tree, again
              file:///r.html                  the report: open it in a browser
              flowtracker.aiohttp.setup(app)  in your own aiohttp app (FastAPI: app.add_middleware(...))
    """
    requests = len(merge_traces(records))
    per_service = " (one per service)" if len(records) > requests else ""
    wrote = (
        f"{plural(requests, 'request')} → {plural(len(records), 'trace record')}{per_service}, "
        f"written to {os.path.abspath(traces_path)}"
    )
    steps = [
        (f"flowtracker tree {shlex.quote(os.fspath(traces_path))}", "each request's tree, again"),
        (pathlib.Path(os.path.abspath(report_path)).as_uri(), "the report: open it in a browser"),
        (
            "flowtracker.aiohttp.setup(app)",
            "in your own aiohttp app (FastAPI: app.add_middleware(FlowTrackerMiddleware))",
        ),
    ]
    width = max(len(command) for command, _ in steps) + 2
    lines = [wrote]
    for number, (command, what) in enumerate(steps):
        lines.append(f"{'next: ' if number == 0 else ' ' * 6}{command:<{width}}{what}")
    return "\n".join(lines)


def _request_line(number: int, trace: Mapping[str, Any]) -> str:
    """``  2  GET /  200  190.1 ms  7 spans  trace 7a3f…``, plus the status when it is not ``ok``."""
    tree = TraceTree(trace)
    if not tree.roots:
        return f"{number:>3}  (no spans)  trace {trace.get('trace_id')}"
    root = tree.roots[0]
    parts = [f"{number:>3}", tree.name(root)]
    status_code = (tree.spans[root].get("tags") or {}).get("http.status_code")
    if status_code is not None:
        parts.append(str(status_code))
    parts += [format_ms(tree.duration(root)), plural(len(tree.spans), "span")]
    if tree.status() != "ok":
        parts.append(tree.status())
    parts.append(f"trace {trace.get('trace_id')}")
    return "  ".join(parts)
