"""The apps the fault suite runs under real servers, configured by the environment.

Both answer ``GET /r/<n>`` with ``ok`` after a short piece of traced work
(the root span, made by flowtracker's middleware, gets the tag ``req=<n>``;
a child span ``work`` sleeps 2 ms, so requests are in flight when a signal
lands) and ``GET /ready`` untraced. Every request handled is counted in the
process's side file (:mod:`._report`).

* ``asgi_app``: an ASGI app behind ``FlowTrackerMiddleware``, for
  ``uvicorn benchmarks.faults._apps:asgi_app`` and gunicorn's uvicorn worker.
* ``aiohttp_app``: an async factory for aiohttp's ``GunicornWebWorker``;
  ``python -m benchmarks.faults._apps PORT`` serves the same app with
  ``web.run_app``.

Environment:

* ``FAULTS_MODE``: ``zero`` (default): the middleware with no tracker, exporters
  from ``FLOWTRACKER_EXPORTERS``; ``tracker``: an explicit
  ``Tracker(exporters=[$FAULTS_EXPORTER])`` (``setup(app, tracker)`` for aiohttp);
  ``bare``: the same tracker given to aiohttp's bare ``middleware(tracker)``,
  which no startup hook starts (the first request does).
* ``FAULTS_IMPORT_SPAN=1``: one span at import time (under ``gunicorn
  --preload`` that is in the master, before the fork).
* ``FAULTS_RECORD_HEADERS``: comma-separated ``record_headers`` option.
* ``FAULTS_STATS_DIR``, ``FAULTS_STATS_SOURCE``: see :mod:`._report`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from .._servers import ASGIApp, Message, Receive, Scope, Send
from ._report import Report

REPORT = Report.from_env()  # before flowtracker: its exit report must run after flowtracker's exit flush

import flowtracker as ft  # noqa: E402  (after the report's exit hook, see above)

READY = "/ready"
WORK_SECONDS = 0.002

if os.environ.get("FAULTS_IMPORT_SPAN") == "1":
    with ft.span("at import"):
        pass


def _own_tracker() -> ft.Tracker | None:
    """The explicit tracker of ``FAULTS_MODE=tracker`` or ``bare`` (watched by the report), else None."""
    if os.environ.get("FAULTS_MODE", "zero") == "zero":
        return None
    tracker = ft.Tracker(exporters=[os.environ["FAULTS_EXPORTER"]], service="faults")
    REPORT.watch(tracker)
    return tracker


def _options() -> dict[str, Any]:
    """The middleware options both apps share."""
    options: dict[str, Any] = {"excluded_paths": [READY]}
    record = os.environ.get("FAULTS_RECORD_HEADERS")
    if record:
        options["record_headers"] = record.split(",")
    return options


async def _traced_work(request_number: int) -> None:
    """The handler's work: tag the root with the request number, one child span."""
    REPORT.request_handled()
    ft.add_tag("req", request_number)
    async with ft.span("work"):
        await asyncio.sleep(WORK_SECONDS)


# -- ASGI ----------------------------------------------------------------------


async def _asgi_handler(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]  # startup / shutdown
            await send({"type": f"{message['type']}.complete"})
            if kind == "shutdown":
                return
    if scope["type"] != "http":
        return
    path: str = scope["path"]
    if path.startswith("/r/"):
        await _traced_work(int(path[3:]))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _report_at_shutdown(app: ASGIApp) -> ASGIApp:
    """``app`` with a final report once lifespan shutdown completed (the middleware flushed by then)."""

    async def reporting(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def send_and_report(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                REPORT.write("shutdown")
            await send(message)

        await app(scope, receive, send_and_report)

    return reporting


def _build_asgi() -> ASGIApp:
    from flowtracker.asgi import FlowTrackerMiddleware

    return _report_at_shutdown(FlowTrackerMiddleware(_asgi_handler, tracker=_own_tracker(), **_options()))


def __getattr__(name: str) -> Any:
    # ``asgi_app`` is built when a server first looks it up, so the aiohttp
    # entry points never make its tracker.
    if name == "asgi_app":
        app = globals()["asgi_app"] = _build_asgi()
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- aiohttp -------------------------------------------------------------------


def build_aiohttp() -> Any:
    """The aiohttp application: ``setup(app, tracker)``, else the bare ``middleware(tracker)``
    (zero mode: no tracker; ``bare``: one the first request starts)."""
    from aiohttp import web

    from flowtracker.aiohttp import middleware, setup

    async def handle(request: web.Request) -> web.Response:
        await _traced_work(int(request.match_info["n"]))
        return web.Response(text="ok")

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def report(app: web.Application) -> None:
        REPORT.write("shutdown")

    tracker = _own_tracker()
    if tracker is None or os.environ.get("FAULTS_MODE") == "bare":
        app = web.Application(middlewares=[middleware(tracker, **_options())])
    else:
        app = web.Application()
        setup(app, tracker, **_options())
    app.router.add_get("/r/{n}", handle)
    app.router.add_get(READY, ready)
    app.on_cleanup.append(report)  # after setup()'s: its tracker is closed by then
    return app


async def aiohttp_app() -> Any:
    """The factory aiohttp's ``GunicornWebWorker`` calls in each worker."""
    return build_aiohttp()


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.faults._apps PORT``: the aiohttp app under ``web.run_app``."""
    from aiohttp import web

    port = int((argv if argv is not None else sys.argv[1:])[0])
    web.run_app(build_aiohttp(), host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
