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
task after the middleware chain returned. A ``web.Response`` with a small
in-memory body (up to 64 KiB, not compressed: the common case) goes out in one
write that never waits, so its root ends as the middleware returns it; any
other returned response (a lazy or large body, a file, a stream) ends the
root in that task's done-callback, once sent. A client gone before the answer
is ``cancelled`` either way.

Startup and shutdown (:mod:`flowtracker.integrations.lifecycle`): :func:`setup`
starts the tracker (and the loop monitor) on the app's loop at startup and
flushes it at cleanup, closing it if it started it. The bare
:func:`middleware` has no hooks: the first request starts a tracker it was
given, and SIGTERM/SIGINT flush it before the server stops (requests that
finish during the stop flush before they end, so none is left exporting
when the server ends its loop). Without a
tracker it reports to the tracker in effect (``async with tracker``, the last
one started, else the process-wide default tracker, which runs in a daemon
thread and is flushed by an ``atexit`` hook), so a graceful stop
(``web.run_app`` on SIGINT/SIGTERM) loses no trace.

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

from ._core import Span, activate, deactivate, suppressed
from ._pipeline.tracker import Tracker
from .integrations.http_client import client_span_name, end_client_span, start_client_span
from .integrations.http_server import (
    HttpOptions,
    RequestRoots,
    build_options,
    check_options,
    end_request_span,
    trace_id_hex,
)
from .integrations.lifecycle import AppLifecycle
from .loop_monitor import monitor_threshold
from .propagation import TRACEPARENT, TRACERESPONSE, TRACESTATE, context_from, traceparent_of

if TYPE_CHECKING:
    from aiohttp.typedefs import Handler, Middleware
    from typing_extensions import Unpack

    from .integrations.http_server import HttpOptionsDict

__all__ = ("TRACKER_KEY", "client_trace_config", "middleware", "setup")


#: ``app[TRACKER_KEY]``: the tracker :func:`setup` installed.
TRACKER_KEY = web.AppKey("flowtracker.tracker", Tracker)

# aiohttp >= 3.11 wants typed request keys; older versions take plain strings.
_ROOT_KEY: Any = (
    web.RequestKey("flowtracker.root", Span) if hasattr(web, "RequestKey") else "flowtracker.root"
)

# A body up to this size goes out in one write that never waits for the
# client (asyncio buffers it; aiohttp drains only above 64 KiB).
_SMALL_BODY = 0x10000
_BYTES = (bytes, bytearray)


class _Deferred:
    """A root that ends once aiohttp has sent the response: from the request task's done-callback."""

    __slots__ = ("error", "root", "status")

    def __init__(self, root: Span, status: int | None, error: BaseException | None) -> None:
        self.root = root
        self.status = status
        self.error = error

    def task_done(self, task: asyncio.Task[Any]) -> None:
        """The request's task finished: the response was sent, or the client left."""
        status, cancelled = self.status, False
        if task.cancelled():
            cancelled = True
        else:
            failure = task.exception()
            if isinstance(failure, ConnectionError):
                # aiohttp could not send its response: the client is gone (unless
                # the handler failed mid-stream, which stays an error).
                cancelled = self.error is None
            elif failure is None:
                result = task.result()
                # aiohttp's request task returns (response, client_disconnected).
                if isinstance(result, tuple) and len(result) == 2:
                    response, reset = result
                    if reset is True:
                        cancelled = True
                    if isinstance(response, web.StreamResponse):
                        status = response.status
        end_request_span(self.root, status, self.error, cancelled)


def _end_root(
    request: web.Request, root: Span, response: web.StreamResponse, error: BaseException | None
) -> None:
    """Ends ``root`` for ``response``: now when aiohttp will send it without waiting, else once sent.

    aiohttp prepares and writes a returned response in the request's task
    after the middleware returned. A ``web.Response`` with a small in-memory
    body (up to 64 KiB, not compressed, not prepared yet) goes out in one
    synchronous write, so it is finished when the middleware returns it;
    anything else (a lazy or large body, a file, a stream) ends the root in
    that task's done-callback.
    """
    sent_at_once = (
        isinstance(response, web.Response)
        and not response.prepared
        and not response.compression
        and ((body := response.body) is None or (isinstance(body, _BYTES) and len(body) <= _SMALL_BODY))
    )
    if not sent_at_once:
        task = asyncio.current_task()
        # aiohttp sends the returned response in this task after we return; when
        # the handler runs in the connection's own task, end here instead.
        if task is not None and task is not request.task:
            task.add_done_callback(_Deferred(root, response.status, error).task_done)
            return
    # No await happens between here and the write: a client gone now is gone for it.
    end_request_span(root, response.status, error, request.transport is None)


def _route_template(request: web.Request) -> str | None:
    """The matched resource's template (``/orders/{id}``); ``None`` when nothing matched."""
    match_info = request.match_info
    if match_info.http_exception is not None:
        return None
    resource = match_info.route.resource
    return None if resource is None else resource.canonical


def _header_adder(options: HttpOptions) -> Callable[[Span, web.StreamResponse], None]:
    """Writes the trace headers straight into the response, each formatted once."""
    traceresponse = options.traceresponse
    id_header = options.trace_id_header

    def add_headers(root: Span, response: web.StreamResponse) -> None:
        context = root.span_context()
        if context is None:  # an exporter's silent span
            return
        if traceresponse:
            response.headers[TRACERESPONSE] = traceparent_of(context)
        if id_header:
            response.headers[id_header] = trace_id_hex(context)

    return add_headers


def middleware(tracker: Tracker | None = None, **options: Unpack[HttpOptionsDict]) -> Middleware:
    """An aiohttp middleware giving each request a root span.

    Args:
        tracker: Where traces go; started by the first request if it does not
            run yet (and then flushed on SIGTERM/SIGINT). ``None``: the tracker
            in effect (see the module docstring); with no configuration, the console.
        **options: See :mod:`flowtracker.integrations.http_server` (``excluded_paths``,
            ``request_tags``, ``record_headers``, ``span_name``,
            ``trace_id_header``, ``traceresponse``, ``unmatched_route``). A
            misspelt one raises ``TypeError`` here, naming the closest.

    Example:
        >>> from aiohttp import web
        >>> from flowtracker.aiohttp import middleware
        >>> app = web.Application(middlewares=[middleware()])
    """
    check_options("middleware()", options, also=("tracker",))
    return _middleware(AppLifecycle(tracker), build_options(**options), headers_at_prepare=False)


def _middleware(lifecycle: AppLifecycle, opts: HttpOptions, *, headers_at_prepare: bool) -> Middleware:
    """The middleware; with ``headers_at_prepare`` the trace headers come from setup()'s signal."""
    # Everything that depends only on the options is decided here, once: a
    # request pays only for what is configured.
    excludes = opts.excludes_any
    add_headers = _header_adder(opts) if opts.sends_headers and not headers_at_prepare else None
    roots = RequestRoots(opts, lifecycle.tracker)
    known = roots.known

    @web.middleware
    async def flowtracker_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if excludes and opts.excluded(path):
            with suppressed():
                return await handler(request)
        if not lifecycle.started:  # no startup hook ran (a bare middleware, a server without signals)
            await lifecycle.start_from_request()
        method = request.method
        # The matched route object is the name's key: no template is read per
        # request. An unmatched request's route object is new each time, so its
        # name is remembered as (method, None) instead.
        key = (method, request.match_info.route)
        named = known.get(key)
        if named is None:
            template = _route_template(request)
            named = roots.name(key if template is not None else (method, None), method, template, request)
        headers = request.headers
        # One case-insensitive lookup when no trace context came in (the common case).
        context = (
            context_from(headers.getall(TRACEPARENT), headers.getall(TRACESTATE, ()))
            if TRACEPARENT in headers
            else None
        )
        root = roots.start(named[0], method, named[1], path, headers, request, context)
        if headers_at_prepare:
            request[_ROOT_KEY] = root
        token = activate(root)
        response: web.StreamResponse | None = None
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if add_headers is not None:
                add_headers(root, exc)
            _end_root(request, root, exc, exc if exc.status >= 500 else None)
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            end_request_span(root, None, None, True)  # the client went away mid-request
            raise
        except Exception as exc:
            end_request_span(root, 500, exc, False)  # aiohttp answers 500
            raise
        finally:
            deactivate(root, token)
            if response is None and lifecycle.stopping:  # ended by an error: flushed as below
                await lifecycle.flush()
        if add_headers is not None and not response.prepared:
            add_headers(root, response)
        _end_root(request, root, response, None)
        if lifecycle.stopping:
            # A stop signal came: the server's graceful shutdown waits for this
            # task, not for the export, and may end the loop under it.
            await lifecycle.flush()
        return response

    return flowtracker_middleware


def _on_response_prepare(options: HttpOptions) -> Callable[[web.Request, web.StreamResponse], Any]:
    """setup()'s ``on_response_prepare`` receiver: the trace headers on every response."""
    add_headers = _header_adder(options)

    async def add_trace_headers(request: web.Request, response: web.StreamResponse) -> None:
        # Reaches the responses the middleware cannot touch: streams the handler
        # prepared itself, websocket handshakes and aiohttp's own 500 page.
        try:
            root = request[_ROOT_KEY]
        except KeyError:  # not traced (an excluded path)
            return
        add_headers(root, response)

    return add_trace_headers


def setup(
    app: web.Application,
    tracker: Tracker | None = None,
    *,
    monitor_loop: bool | float = False,
    **options: Unpack[HttpOptionsDict],
) -> Tracker:
    """Adds the middleware (outermost) and runs a tracker for the app's lifetime.

    The tracker starts on the app's loop at startup and is flushed at cleanup
    (closed, if ``setup`` started it). Also adds the trace headers to every
    response, including streams and aiohttp's own error pages.

    Args:
        app: The application (before it starts).
        tracker: The tracker to use; ``None`` creates one whose exporters come
            from ``FLOWTRACKER_EXPORTERS`` (console when unset).
        monitor_loop: Watch the server's event loop for the app's lifetime
            (:func:`flowtracker.monitor_event_loop`): ``True`` with the default
            block threshold (0.1 s), or a threshold in seconds. Default ``False``.
        **options: As for :func:`middleware` (``monitor_loop`` and ``tracker``
            are known too: a misspelt option raises ``TypeError`` here).

    Returns:
        The tracker (also stored as ``app[TRACKER_KEY]``).

    Example:
        >>> from aiohttp import web
        >>> import flowtracker as ft
        >>> from flowtracker.aiohttp import setup
        >>> app = web.Application()
        >>> tracker = setup(app, ft.Tracker(exporters=[ft.MemoryExporter()], service="orders"))
    """
    check_options("setup()", options, also=("tracker", "monitor_loop"))
    used = tracker if tracker is not None else Tracker()
    opts = build_options(**options)
    lifecycle = AppLifecycle(used, monitor_threshold(monitor_loop))  # the threshold is checked now
    # The signal costs every response a coroutine call: only when there are headers to send.
    at_prepare = opts.sends_headers
    app.middlewares.insert(0, _middleware(lifecycle, opts, headers_at_prepare=at_prepare))
    if at_prepare:
        app.on_response_prepare.append(_on_response_prepare(opts))
    app[TRACKER_KEY] = used

    async def start(app: web.Application) -> None:
        await lifecycle.startup()

    async def stop(app: web.Application) -> None:
        await lifecycle.shutdown()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
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
        url = params.url.with_query(None).with_fragment(None).with_user(None)
        name = None
        if span_name is not None:
            try:
                name = span_name(params.method, url)
            except Exception:
                name = None
        if not name:
            name = client_span_name(params.method, url.host, url.explicit_port, url.path)
        client = start_client_span(name, params.method, str(url), params.headers if propagate else None)
        if client is None:  # no current span: the request is not traced
            return
        ctx.flowtracker_span = client

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
        end_client_span(client, params.response.status, params.response.reason)

    async def on_exception(
        session: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestExceptionParams
    ) -> None:
        client: Span | None = getattr(ctx, "flowtracker_span", None)
        if client is None:
            return
        client.end_with_exception(params.exception)

    config = aiohttp.TraceConfig()
    config.on_request_start.append(on_start)
    config.on_request_redirect.append(on_redirect)
    config.on_request_end.append(on_end)
    config.on_request_exception.append(on_exception)
    return config
