"""The apps the ``request`` suite loads with wrk, one per tracer; run as a subprocess.

Every app answers ``GET /`` with ``ok`` after a handler that opens 3 nested
spans with tags (``load_user`` > ``db.query`` > ``decode``), under a root span
made by the tracer's middleware (tagged with method, path and status). The
untraced app runs the same handler without spans. Exporters drop (``_sinks``).

Usage::

    python -m benchmarks._servers aiohttp flowtracker 8080 [--no-gc] [--gc-stats FILE]
    python -m benchmarks._servers asgi floor 8081
    python -m benchmarks._servers asgi ft-monitor 8082 --loop uvloop

``--loop uvloop`` serves on a uvloop loop (default: asyncio's own);

``--no-gc`` disables the cyclic garbage collector once the app is built;
``--gc-stats FILE`` writes, at exit, how many collections of each generation
ran and how long they paused the loop (``gc.callbacks``), and with
``--no-gc`` how many objects were left in reference cycles, by type;
``--profile FILE``
runs the server under cProfile and dumps the stats there.
"""

# ruff: noqa: SIM117  (nested spans are the point: the code reads as users write it)
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from ._sinks import DropExporter, otel_provider, zipkin_tracer

AIOHTTP_VARIANTS = (
    "untraced", "floor", "flowtracker", "ft-monitor", "ft-middleware", "ft-noheader", "ft-core", "otel",
    "aiozipkin", "floor-cyclic",
)
ASGI_VARIANTS = ("untraced", "floor", "flowtracker", "ft-monitor", "ft-noheader", "ft-core")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Spans per traced request: the middleware's root and the handler's 3.
SPANS_PER_REQUEST = 4


async def _nothing_to_flush() -> None:
    pass


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """How an in-process benchmark reaches a variant's tracer: flush it, count what arrived.

    Attributes:
        flush: Waits until every finished trace reached the (dropping) exporter.
        delivered: Traces that reached the exporter so far (0 when untraced).
    """

    flush: Callable[[], Awaitable[object]] = _nothing_to_flush
    delivered: Callable[[], int] = lambda: 0


UNTRACED = Pipeline()


# -- aiohttp -----------------------------------------------------------------


def aiohttp_app(variant: str) -> Any:
    """The aiohttp application for ``variant`` (see ``AIOHTTP_VARIANTS``)."""
    return build_aiohttp(variant)[0]


def build_aiohttp(variant: str) -> tuple[Any, Pipeline]:
    """The aiohttp application for ``variant`` and its tracer's :class:`Pipeline`."""
    from aiohttp import web

    pipeline = UNTRACED
    if variant == "untraced":

        async def handler(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application()

    elif variant in ("floor", "floor-cyclic"):
        from .floor import FloorTracer

        tracer = FloorTracer(cyclic=variant == "floor-cyclic")
        span = tracer.span
        pipeline = Pipeline(tracer.flush, lambda: tracer.received)

        @web.middleware
        async def floor_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
            method, path = request.method, request.path
            async with span(f"{method} {path}", **{"http.method": method, "http.target": path}) as root:
                response: web.StreamResponse = await handler(request)
                root.set_tag("http.status_code", response.status)
            return response

        async def handler(request: web.Request) -> web.Response:
            async with span("load_user", user_id=42):
                async with span("db.query", db_system="postgres") as query:
                    query.set_tag("rows", 1)
                    async with span("decode", codec="json"):
                        pass
            return web.Response(text="ok")

        app = web.Application(middlewares=[floor_middleware])

        async def start_floor(app: web.Application) -> None:
            await tracer.start()

        async def stop_floor(app: web.Application) -> None:
            await tracer.aclose()

        app.on_startup.append(start_floor)
        app.on_cleanup.append(stop_floor)

    elif variant in ("flowtracker", "ft-monitor", "ft-middleware", "ft-noheader", "ft-core"):
        import flowtracker as ft

        sink = DropExporter()
        tracker = ft.Tracker(exporters=[sink], service="bench")
        pipeline = Pipeline(tracker.flush, lambda: sink.traces)
        ft_span = ft.span
        middlewares: list[Any] = []
        if variant == "ft-core":
            start_root_span = ft.start_root_span

            @web.middleware
            async def core_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
                method, path = request.method, request.path
                root = start_root_span(
                    f"{method} {path}",
                    {"http.method": method, "http.target": path},
                    tracker=tracker,
                    kind="server",
                )
                with root:
                    response: web.StreamResponse = await handler(request)
                    root.set_tag("http.status_code", response.status)
                return response

            middlewares = [core_middleware]
        elif variant == "ft-middleware":
            from flowtracker.aiohttp import middleware

            middlewares = [middleware(tracker)]  # the bare middleware, default options

        async def handler(request: web.Request) -> web.Response:
            async with ft_span("load_user", user_id=42):
                async with ft_span("db.query", db_system="postgres") as query:
                    query.set_tag("rows", 1)
                    async with ft_span("decode", codec="json"):
                        pass
            return web.Response(text="ok")

        app = web.Application(middlewares=middlewares)
        if variant == "flowtracker":
            from flowtracker.aiohttp import setup

            setup(app, tracker)  # the documented way: middleware, startup and cleanup
        elif variant == "ft-monitor":
            from flowtracker.aiohttp import setup

            setup(app, tracker, monitor_loop=True)  # the event-loop monitor on (issue 13)
        elif variant == "ft-noheader":
            from flowtracker.aiohttp import setup

            # The floor sends no response header: this shows what traceresponse costs.
            setup(app, tracker, traceresponse=False)
        else:

            async def start_tracker(app: web.Application) -> None:
                await tracker.start()

            async def stop_tracker(app: web.Application) -> None:
                await tracker.aclose()

            app.on_startup.append(start_tracker)
            app.on_cleanup.append(stop_tracker)

    elif variant == "otel":
        from opentelemetry import trace
        from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

        provider, exporter = otel_provider()
        if not isinstance(trace.get_tracer_provider(), type(provider)):  # settable once per process
            trace.set_tracer_provider(provider)

        async def force_flush() -> None:
            provider.force_flush()

        pipeline = Pipeline(force_flush, lambda: exporter.spans // SPANS_PER_REQUEST)
        start = provider.get_tracer("bench").start_as_current_span

        async def handler(request: web.Request) -> web.Response:
            with start("load_user", attributes={"user_id": 42}):
                with start("db.query", attributes={"db_system": "postgres"}) as query:
                    query.set_attribute("rows", 1)
                    with start("decode", attributes={"codec": "json"}):
                        pass
            return web.Response(text="ok")

        # The documented way: the instrumentor patches web.Application so every
        # app gets OpenTelemetry's middleware first. Undone once this app is
        # built, so the in-process suite's other variants stay untouched.
        instrumentor = AioHttpServerInstrumentor()
        instrumentor.instrument(tracer_provider=provider)
        try:
            app = web.Application()
        finally:
            instrumentor.uninstrument()

        async def stop_otel(app: web.Application) -> None:
            provider.shutdown()

        app.on_cleanup.append(stop_otel)

    elif variant == "aiozipkin":
        import aiozipkin as az

        tracer, transport = zipkin_tracer()
        pipeline = Pipeline(delivered=lambda: transport.spans // SPANS_PER_REQUEST)  # sent synchronously

        async def handler(request: web.Request) -> web.Response:
            root = az.request_span(request)
            with root.new_child("load_user") as user:
                user.tag("user_id", "42")
                with user.new_child("db.query") as query:
                    query.tag("db_system", "postgres")
                    query.tag("rows", "1")
                    with query.new_child("decode") as decode:
                        decode.tag("codec", "json")
            return web.Response(text="ok")

        app = web.Application()
        az.setup(app, tracer)

    else:
        raise SystemExit(f"unknown aiohttp variant {variant!r}")
    app.router.add_get("/", handler)
    return app, pipeline


def serve_aiohttp(variant: str, port: int, after_build: Callable[[], None], loop: str = "asyncio") -> None:
    import asyncio

    from aiohttp import web

    app = aiohttp_app(variant)
    after_build()
    event_loop: asyncio.AbstractEventLoop
    if loop == "uvloop":
        import uvloop

        event_loop = uvloop.new_event_loop()
    else:
        event_loop = asyncio.new_event_loop()
    web.run_app(
        app, host="127.0.0.1", port=port, access_log=None, print=None, handle_signals=True, loop=event_loop
    )


# -- ASGI --------------------------------------------------------------------


async def _respond(send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def _lifespan(receive: Receive, send: Send, startup: Any = None, shutdown: Any = None) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if startup is not None:
                await startup()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if shutdown is not None:
                await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


def asgi_app(variant: str) -> ASGIApp:
    """The ASGI application for ``variant`` (see ``ASGI_VARIANTS``)."""
    return build_asgi(variant)[0]


def build_asgi(variant: str) -> tuple[ASGIApp, Pipeline]:
    """The ASGI application for ``variant`` and its tracer's :class:`Pipeline`."""
    if variant == "untraced":

        async def untraced(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            elif scope["type"] == "http":
                await _respond(send)

        return untraced, UNTRACED

    if variant == "floor":
        from .floor import FloorTracer

        tracer = FloorTracer()
        span = tracer.span

        async def floor_handler(scope: Scope, receive: Receive, send: Send) -> None:
            async with span("load_user", user_id=42):
                async with span("db.query", db_system="postgres") as query:
                    query.set_tag("rows", 1)
                    async with span("decode", codec="json"):
                        pass
            await _respond(send)

        # The floor's root span wraps a call to the app, as every tracer's
        # middleware must (and as the aiohttp floor's middleware calls its handler).
        async def floor_app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "lifespan":
                await _lifespan(receive, send, tracer.start, tracer.aclose)
                return
            if scope["type"] != "http":
                return
            method, path = scope["method"], scope["path"]
            async with span(f"{method} {path}", **{"http.method": method, "http.target": path}) as root:

                async def send_status(message: Message) -> None:
                    if message["type"] == "http.response.start":
                        root.set_tag("http.status_code", message["status"])
                    await send(message)

                await floor_handler(scope, receive, send_status)

        return floor_app, Pipeline(tracer.flush, lambda: tracer.received)

    import flowtracker as ft

    sink = DropExporter()
    tracker = ft.Tracker(exporters=[sink], service="bench")
    pipeline = Pipeline(tracker.flush, lambda: sink.traces)
    ft_span = ft.span

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        async with ft_span("load_user", user_id=42):
            async with ft_span("db.query", db_system="postgres") as query:
                query.set_tag("rows", 1)
                async with ft_span("decode", codec="json"):
                    pass
        await _respond(send)

    if variant in ("flowtracker", "ft-noheader", "ft-monitor"):
        from flowtracker.asgi import FlowTrackerMiddleware

        # ft-noheader: without the traceresponse header (the floor sends none);
        # ft-monitor: with the event-loop monitor on (issue 13).
        middleware = FlowTrackerMiddleware(
            inner,
            tracker=tracker,
            traceresponse=variant != "ft-noheader",
            monitor_loop=variant == "ft-monitor",
        )
        return middleware, pipeline

    if variant == "ft-core":
        start_root_span = ft.start_root_span

        async def core_app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "lifespan":
                await _lifespan(receive, send, tracker.start, tracker.aclose)
                return
            if scope["type"] != "http":
                await inner(scope, receive, send)
                return
            method, path = scope["method"], scope["path"]
            root = start_root_span(
                f"{method} {path}",
                {"http.method": method, "http.target": path},
                tracker=tracker,
                kind="server",
            )

            async def send_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    root.set_tag("http.status_code", message["status"])
                await send(message)

            with root:
                await inner(scope, receive, send_status)

        return core_app, pipeline

    raise SystemExit(f"unknown ASGI variant {variant!r}")


#: How the ASGI apps run under uvicorn, here and in the in-process suite (``_inproc``).
UVICORN_OPTIONS: dict[str, Any] = {
    "log_level": "warning", "access_log": False, "lifespan": "on", "loop": "asyncio",
}


def serve_asgi(variant: str, port: int, after_build: Callable[[], None], loop: str = "asyncio") -> None:
    import uvicorn

    app = asgi_app(variant)
    after_build()
    uvicorn.run(app, host="127.0.0.1", port=port, **{**UVICORN_OPTIONS, "loop": loop})


# -- GC accounting -------------------------------------------------------------


class GCStats:
    """Counts collections per generation and the time they took (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.pause_ns = [0, 0, 0]
        self.max_pause_ns = 0
        self.collected = 0
        self._started = 0
        self.young: dict[str, int] = {}
        self.young_samples = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            if info["generation"] == 0 and sum(self.collections) % 10 == 0:
                # What fills the young generation: sampled every 10th collection.
                for obj in gc.get_objects(generation=0):
                    name = type(obj).__qualname__
                    self.young[name] = self.young.get(name, 0) + 1
                self.young_samples += 1
            self._started = time.perf_counter_ns()
            return
        pause = time.perf_counter_ns() - self._started
        generation = info["generation"]
        self.collections[generation] += 1
        self.pause_ns[generation] += pause
        self.max_pause_ns = max(self.max_pause_ns, pause)
        self.collected += info.get("collected", 0)

    def garbage(self) -> None:
        """With the GC off: counts the cyclic garbage left behind, by type."""
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        kinds: dict[str, int] = {}
        for obj in gc.garbage:
            name = type(obj).__qualname__
            kinds[name] = kinds.get(name, 0) + 1
        self.garbage_total = len(gc.garbage)
        self.garbage_types = dict(sorted(kinds.items(), key=lambda item: -item[1])[:12])
        gc.garbage.clear()
        gc.set_debug(0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "young_objects_at_gen0_collection": {
                name: round(count / self.young_samples, 1)
                for name, count in sorted(self.young.items(), key=lambda item: -item[1])[:15]
            }
            if self.young_samples
            else None,
            "cyclic_garbage": getattr(self, "garbage_total", None),
            "cyclic_garbage_types": getattr(self, "garbage_types", None),
            "collections": self.collections,
            "pause_ms": [round(ns / 1e6, 3) for ns in self.pause_ns],
            "max_pause_ms": round(self.max_pause_ns / 1e6, 3),
            "collected": self.collected,
            "gc_enabled": gc.isenabled(),
        }


def _drop_tokens_on_exit() -> None:
    """Experiment: a span forgets its ContextVar token once exited (as the floor does).

    The token references the previous value (the parent span) and is one more
    GC-tracked object per span kept for the span's whole life; this measures
    what releasing it at exit does to the collector's work.
    """
    from flowtracker._core import Span

    original = Span.__exit__

    def __exit__(self: Any, *exc_info: Any) -> None:
        original(self, *exc_info)
        with contextlib.suppress(AttributeError):
            del self._token

    Span.__exit__ = __exit__  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._servers")
    parser.add_argument("kind", choices=("aiohttp", "asgi"))
    parser.add_argument("variant")
    parser.add_argument("port", type=int)
    parser.add_argument("--no-gc", action="store_true")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() once the app is built")
    parser.add_argument(
        "--drop-tokens", action="store_true", help="experiment: spans drop their ContextVar token on exit"
    )
    parser.add_argument("--gc-stats", type=Path, default=None)
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the server, stats to FILE")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio", help="the event loop")
    args = parser.parse_args(argv)
    os.environ.setdefault("FLOWTRACKER_EXPORTERS", "none")
    stats = GCStats()

    if args.drop_tokens:
        _drop_tokens_on_exit()

    def after_build() -> None:
        gc.collect()
        if args.gc_freeze:
            gc.freeze()
        if args.no_gc:
            gc.disable()
        if args.gc_stats is not None:
            gc.callbacks.append(stats)

    profiler = None
    if args.profile is not None:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        if args.kind == "aiohttp":
            serve_aiohttp(args.variant, args.port, after_build, args.loop)
        else:
            serve_asgi(args.variant, args.port, after_build, args.loop)
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(args.profile))
        if args.gc_stats is not None:
            if stats in gc.callbacks:  # the census below is not the app's pause
                gc.callbacks.remove(stats)
            if args.no_gc:
                stats.garbage()
            args.gc_stats.write_text(json.dumps(stats.as_dict()))
    sys.exit(0)


if __name__ == "__main__":
    main()
