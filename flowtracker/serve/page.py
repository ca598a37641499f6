"""``GET /``: the live page, the report's own views fed by this server.

The page is :func:`flowtracker.viz.report_page` without data (the views of
``flowtracker report``: trace list, waterfall, execution tree, details with
the stack, "where time goes", span statistics), plus ``assets/live.js``,
which feeds the report's renderer:

* the list from ``GET /api/traces`` with the picker's filters (the newest
  :data:`LIST_LIMIT`), then every trace of the live feed (``GET /api/live``)
  that passes them, without a reload;
* a picked trace from ``GET /page/traces/{trace_id}``: the trace as the
  report's rows (:func:`flowtracker.viz.report_data`), loaded again when the
  feed says late spans joined it;
* "where time goes" and the statistics from ``GET /page/aggregates`` (the
  filters of ``GET /api/traces``): :func:`flowtracker.viz.report_aggregates`
  over the newest matching traces, at most :data:`AGGREGATE_SPANS` spans.

The two ``/page/`` routes serve this page only; the API is the contract.
The work runs on the store's reader threads, never on the event loop.

Safety: everything from the traces reaches the screen as text (the
renderer's rule). The page loads nothing but itself and this server's API:
its Content-Security-Policy header allows no other origin, and scripts only
by the hashes of the page's own (an injected inline script or event handler
would not run, even if some text ever reached the page as HTML).

Example:
    >>> body, policy = page_body()
    >>> body.startswith(b"<!doctype html>"), "connect-src 'self'" in policy
    (True, True)
    >>> policy.split("; ")[1].startswith("script-src 'sha256-"), policy.count("'sha256-")
    (True, 2)
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from .._core.version import package_version
from .._graph.model import STATUSES
from .._wire.encode import encode
from ..viz import report_aggregates, report_data, report_page
from .api import BadRequest, filters_of
from .queries import Filters, list_traces, read_trace
from .store import Store

__all__ = ("AGGREGATE_SPANS", "LIST_LIMIT", "page_body", "page_routes")

#: Traces the page lists (the newest that match its filters; the report's list shows as many).
LIST_LIMIT = 300
#: Most spans "where time goes" and the statistics read (the newest matching traces first).
AGGREGATE_SPANS = 50_000

_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


@cache
def page_body() -> tuple[bytes, str]:
    """The page, and the Content-Security-Policy header that goes with it (made once)."""
    settings = {"limit": LIST_LIMIT, "statuses": list(STATUSES), "flowtracker": package_version()}
    script = "window.flowtrackerServe = " + orjson.dumps(settings).decode() + ";\n" + _live_script()
    body = report_page(None, title="flowtracker serve", script=script, connect_src="'self'").encode()
    # The page's inline script, and the charting library it inserts as one (the same text).
    library = (resources.files("flowtracker.viz") / "assets" / "echarts.min.js").read_bytes()
    hashes = " ".join(_hash(text) for text in [*_SCRIPT.findall(body), library])
    policy = (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; img-src data: blob:; "
        "font-src data:; connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    )
    return body, policy


def page_routes(store: Store) -> list[web.RouteDef]:
    """``GET /`` and the two routes that feed it, for an aiohttp application."""

    async def page(request: web.Request) -> web.Response:
        body, policy = page_body()
        return web.Response(
            body=body,
            content_type="text/html",
            charset="utf-8",
            headers={
                "Content-Security-Policy": policy,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-cache",
            },
        )

    async def trace(request: web.Request) -> web.Response:
        body = await store.query(_trace_rows, request.match_info["trace_id"])
        if body is None:
            return _json({"error": "no such trace in the store"}, 404)
        return web.Response(body=body, content_type="application/json")

    async def aggregates(request: web.Request) -> web.Response:
        try:
            filters = filters_of(request.query)
        except BadRequest as error:
            return _json({"error": str(error)}, 400)
        return web.Response(body=await store.query(_aggregates, filters), content_type="application/json")

    return [
        web.get("/", page),
        web.get("/page/traces/{trace_id:[0-9a-f]{32}}", trace),
        web.get("/page/aggregates", aggregates),
    ]


def _trace_rows(connection: Any, trace_id: str) -> bytes | None:
    """One trace as the report's data (its summary and its span rows), or ``None``."""
    trace = read_trace(connection, trace_id)
    if trace is None:
        return None
    return encode(report_data([trace]))


def _aggregates(connection: Any, filters: Filters) -> bytes:
    """"Where time goes" and the statistics over the newest traces that match ``filters``
    (at most :data:`AGGREGATE_SPANS` spans; the first trace always), with how many they cover."""
    traces: list[Any] = []
    spans = 0
    for summary in list_traces(connection, filters):
        if traces and spans + summary["span_count"] > AGGREGATE_SPANS:
            break
        trace = read_trace(connection, summary["trace_id"])
        if trace is not None:  # evicted since the list was read
            traces.append(trace)
            spans += len(trace["spans"])
    return encode({**report_aggregates(traces), "traces": len(traces), "spans": spans})


def _hash(text: bytes) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text).digest()).decode("ascii") + "'"


def _live_script() -> str:
    return (resources.files(__package__) / "assets" / "live.js").read_text(encoding="utf-8")


def _json(value: object, status: int) -> web.Response:
    return web.Response(body=orjson.dumps(value), status=status, content_type="application/json")
