"""Pure ASGI middleware: Starlette, FastAPI, or any ASGI app under any server.

A plain ASGI callable, never Starlette's ``BaseHTTPMiddleware`` (which runs
the app in another task, breaking contextvars and streaming), and it imports
nothing from Starlette. Use it either way::

    app.add_middleware(FlowTrackerMiddleware)    # Starlette / FastAPI
    app = FlowTrackerMiddleware(app)             # any ASGI app (outermost)

HTTP requests get a root span (kind ``server``) named ``"<METHOD> <route>"``:
the route template comes from the route the framework matched
(``scope["route"]``, which Starlette and FastAPI set, mounts included) once
the app has handled the request; with no route, the bounded
``unmatched_route`` fallback. The root ends when the final body message has
been sent, so streaming responses are timed to their last byte. A client that
disconnects first ends it ``cancelled``; an exception ends it ``error`` (code
500 unless a response had started) and propagates unchanged.

Websocket connections get a root span ``WEBSOCKET <route>`` covering the
whole connection; ``lifespan`` is watched; other scope types pass through
untouched.

Lifespan (:mod:`flowtracker.integrations.lifecycle`): at startup the
middleware starts its tracker (and the loop monitor) on the server's loop and
at shutdown flushes it (closing it when it started it). With no tracker given,
requests report to the tracker in effect, by default the process-wide one on
its own thread, which is flushed at shutdown too. An app that does not speak
lifespan gets it answered by the middleware. Without any lifespan
(``--lifespan off``), the first request starts the tracker, and SIGTERM or
SIGINT flush it before the server stops (uvicorn then re-raises the signal,
so no ``atexit`` hook would run): requests in flight at the signal flush
before they finish.

Trace headers (``traceresponse``, ``trace_id_header``) go on every response
that passes through the middleware. Error pages that an outer layer sends
(Starlette's ``ServerErrorMiddleware`` sits outside ``add_middleware``
middlewares) do not pass through it; wrap the app outermost to get them there.

Example:
    >>> from flowtracker.asgi import FlowTrackerMiddleware
    >>> async def app(scope, receive, send): ...
    >>> app = FlowTrackerMiddleware(app, excluded_paths=["/health"], trace_id_header="X-Trace-Id")
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from ._core import Span, activate, deactivate, suppressed
from ._pipeline.tracker import Tracker
from .integrations.http_server import (
    RequestRoots,
    build_options,
    check_options,
    end_request_span,
    trace_id_hex,
)
from .integrations.lifecycle import AppLifecycle
from .loop_monitor import LoopMonitor, monitor_threshold
from .propagation import TRACERESPONSE, TraceContext, context_from, traceparent_bytes

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .integrations.http_server import HttpOptions, HttpOptionsDict

__all__ = ("FlowTrackerMiddleware",)

logger = logging.getLogger("flowtracker")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class FlowTrackerMiddleware:
    """Traces HTTP requests and websocket connections of the wrapped ASGI app.

    Args:
        app: The ASGI app.
        tracker: Where traces go, started at lifespan startup (or by the
            first request) unless it runs already. ``None``: the tracker in
            effect, by default the process-wide default tracker on its own
            thread (exporters from ``FLOWTRACKER_EXPORTERS``; console when
            unset, and when invalid, the mistake named once on stderr: a typo
            never fails a request).
        monitor_loop: Watch the server's event loop from startup (or the first
            request) to shutdown (:func:`flowtracker.monitor_event_loop`):
            ``True`` with the default block threshold (0.1 s), or a threshold
            in seconds. Default ``False``.
        **options: See :mod:`flowtracker.integrations.http_server` (``excluded_paths``,
            ``request_tags`` (called with the ASGI ``scope``), ``record_headers``,
            ``span_name``, ``trace_id_header``, ``traceresponse``, ``unmatched_route``).
            A misspelt one raises ``TypeError`` here, naming the closest.

    Example:
        >>> from starlette.applications import Starlette
        >>> from flowtracker.asgi import FlowTrackerMiddleware
        >>> app = Starlette()
        >>> app.add_middleware(FlowTrackerMiddleware, excluded_paths=["/health"])
    """

    def __init__(
        self,
        app: ASGIApp,
        tracker: Tracker | None = None,
        *,
        monitor_loop: bool | float = False,
        **options: Unpack[HttpOptionsDict],
    ) -> None:
        check_options("FlowTrackerMiddleware()", options, also=("tracker", "monitor_loop"))
        self.app = app
        self.tracker = tracker
        self.options: HttpOptions = build_options(**options)
        #: The app's tracker and loop monitor from startup to shutdown.
        self.lifecycle = AppLifecycle(tracker, monitor_threshold(monitor_loop))
        # Decided once from the options: a request pays only for what is configured.
        self._excludes = self.options.excludes_any
        self._roots = RequestRoots(self.options, tracker)
        self.sends_headers = self.options.sends_headers
        self._traceresponse = self.options.traceresponse
        id_header = self.options.trace_id_header
        self._id_header = id_header.lower().encode("latin-1") if id_header else None
        #: A request's root is renamed once the app ran only if it was routed, or a callback names it.
        self._names_each_request = self.options.span_name is not None

    @property
    def loop_monitor(self) -> LoopMonitor | None:
        """The loop monitor while the app runs (``monitor_loop``), else ``None``."""
        return self.lifecycle.monitor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # HTTP requests are served here, not in a method of their own: one
        # coroutine fewer per request. The other scope types branch off.
        if scope["type"] != "http":
            await self._other(scope, receive, send)
            return
        if self._excludes and self.options.excluded(scope.get("path", "")):
            with suppressed():
                await self.app(scope, receive, send)
            return
        lifecycle = self.lifecycle
        if not lifecycle.started:  # the server ran no lifespan (uvicorn --lifespan off)
            await lifecycle.start_from_request()
        method = scope.get("method", "GET")
        root = self._start(scope, method)
        exchange = _HttpExchange(self, root, scope, method, receive, send)
        token = activate(root)
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except asyncio.CancelledError:
            exchange.cancelled = True
            raise
        except OSError as error:
            if exchange.disconnected:  # ASGI 2.4: send after a disconnect raises OSError
                exchange.cancelled = True
            else:
                exchange.error = error
            raise
        except BaseException as error:
            exchange.error = error
            raise
        finally:
            deactivate(root, token)
            if not exchange.ended:
                exchange.end()
            if lifecycle.stopping:  # a stop signal came: the server waits for this task, not for export
                await lifecycle.flush()

    async def _other(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Websocket connections and lifespan; other scope types pass through untouched."""
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        received: set[str] = set()
        answered: list[str] = []

        async def watched_receive() -> Message:
            message = await receive()
            received.add(message["type"])
            if message["type"] == "lifespan.startup":
                await self.lifecycle.startup()
            return message

        async def watched_send(message: Message) -> None:
            answered.append(message["type"])
            if message["type"] in (
                "lifespan.startup.failed",
                "lifespan.shutdown.complete",
                "lifespan.shutdown.failed",
            ):
                await self.lifecycle.shutdown()
            await send(message)

        try:
            await self.app(scope, watched_receive, watched_send)
        except Exception as error:
            if answered:
                raise  # the app speaks lifespan and failed: its error, as it is
            logger.info("the ASGI app does not handle lifespan (%r); flowtracker answers it", error)
            await self._answer_lifespan(receive, send, "lifespan.startup" in received)

    async def _answer_lifespan(self, receive: Receive, send: Send, started: bool) -> None:
        """Speaks lifespan for an app that does not, so the tracker still starts and flushes."""
        if not started:
            message = await receive()
            if message["type"] != "lifespan.startup":
                return
            await self.lifecycle.startup()
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        if message["type"] == "lifespan.shutdown":
            await self.lifecycle.shutdown()
            await send({"type": "lifespan.shutdown.complete"})

    # -- requests -----------------------------------------------------------------

    def _start(self, scope: Scope, method: str) -> Span:
        """Starts the root, named for the unmatched route until the app has routed the request."""
        headers = scope.get("headers") or ()
        roots = self._roots
        key = (method, None)
        named = roots.known.get(key) or roots.name(key, method, None, scope)
        path = scope.get("path", "")
        return roots.start(named[0], method, None, path, headers, scope, _trace_context(headers))

    def with_trace_headers(self, message: Message, root: Span) -> Message:
        """``message`` (a response start or websocket accept) with ``root``'s trace headers added.

        A new message and header list, each value formatted once, as the
        bytes the server sends (no conversion for it to make): the app's own
        message may be shared.
        """
        context = root.span_context()
        if context is None:  # an exporter's silent span
            return message
        headers = list(message.get("headers") or ())
        if self._traceresponse:
            headers.append((_TRACERESPONSE, traceparent_bytes(context)))
        if self._id_header is not None:
            headers.append((self._id_header, trace_id_hex(context).encode("ascii")))
        return {**message, "headers": headers}

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.options.excluded(scope.get("path", "")):
            with suppressed():
                await self.app(scope, receive, send)
            return
        lifecycle = self.lifecycle
        if not lifecycle.started:
            await lifecycle.start_from_request()
        root = self._start(scope, "WEBSOCKET")
        close_code: list[int] = []

        async def watched_receive() -> Message:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                close_code.append(int(message.get("code", 1005)))
            return message

        async def watched_send(message: Message) -> None:
            kind = message["type"]
            if kind == "websocket.accept" and self.sends_headers:
                message = self.with_trace_headers(message, root)
            elif kind == "websocket.close":
                close_code.append(int(message.get("code", 1000)))
            elif kind == "websocket.http.response.start":  # the handshake was denied
                root.set_tag("http.status_code", message["status"])
            await send(message)

        token = activate(root)
        failure: BaseException | None = None
        try:
            await self.app(scope, watched_receive, watched_send)
        except BaseException as error:
            failure = error
            raise
        finally:
            deactivate(root, token)
            self.set_route(root, "WEBSOCKET", scope)
            if close_code:
                root.set_tag("websocket.close_code", close_code[0])
            if failure is None:
                root.finish()
            else:
                root.end_with_exception(failure)
            if lifecycle.stopping:
                await lifecycle.flush()

    def set_route(self, root: Span, method: str, scope: Scope) -> None:
        """Names ``root`` after the route the app matched (known only once it ran)."""
        if "route" not in scope and not self._names_each_request:
            return  # not routed (an app without a router, a 404): the name it started with stays
        route = route_template(scope)
        if route is not None:
            root.set_tag("http.route", route)
        elif not self._names_each_request:
            return
        key = (method, route)
        roots = self._roots
        root.name = (roots.known.get(key) or roots.name(key, method, route, scope))[0]


class _HttpExchange:
    """One HTTP request under the middleware: watches its messages, ends its root.

    ``receive`` and ``send`` are bound methods handed to the app (one object
    per request, no closures).
    """

    __slots__ = (
        "_receive",
        "_send",
        "cancelled",
        "disconnected",
        "ended",
        "error",
        "final_sent",
        "method",
        "middleware",
        "root",
        "scope",
        "status",
        "trailers",
    )

    def __init__(
        self,
        middleware: FlowTrackerMiddleware,
        root: Span,
        scope: Scope,
        method: str,
        receive: Receive,
        send: Send,
    ) -> None:
        self.middleware = middleware
        self.root = root
        self.scope = scope
        self.method = method
        self._receive = receive
        self._send = send
        self.status: int | None = None
        self.error: BaseException | None = None
        self.cancelled = False
        self.disconnected = False
        self.final_sent = False
        self.trailers = False
        self.ended = False

    async def receive(self) -> Message:
        message = await self._receive()
        # After the final body message, a disconnect is the normal end.
        if message["type"] == "http.disconnect" and not self.final_sent:
            self.disconnected = True
        return message

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":  # the most frequent message first
            final = not message.get("more_body", False) and not self.trailers
        elif kind == "http.response.start":
            final = False
            self.status = message["status"]
            self.trailers = bool(message.get("trailers"))
            middleware = self.middleware
            if middleware.sends_headers:
                message = middleware.with_trace_headers(message, self.root)
        elif kind == "http.response.trailers":
            final = not message.get("more_trailers", False)
        elif kind == "http.response.zerocopysend":
            final = not message.get("more_body", False)
        else:
            final = kind == "http.response.pathsend"
        if final:
            self.final_sent = True
        try:
            await self._send(message)
        except OSError:
            self.disconnected = True
            raise
        if final:
            self.end()

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        root = self.root
        self.middleware.set_route(root, self.method, self.scope)
        status = self.status
        error = self.error
        if error is not None and status is None:
            status = 500  # the server answers 500 for an app that raised before responding
        cancelled = self.cancelled or (self.disconnected and error is None)
        end_request_span(root, status, error, cancelled)


_TRACERESPONSE = TRACERESPONSE.encode("latin-1")
_TRACE_NAMES = (b"traceparent", b"tracestate")


def _trace_context(headers: Any) -> TraceContext | None:
    """The incoming context from ASGI's ``[(name, value), ...]`` byte pairs (names lowercase)."""
    parents: list[str] | None = None
    states: list[str] = []
    for name, value in headers:
        if name == b"traceparent":
            if parents is None:
                parents = []
            parents.append(value.decode("latin-1"))
        elif name == b"tracestate":
            states.append(value.decode("latin-1"))
        elif 10 <= len(name) <= 11 and name.lower() in _TRACE_NAMES:
            # ASGI servers lowercase names; this covers one that does not.
            if name.lower() == b"traceparent":
                if parents is None:
                    parents = []
                parents.append(value.decode("latin-1"))
            else:
                states.append(value.decode("latin-1"))
    return context_from(parents, states) if parents is not None else None


def route_template(scope: Scope) -> str | None:
    """The matched route's path template, mounts included; ``None`` when nothing matched.

    Reads ``scope["route"]`` (set by Starlette's router, FastAPI included;
    any object with a ``path`` attribute, or a string). When the route sits
    under a ``Mount``, the mount prefixes are found by matching the
    top-level router's routes again (duck-typed: no Starlette import).
    """
    route = scope.get("route")
    if route is None:
        return None
    if isinstance(route, str):
        return route
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return None
    if scope.get("root_path", "") == scope.get("app_root_path", scope.get("root_path", "")):
        return path  # not mounted: the route's own template is the whole one
    router = scope.get("router")
    found = _mounted_template(getattr(router, "routes", None), _original_scope(scope), route, 0)
    return found if found is not None else path


def _original_scope(scope: Scope) -> dict[str, Any]:
    """The scope as the top-level router saw it (before mounts narrowed ``root_path``)."""
    original = dict(scope)
    original["root_path"] = scope.get("app_root_path", "")
    original.pop("path_params", None)
    return original


def _mounted_template(routes: Any, scope: dict[str, Any], target: Any, depth: int) -> str | None:
    if not routes or depth > 8:
        return None
    for route in routes:
        try:
            match, child = route.matches(scope)
        except Exception:
            continue
        if getattr(match, "name", None) != "FULL":
            continue
        prefix = str(getattr(route, "path", "")).rstrip("/")
        if route is target:
            return prefix or "/"
        nested = getattr(route, "routes", None)
        if nested:
            inner = _mounted_template(nested, {**scope, **child}, target, depth + 1)
            if inner is not None:
                return f"{prefix}{inner}"
        return None
    return None
