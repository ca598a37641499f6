"""The JSON API and the live feed (a contract: the page, and code outside the project, use it).

``GET /api/traces``
    Trace summaries, newest first (by trace start time): ``{"traces": [...]}``.
    Parameters, each optional: ``service`` (any span of the trace is from
    it), ``name`` (substring of the trace's name, ASCII case ignored),
    ``status`` (``ok``, ``error``, ``cancelled``, ``unfinished``),
    ``min_duration_ms``, ``blocked=true``, ``limit`` (1-1000, default 100).
    A bad value, or a parameter not in this list, is ``400`` with
    ``{"error": "..."}``.
``GET /api/traces/{trace_id}``
    The trace in the wire format, ``service`` on every span. ``404`` when
    unknown, ``400`` when ``trace_id`` is not 32 hex digits.
``GET /api/live``
    Server-Sent Events of new and updated traces (:mod:`flowtracker.serve.feed`).

Example:
    >>> filters_of({"status": "error", "blocked": "true", "limit": "5"})
    Filters(service=None, name=None, status='error', min_duration_ms=None, blocked=True, limit=5)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import orjson
from aiohttp import web

from .feed import Hub
from .queries import STATUSES, Filters, get_trace, list_traces
from .store import Store

__all__ = ("MAX_LIMIT", "BadRequest", "filters_of", "routes")

#: Most summaries one ``GET /api/traces`` answers.
MAX_LIMIT = 1000
_PARAMETERS = frozenset({"service", "name", "status", "min_duration_ms", "blocked", "limit"})
_HEX = frozenset("0123456789abcdef")


class BadRequest(ValueError):
    """A query parameter the API does not take, or a bad value."""


def filters_of(query: Mapping[str, str]) -> Filters:
    """The :class:`~flowtracker.serve.queries.Filters` of a query string.

    Raises:
        BadRequest: the message names the parameter and what it takes.
    """
    unknown = sorted(set(query) - _PARAMETERS)
    if unknown:
        raise BadRequest(
            f"unknown parameter {unknown[0]!r}; /api/traces takes {', '.join(sorted(_PARAMETERS))}"
        )
    status = query.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    minimum = None
    if query.get("min_duration_ms"):
        try:
            minimum = float(query["min_duration_ms"])
        except ValueError:
            minimum = -1.0
        if not math.isfinite(minimum) or minimum < 0:
            raise BadRequest(
                f"min_duration_ms must be a number of milliseconds, not {query['min_duration_ms']!r}"
            )
    blocked = query.get("blocked", "false").lower()
    if blocked not in ("true", "false", "1", "0", ""):
        raise BadRequest(f"blocked must be true or false, not {query['blocked']!r}")
    limit = 100
    if query.get("limit"):
        text = query["limit"]
        if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
            raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {text!r}")
        limit = int(text)
    return Filters(
        service=query.get("service") or None,
        name=query.get("name") or None,
        status=status,
        min_duration_ms=minimum,
        blocked=blocked in ("true", "1"),
        limit=limit,
    )


def routes(store: Store, hub: Hub) -> list[web.RouteDef]:
    """The API's routes, for an aiohttp application."""

    async def traces(request: web.Request) -> web.Response:
        try:
            filters = filters_of(request.query)
        except BadRequest as error:
            return _json({"error": str(error)}, 400)
        return _json({"traces": await store.query(list_traces, filters)})

    async def trace(request: web.Request) -> web.Response:
        trace_id = request.match_info["trace_id"].lower()
        if len(trace_id) != 32 or not _HEX.issuperset(trace_id):
            return _json(
                {"error": f"{request.match_info['trace_id'][:64]!r} is not a trace id (32 hex digits)"}, 400
            )
        body = await store.query(get_trace, trace_id)
        if body is None:
            return _json({"error": f"no trace {trace_id} in the store"}, 404)
        return web.Response(body=body, content_type="application/json")

    async def live(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        subscription = hub.subscribe()
        try:
            async for chunk in subscription.events():
                await response.write(chunk)
        except (ConnectionResetError, ConnectionError):
            pass  # the page went away
        finally:
            hub.unsubscribe(subscription)
        return response

    return [
        web.get("/api/traces", traces),
        web.get("/api/traces/{trace_id}", trace),
        web.get("/api/live", live),
    ]


def _json(value: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(value), status=status, content_type="application/json")
