"""The HTTP-server layer both middlewares (aiohttp, ASGI) stand on.

It holds everything a request's root span needs that does not depend on the
framework: the options, starting the root (:class:`RequestRoots`: the
route-name cache, the default tags, the incoming trace context), the trace
id header's value (:func:`trace_id_hex`; ``traceresponse`` is
:func:`flowtracker.propagation.traceparent_of`) and ending the request
(:func:`end_request_span`). Each middleware only reads its framework's
request and response.

Both middlewares accept the same keyword options (:class:`HttpOptionsDict`):

* ``excluded_paths``: paths that produce no trace (health checks); a string
  matches the path exactly, a compiled ``re.Pattern`` with ``fullmatch``.
  Default: none.
* ``request_tags``: ``callback(request) -> Mapping | None`` called when a
  request starts; its items become root-span tags. ``request`` is aiohttp's
  ``web.Request`` or the ASGI ``scope``. Default: none.
* ``record_headers``: request header names to record as
  ``http.request.header.<name>`` tags. Credentials are never recorded: a
  name the export policy's rule calls secret
  (:func:`flowtracker._wire.policy.is_secret_name` with the default words:
  ``Authorization``, ``Proxy-Authorization``, ``Cookie``, ``Set-Cookie``,
  ``X-Api-Key``, ``X-Auth-Token``, ``X-Session-Id``, ``X-Hub-Signature-256``, ...)
  is stored as ``"[REDACTED]"``, whatever the tracker's own ``redact_keys``
  say. Default: none.
* ``span_name``: ``callback(method, route, request) -> str`` naming the root
  span; ``route`` is the route template or the ``unmatched_route`` fallback.
  Default: ``"<METHOD> <route>"``.
* ``trace_id_header``: a response header that carries the trace id, e.g.
  ``"X-Trace-Id"``. Default: none.
* ``traceresponse``: send the W3C ``traceresponse`` header. Default ``True``.
* ``unmatched_route``: the route part of the name when no route matched (a
  404, a 405, an ASGI app without routing), so names stay a bounded set.
  Default ``"<unmatched>"``.

A callback that raises is logged and ignored: tracing never breaks a request.
A misspelt option raises ``TypeError`` where the middleware is built, naming
the closest known option (:func:`check_options`).

Example:
    >>> import re
    >>> options = build_options(excluded_paths=["/health", re.compile(r"/static/.*")],
    ...                         record_headers=["User-Agent", "Authorization"])
    >>> options.excluded("/static/app.js")
    True
    >>> header_tags(options, {"user-agent": "curl", "authorization": "Bearer x"})
    {'http.request.header.user-agent': 'curl', 'http.request.header.authorization': '[REDACTED]'}
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypedDict

from .._core import STATUS_CANCELLED, STATUS_ERROR, Span, SpanContext, start_root_span
from .._wire.policy import REDACTED, is_secret_name
from ..propagation import Headers, TraceContext, start_from_context

if TYPE_CHECKING:
    from .._pipeline.tracker import Tracker

logger = logging.getLogger("flowtracker")


#: Methods named as themselves; any other becomes ``_OTHER`` in span names.
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY", "WEBSOCKET"}
)

SpanNamer = Callable[[str, str, Any], str]
RequestTagger = Callable[[Any], "Mapping[str, Any] | None"]


class HttpOptionsDict(TypedDict, total=False):
    """The keyword options of both middlewares (see the module docstring)."""

    excluded_paths: Iterable[str | re.Pattern[str]]
    request_tags: RequestTagger
    record_headers: Iterable[str]
    span_name: SpanNamer
    trace_id_header: str | None
    traceresponse: bool
    unmatched_route: str


class HTTPStatusError(Exception):
    """Stands in for the error of a 5xx response that no exception caused."""


@dataclass(frozen=True)
class HttpOptions:
    """Validated middleware options; build with :func:`build_options`."""

    excluded_exact: frozenset[str]
    excluded_patterns: tuple[re.Pattern[str], ...]
    request_tags: RequestTagger | None
    record_headers: tuple[str, ...]
    span_name: SpanNamer | None
    trace_id_header: str | None
    traceresponse: bool
    unmatched_route: str
    #: The recorded headers whose values are credentials (stored as ``[REDACTED]``).
    secret_headers: frozenset[str] = frozenset()
    # Decided once from the fields above (build_options), read on every request:
    #: Some path is excluded (else the middlewares skip the check).
    excludes_any: bool = False
    #: Requests get tags beyond the standard ones (recorded headers, the callback).
    extra_tags: bool = False
    #: Responses carry trace headers.
    sends_headers: bool = True

    def excluded(self, path: str) -> bool:
        """True when ``path`` must not be traced."""
        if path in self.excluded_exact:
            return True
        patterns = self.excluded_patterns
        return bool(patterns) and any(pattern.fullmatch(path) for pattern in patterns)


def build_options(
    *,
    excluded_paths: Iterable[str | re.Pattern[str]] = (),
    request_tags: RequestTagger | None = None,
    record_headers: Iterable[str] = (),
    span_name: SpanNamer | None = None,
    trace_id_header: str | None = None,
    traceresponse: bool = True,
    unmatched_route: str = "<unmatched>",
) -> HttpOptions:
    """Checks and freezes the options; an unknown keyword raises ``TypeError`` at once."""
    if isinstance(excluded_paths, (str, re.Pattern)):
        excluded_paths = [excluded_paths]
    if isinstance(record_headers, str):
        record_headers = [record_headers]
    exact = frozenset(path for path in excluded_paths if isinstance(path, str))
    patterns = tuple(path for path in excluded_paths if isinstance(path, re.Pattern))
    for callback, label in ((request_tags, "request_tags"), (span_name, "span_name")):
        if callback is not None and not callable(callback):
            raise TypeError(f"{label} must be callable, got {callback!r}")
    recorded = tuple(dict.fromkeys(name.lower() for name in record_headers))
    return HttpOptions(
        exact,
        patterns,
        request_tags,
        recorded,
        span_name,
        trace_id_header,
        traceresponse,
        unmatched_route,
        secret_headers=frozenset(name for name in recorded if is_secret_name(name)),
        excludes_any=bool(exact or patterns),
        extra_tags=bool(recorded) or request_tags is not None,
        sends_headers=traceresponse or bool(trace_id_header),
    )


def check_options(caller: str, options: Mapping[str, Any], *, also: Iterable[str] = ()) -> None:
    """Raises ``TypeError`` naming the first option ``caller`` does not know, and the closest one it does.

    ``also`` are the caller's own keywords beside the HTTP options (``tracker``, ``monitor_loop``).
    A misspelt option is a mistake in code, so it fails at the line that has it, never at a request.

    Example:
        >>> check_options("middleware()", {"exclude_paths": ["/health"]})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: middleware() got an unknown option 'exclude_paths'; did you mean 'excluded_paths'? ...
    """
    known = sorted({*HttpOptionsDict.__optional_keys__, *also})
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ";"
            listed = ", ".join(known)
            raise TypeError(f"{caller} got an unknown option {name!r}{hint} Known options: {listed}")


def header_tags(options: HttpOptions, headers: Headers) -> dict[str, str]:
    """``http.request.header.<name>`` tags for the allow-listed headers present."""
    wanted = options.record_headers
    if not wanted:
        return {}
    values: dict[str, list[str]] = {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for raw_name, raw_value in pairs:
        name = raw_name.decode("latin-1") if isinstance(raw_name, (bytes, bytearray)) else str(raw_name)
        name = name.lower()
        if name in wanted:
            value = raw_value.decode("latin-1") if isinstance(raw_value, (bytes, bytearray)) else raw_value
            values.setdefault(name, []).append(str(value))
    return {
        f"http.request.header.{name}": REDACTED if name in options.secret_headers else ", ".join(found)
        for name in wanted
        if (found := values.get(name))
    }


def root_name(options: HttpOptions, method: str, route: str | None, request: Any) -> str:
    """The root span's name: ``"<METHOD> <route>"`` or the ``span_name`` callback's."""
    shown_route = route if route is not None else options.unmatched_route
    if options.span_name is not None:
        try:
            name = options.span_name(method, shown_route, request)
            if isinstance(name, str) and name:
                return name
            logger.warning("span_name returned %r, not a non-empty str; using the default", name)
        except Exception:
            logger.exception("span_name callback raised; using the default name")
    shown_method = method if method in KNOWN_METHODS else "_OTHER"
    return f"{shown_method} {shown_route}"


class RequestRoots:
    """Starts each request's root span: named once per route, tagged, continuing the caller's trace.

    Both middlewares hold one, built with their options. Per request they
    read :attr:`known` themselves (one dict lookup), keyed by something cheap
    their framework already holds for the route: aiohttp ``(method, route
    object)``, ASGI ``(method, route template)``; an unmatched request is
    ``(method, None)``. Only on a miss do they call :meth:`name`; then
    :meth:`start`. Names are a bounded set, so without a ``span_name``
    callback a route's name is made once (up to :attr:`LIMIT` keys; past it,
    made per request); with one, the callback runs for every request (it may
    look at the request) and nothing is remembered.

    Example:
        >>> roots = RequestRoots(build_options(), tracker=None)
        >>> roots.name(("GET", "/orders/{id}"), "GET", "/orders/{id}", None)
        ('GET /orders/{id}', '/orders/{id}')
        >>> roots.known[("GET", "/orders/{id}")]
        ('GET /orders/{id}', '/orders/{id}')
        >>> root = roots.start("GET /orders/{id}", "GET", "/orders/{id}", "/orders/42", {}, None, None)
        >>> root.tags, root.kind
        ({'http.method': 'GET', 'http.route': '/orders/{id}', 'http.target': '/orders/42'}, 'server')
        >>> root.finish()
    """

    __slots__ = ("_options", "_tracker", "known")

    #: Routes x methods remembered (guards against unbounded keys).
    LIMIT = 4096

    def __init__(self, options: HttpOptions, tracker: Tracker | None) -> None:
        self._options = options
        self._tracker = tracker
        #: Route key -> (root name, route template), for the routes named so far.
        self.known: dict[Hashable, tuple[str, str | None]] = {}

    def name(self, key: Hashable, method: str, route: str | None, request: Any) -> tuple[str, str | None]:
        """``(root name, route)`` for ``method`` and ``route`` (``None``: unmatched), kept under ``key``.

        The middlewares call it when :attr:`known` has no ``key``; it looks
        again, so a caller may pass a second key for the same route (aiohttp's
        unmatched requests, whose route object is new each time, pass
        ``(method, None)``).
        """
        named = self.known.get(key)
        if named is None:
            named = (root_name(self._options, method, route, request), route)
            if self._options.span_name is None and len(self.known) < self.LIMIT:
                self.known[key] = named
        return named

    def start(
        self,
        name: str,
        method: str,
        route: str | None,
        path: str,
        headers: Headers,
        request: Any,
        context: TraceContext | None,
    ) -> Span:
        """Starts the root (kind ``server``) with its tags.

        Tags: method, route, target, then the recorded headers and the ``request_tags`` callback's.
        """
        # One literal per shape (key order is the output's): most requests take these.
        tags: dict[str, Any]
        if route is None:
            tags = {"http.method": method, "http.target": path}
        else:
            tags = {"http.method": method, "http.route": route, "http.target": path}
        options = self._options
        if options.extra_tags:
            if options.record_headers:
                tags.update(header_tags(options, headers))
            if options.request_tags is not None:
                try:
                    extra = options.request_tags(request)
                    if extra:
                        tags.update(extra)
                except Exception:
                    logger.exception("request_tags callback raised; its tags are left out")
        if context is None:  # most requests: a new trace, straight to the core (one call fewer)
            return start_root_span(name, tags, tracker=self._tracker, kind="server")
        return start_from_context(name, context, tags=tags, tracker=self._tracker, kind="server")


def trace_id_hex(context: SpanContext) -> str:
    """The trace id of ``context`` as 32 lowercase hex digits (the ``trace_id_header``'s value).

    Example:
        >>> from flowtracker._core import SpanContext
        >>> trace_id_hex(SpanContext(0x4bf9, 1, True, False, None))
        '00000000000000000000000000004bf9'
    """
    return context.trace_id.to_bytes(16, "big").hex()


def end_request_span(
    root: Span, status_code: int | None, error: BaseException | None, cancelled: bool
) -> None:
    """Ends ``root``: cancelled when the client went away, error on 5xx or an exception."""
    if status_code is not None:
        root.set_tag("http.status_code", status_code)
    if cancelled:
        root.end(STATUS_CANCELLED)
    elif error is not None:
        root.end(STATUS_ERROR, error)
    elif status_code is not None and status_code >= 500:
        root.end(STATUS_ERROR, HTTPStatusError(_status_text(status_code)))
    else:
        root.finish()  # most requests: straight to the span's end, one call fewer than end()


def _status_text(code: int) -> str:
    try:
        return f"HTTP {code} {HTTPStatus(code).phrase}"
    except ValueError:
        return f"HTTP {code}"
