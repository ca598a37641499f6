"""aiohttp integration: a server middleware, ``setup(app)``, and client tracing.

One root span (kind ``server``) per request, named ``"<METHOD> <route>"``
after the matched resource (``GET /orders/{id}``), continuing the caller's
trace when a valid ``traceparent`` came in. Tags: ``http.method``,
``http.route``, ``http.target`` (path without query) and
``http.status_code``. Status: ``error`` for 5xx and unhandled exceptions
(which still reach aiohttp, which answers 500), ``cancelled`` when the client
went away, ``ok`` otherwise.

The root ends when the response is finished, not when the handler returns:
aiohttp runs each request in a task of its own and sends a returned
response (prepare, body, ``write_eof``; a ``FileResponse`` its file) in that
task after the middleware chain returned, so the middleware ends the root in
that task's done-callback. Streams prepared by the handler and websockets end
with the handler, which is when they are finished.

Shutdown: :func:`setup` starts a tracker on the app's loop at startup and
flushes it at cleanup. The bare :func:`middleware` reports to the tracker in
effect (``async with tracker``, the last one started, else the process-wide
default tracker, which runs in a daemon thread and is flushed by an ``atexit``
hook), so a graceful stop (``web.run_app`` on SIGINT/SIGTERM) loses no trace.

Example:
    >>> from aiohttp import web
    >>> from flowtracker.aiohttp import setup
    >>> app = web.Application()
    >>> tracker = setup(app, excluded_paths=["/health"], trace_id_header="X-Trace-Id")
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from ._http_options import (
    HttpOptions,
    HTTPStatusError,
    build_options,
    end_request_span,
    response_headers,
    start_request_span,
    untraced,
)
from ._span import STATUS_CANCELLED, STATUS_ERROR, Span, _current, current_span, start_span
from ._tracker import Tracker
from .propagation import TRACEPARENT, TRACESTATE, context_from, inject

if TYPE_CHECKING:
    from aiohttp.typedefs import Handler, Middleware
    from typing_extensions import Unpack

    from ._http_options import HttpOptionsDict

__all__ = ("TRACKER_KEY", "client_trace_config", "middleware", "setup")


#: ``app[TRACKER_KEY]``: the tracker :func:`setup` installed.
TRACKER_KEY = web.AppKey("flowtracker.tracker", Tracker)

# aiohttp >= 3.11 wants typed request keys; older versions take plain strings.
_EXCHANGE_KEY: Any = web.RequestKey("flowtracker.exchange", object) if hasattr(web, "RequestKey") else (
    "flowtracker.exchange"
)


class _Exchange:
    """One traced request: its root span and what the middleware saw."""

    __slots__ = ("cancelled", "ended", "error", "headers_added", "options", "root", "status")

    def __init__(self, root: Span, options: HttpOptions) -> None:
        self.root = root
        self.options = options
        self.status: int | None = None
        self.error: BaseException | None = None
        self.cancelled = False
        self.ended = False
        self.headers_added = False

    def add_headers(self, response: web.StreamResponse, *, preparing: bool = False) -> None:
        # During on_response_prepare the response counts as prepared already,
        # but its headers are not written yet.
        if self.headers_added or (response.prepared and not preparing):
            return
        self.headers_added = True
        for name, value in response_headers(self.options, self.root):
            response.headers[name] = value

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            end_request_span(self.root, self.status, self.error, self.cancelled)

    def task_done(self, task: asyncio.Task[Any]) -> None:
        """The request's task finished: the response was sent, or the client left."""
        if task.cancelled():
            self.cancelled = True
            self.end()
            return
        failure = task.exception()
        if isinstance(failure, ConnectionError):
            # aiohttp could not send its response: the client is gone (unless
            # the handler failed mid-stream, which stays an error).
            self.cancelled = self.error is None
        elif failure is None:
            result = task.result()
            # aiohttp's request task returns (response, client_disconnected).
            if isinstance(result, tuple) and len(result) == 2:
                response, reset = result
                if reset is True:
                    self.cancelled = True
                if isinstance(response, web.StreamResponse):
                    self.status = response.status
        self.end()


def _route_template(request: web.Request) -> str | None:
    """The matched resource's template (``/orders/{id}``); ``None`` when nothing matched."""
    match_info = request.match_info
    if match_info.http_exception is not None:
        return None
    resource = match_info.route.resource
    return None if resource is None else resource.canonical


def middleware(tracker: Tracker | None = None, **options: Unpack[HttpOptionsDict]) -> Middleware:
    """An aiohttp middleware giving each request a root span.

    Args:
        tracker: Where traces go. ``None``: the tracker in effect (see the
            module docstring); with no configuration, the console.
        **options: See :mod:`flowtracker._http_options` (``excluded_paths``,
            ``request_tags``, ``record_headers``, ``span_name``,
            ``trace_id_header``, ``traceresponse``, ``unmatched_route``).

    Example:
        >>> from aiohttp import web
        >>> from flowtracker.aiohttp import middleware
        >>> app = web.Application(middlewares=[middleware()])
    """
    return _middleware(tracker, build_options(**options), headers_at_prepare=False)


def _middleware(tracker: Tracker | None, opts: HttpOptions, *, headers_at_prepare: bool) -> Middleware:
    """The middleware; with ``headers_at_prepare`` the trace headers come from setup()'s signal."""

    @web.middleware
    async def flowtracker_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if opts.excluded(request.path):
            with untraced():
                return await handler(request)
        headers = request.headers
        root = start_request_span(
            opts,
            tracker,
            method=request.method,
            path=request.path,
            route=_route_template(request),
            context=context_from(headers.getall(TRACEPARENT, ()), headers.getall(TRACESTATE, ())),
            headers=headers,
            request=request,
        )
        exchange = _Exchange(root, opts)
        if headers_at_prepare:
            request[_EXCHANGE_KEY] = exchange
        task = asyncio.current_task()
        # aiohttp sends the returned response in this task after we return;
        # when the handler runs in the connection's own task, end here instead.
        deferred = task is not None and task is not request.task
        if deferred:
            assert task is not None
            task.add_done_callback(exchange.task_done)
        token = _current.set(root)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exchange.status = exc.status
            if exc.status >= 500:
                exchange.error = exc
            if not headers_at_prepare:
                exchange.add_headers(exc)
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            exchange.cancelled = True  # the client went away mid-request
            raise
        except Exception as exc:
            exchange.status = 500
            exchange.error = exc
            raise
        else:
            exchange.status = response.status
            if not headers_at_prepare:
                exchange.add_headers(response)
            return response
        finally:
            try:  # noqa: SIM105 - per request: contextlib.suppress() costs an object and two calls
                _current.reset(token)
            except ValueError:  # reset from another context: leave it
                pass
            if not deferred:
                exchange.end()

    return flowtracker_middleware


async def _on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    # Reaches the responses the middleware cannot touch: streams the handler
    # prepared itself, websocket handshakes and aiohttp's own 500 page.
    exchange = request.get(_EXCHANGE_KEY)
    if isinstance(exchange, _Exchange):
        exchange.add_headers(response, preparing=True)


def setup(
    app: web.Application, tracker: Tracker | None = None, **options: Unpack[HttpOptionsDict]
) -> Tracker:
    """Adds the middleware (outermost) and runs a tracker for the app's lifetime.

    The tracker starts on the app's loop at startup and is flushed at cleanup
    (closed, if ``setup`` started it). Also adds the trace headers to every
    response, including streams and aiohttp's own error pages.

    Args:
        app: The application (before it starts).
        tracker: The tracker to use; ``None`` creates one whose exporters come
            from ``FLOWTRACKER_EXPORTERS`` (console when unset).
        **options: As for :func:`middleware`.

    Returns:
        The tracker (also stored as ``app[TRACKER_KEY]``).

    Example:
        >>> from aiohttp import web
        >>> import flowtracker as ft
        >>> from flowtracker.aiohttp import setup
        >>> app = web.Application()
        >>> tracker = setup(app, ft.Tracker(exporters=[ft.MemoryExporter()], service="orders"))
    """
    used = tracker if tracker is not None else Tracker()
    opts = build_options(**options)
    # The signal costs every response a coroutine call: only when there are headers to send.
    at_prepare = opts.traceresponse or bool(opts.trace_id_header)
    app.middlewares.insert(0, _middleware(used, opts, headers_at_prepare=at_prepare))
    if at_prepare:
        app.on_response_prepare.append(_on_response_prepare)
    app[TRACKER_KEY] = used
    started_here: list[bool] = []

    async def start_tracker(app: web.Application) -> None:
        if not used.running:
            await used.start()
            started_here.append(True)

    async def stop_tracker(app: web.Application) -> None:
        if started_here:
            # A task of its own: cleanup often runs in a task being cancelled
            # (Ctrl-C under asyncio.run), which aclose() would take for its own.
            await asyncio.shield(asyncio.ensure_future(used.aclose()))
        else:
            await used.flush()

    app.on_startup.append(start_tracker)
    app.on_cleanup.append(stop_tracker)
    return used


def client_trace_config(
    *, span_name: Callable[[str, Any], str] | None = None, propagate: bool = True
) -> aiohttp.TraceConfig:
    """An ``aiohttp.TraceConfig`` giving each outgoing request a child span.

    The span (kind ``client``) is named ``HTTP <METHOD> <host[:port]><path>``
    and tagged ``http.method``, ``http.url`` (no query, fragment or
    credentials) and ``http.status_code``; a 5xx or an exception is an error,
    a cancelled request ``cancelled``. The request carries ``traceparent``
    naming that span, and the trace's ``tracestate``. Requests made outside
    any span are left alone.

    Args:
        span_name: ``callback(method, url) -> str`` (``url`` a ``yarl.URL``).
        propagate: Send ``traceparent``/``tracestate``. Default ``True``.

    Example:
        >>> import aiohttp
        >>> from flowtracker.aiohttp import client_trace_config
        >>> async def call():
        ...     async with aiohttp.ClientSession(trace_configs=[client_trace_config()]) as session:
        ...         ...
    """

    async def on_start(
        session: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestStartParams
    ) -> None:
        parent = current_span()
        if parent is None or parent._state is None or parent._state.trace_id == 0:
            return
        url = params.url.with_query(None).with_fragment(None).with_user(None)
        name = None
        if span_name is not None:
            try:
                name = span_name(params.method, url)
            except Exception:
                name = None
        if not name:
            port = f":{url.explicit_port}" if url.explicit_port is not None else ""
            name = f"HTTP {params.method} {url.host}{port}{url.path}"
        client = start_span(name, **{"http.method": params.method, "http.url": str(url)})
        client.kind = "client"
        ctx.flowtracker_span = client
        if propagate:
            inject(params.headers, client)

    async def on_redirect(
        session: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestRedirectParams
    ) -> None:
        client: Span | None = getattr(ctx, "flowtracker_span", None)
        if client is not None:
            location = params.response.headers.get("Location", "")
            client.add_event("redirect", status=params.response.status, location=location.split("?")[0])

    async def on_end(
        session: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestEndParams
    ) -> None:
        client: Span | None = getattr(ctx, "flowtracker_span", None)
        if client is None:
            return
        status = params.response.status
        client.set_tag("http.status_code", status)
        if status >= 500:
            reason = params.response.reason or ""
            client._end(STATUS_ERROR, HTTPStatusError(f"HTTP {status} {reason}".strip()))
        else:
            client.finish()

    async def on_exception(
        session: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestExceptionParams
    ) -> None:
        client: Span | None = getattr(ctx, "flowtracker_span", None)
        if client is None:
            return
        if isinstance(params.exception, asyncio.CancelledError):
            client._end(STATUS_CANCELLED, None)
        else:
            client._end(STATUS_ERROR, params.exception)

    config = aiohttp.TraceConfig()
    config.on_request_start.append(on_start)
    config.on_request_redirect.append(on_redirect)
    config.on_request_end.append(on_end)
    config.on_request_exception.append(on_exception)
    return config
