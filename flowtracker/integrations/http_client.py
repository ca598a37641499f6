"""The HTTP-client layer: what every traced outgoing request shares.

aiohttp's ``client_trace_config()`` and the httpx instrumentation both stand
on it, so an outgoing call looks the same whichever library made it: a child
of the current span, kind ``client``, named ``HTTP <METHOD> <host[:port]><path>``
(:func:`client_span_name`), tagged ``http.method``, ``http.url`` (the caller
gives it without query, fragment or credentials) and ``http.status_code``;
``error`` on a 5xx (:func:`end_client_span`) and on a transport error; the
request carries a ``traceparent`` naming the span and the trace's
``tracestate`` (:func:`start_client_span`). A request made outside any span
gets no span and no header. Each library only reads its own URL and response
objects.

Example:
    >>> import flowtracker as ft
    >>> with ft.span("checkout"):
    ...     headers = {}
    ...     name = client_span_name("GET", "shipping", 8080, "/quote")
    ...     call = start_client_span(name, "GET", "http://shipping:8080/quote", headers)
    ...     end_client_span(call, 503, "Service Unavailable")
    >>> call.name, call.status, sorted(headers)
    ('HTTP GET shipping:8080/quote', 'error', ['traceparent'])
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from .._core import STATUS_ERROR, Span, start_child
from ..propagation import inject
from .http_server import HTTPStatusError

__all__ = ("client_span_name", "end_client_span", "start_client_span")


def client_span_name(method: str, host: str | None, port: int | None, path: str) -> str:
    """The default name of an outgoing request's span: ``HTTP GET host:port/path``.

    ``port`` is ``None`` when the URL does not spell it out (the scheme's
    default); ``path`` is the decoded path, without the query.

    Example:
        >>> client_span_name("POST", "api.example.com", None, "/orders")
        'HTTP POST api.example.com/orders'
    """
    if port is None:
        return f"HTTP {method} {host}{path}"
    return f"HTTP {method} {host}:{port}{path}"


def start_client_span(
    name: str, method: str, url: str, headers: MutableMapping[Any, Any] | None
) -> Span | None:
    """Starts the span of one outgoing request; ``None`` outside any span.

    Args:
        name: The span's name (:func:`client_span_name`, or the user's choice).
        method: The HTTP method (``http.method``).
        url: The URL without query, fragment or userinfo (``http.url``).
        headers: The request's headers, given ``traceparent`` (and
            ``tracestate``) naming the new span; ``None`` propagates nothing.
    """
    client = start_child(name, {"http.method": method, "http.url": url}, kind="client")
    if client is not None and headers is not None:
        inject(headers, client)
    return client


def end_client_span(client: Span, status: int, reason: str | None) -> None:
    """Ends ``client`` for a response: ``http.status_code``; a 5xx is an error, a 4xx is not.

    A transport error ends the span with :meth:`Span.end_with_exception` instead.
    """
    client.set_tag("http.status_code", status)
    if status >= 500:
        client.end(STATUS_ERROR, HTTPStatusError(f"HTTP {status} {reason or ''}".strip()))
    else:
        client.finish()
