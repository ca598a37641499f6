"""The aiohttp application on ``--port``: OTLP/HTTP, the JSON API, the live feed and the page.

When it listens on a loopback address, requests must name a loopback host
(``Host: 127.0.0.1:4318``, ``localhost``, ``[::1]``): a web page in the
user's browser cannot then reach the API through a DNS name rebound to
127.0.0.1 (the attack that once hit Jupyter and Elasticsearch consoles).

Example:
    >>> loopback_host("localhost:4318"), loopback_host("evil.example:4318")
    (True, False)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import web

from .api import routes
from .feed import Hub
from .ingest import Ingest
from .page import page_routes
from .receiver import post_traces
from .store import Store

__all__ = ("build_app", "is_loopback", "loopback_host")

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, no port) is this machine only.

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0")
        (True, True, False)
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def loopback_host(header: str) -> bool:
    """Whether a ``Host`` header names a loopback host (any port)."""
    host = header.strip()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return is_loopback(host)


def build_app(ingest: Ingest, store: Store, hub: Hub, *, loopback_only: bool) -> web.Application:
    """The application (``loopback_only``: refuse requests that name another host)."""
    middlewares = [_loopback_guard] if loopback_only else []
    app = web.Application(middlewares=middlewares)
    app.add_routes(
        [
            web.post("/v1/traces", post_traces(ingest)),
            *routes(store, hub),
            *page_routes(store),
        ]
    )

    async def end_feeds(app: web.Application) -> None:
        hub.close()

    app.on_shutdown.append(end_feeds)
    return app


@web.middleware
async def _loopback_guard(request: web.Request, handler: _Handler) -> web.StreamResponse:
    if not loopback_host(request.host):
        raise web.HTTPForbidden(
            text=f"this server answers requests for 127.0.0.1 or localhost, not {request.host!r}"
        )
    return await handler(request)
