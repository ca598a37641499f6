"""httpx: a client span for every request of every ``Client`` and ``AsyncClient``.

The wrappers sit on the transport layer, ``httpx.HTTPTransport.handle_request``
and ``httpx.AsyncHTTPTransport.handle_async_request``, where every request of
every client passes (each redirect hop too), whatever the client was built
with. A transport that does not derive from these two (``httpx.MockTransport``,
a user's own ``BaseTransport``) is not covered.

The span is what :mod:`flowtracker.integrations.http_client` makes of any
outgoing request, as for aiohttp's ``client_trace_config()``: a child of the
current span, kind ``client``, named ``HTTP GET host:port/path``, tagged
``http.method``, ``http.url`` (no query, no userinfo) and ``http.status_code``;
``error`` on a 5xx and on a transport error (which propagates unchanged), ``ok``
with its code on a 4xx. The request carries a ``traceparent`` naming the span,
and the trace's ``tracestate``. The span covers sending the request and
receiving the response's head; reading the body is the caller's. A request
made outside any span is left alone.

Example:
    >>> import flowtracker as ft
    >>> ft.instrument("httpx")
    ['httpx']
    >>> ft.uninstrument("httpx")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._core import Span
from ..integrations.http_client import client_span_name, end_client_span, start_client_span
from ._patch import Patches, async_wrapper, sync_wrapper

if TYPE_CHECKING:
    import httpx

__all__ = ("LIBRARY", "PIP", "install", "uninstall")

LIBRARY = "httpx"
PIP = "flowtracker[httpx]"

_patches = Patches(LIBRARY, "a client span per request")


def install() -> None:
    """Wraps both transports' request methods; does nothing when already done."""
    import httpx

    if _patches.active:
        return
    _patches.wrap(httpx.HTTPTransport, "handle_request", sync_wrapper(LIBRARY, _start, _end))
    _patches.wrap(httpx.AsyncHTTPTransport, "handle_async_request", async_wrapper(LIBRARY, _start, _end))


def uninstall() -> None:
    """Puts httpx's own methods back; requests already in flight finish as they began."""
    _patches.restore()


def _start(transport: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Span | None:
    """The span of ``handle_request(request)``; the request's headers get the trace context."""
    request: httpx.Request = args[0] if args else kwargs["request"]
    url = request.url
    method = request.method
    target = url.raw_path  # percent-encoded path and query
    query = target.find(b"?")
    if query >= 0:
        target = target[:query]
    # netloc is host[:port] (an IPv6 host in brackets), never the userinfo.
    address = f"{url.scheme}://{url.netloc.decode('ascii')}{target.decode('ascii')}"
    name = client_span_name(method, url.host, url.port, url.path)
    return start_client_span(name, method, address, request.headers)


def _end(client: Span, response: httpx.Response) -> None:
    status = response.status_code
    end_client_span(client, status, response.reason_phrase if status >= 500 else None)
