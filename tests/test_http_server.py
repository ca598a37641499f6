"""The HTTP-server layer both middlewares share: root names per route, the root's tags and context."""

from __future__ import annotations

import logging
from typing import Any

import flowtracker as ft
from flowtracker.integrations.http_server import RequestRoots, build_options, end_request_span
from flowtracker.propagation import parse_traceparent

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


class TestRootNames:
    def test_a_route_is_named_once_and_remembered_under_its_key(self):
        """`name` formats `<METHOD> <route>` on a miss and keeps it in `known` under the
        caller's key, so the next request with that key costs one dict lookup."""
        roots = RequestRoots(build_options(), tracker=None)
        key = ("GET", object())  # aiohttp's key: the method and the matched route object
        assert roots.name(key, "GET", "/orders/{id}", None) == ("GET /orders/{id}", "/orders/{id}")
        assert roots.known[key] == ("GET /orders/{id}", "/orders/{id}")

    def test_a_miss_looks_again_under_the_key_given(self):
        """A caller that misses on one key may pass another for the same route (aiohttp's
        unmatched requests pass `(method, None)`): an entry already there is returned as it
        is, not formatted again."""
        roots = RequestRoots(build_options(unmatched_route="*"), tracker=None)
        first = roots.name(("GET", None), "GET", None, None)
        assert first == ("GET *", None)
        assert roots.name(("GET", None), "GET", None, None) is first
        assert list(roots.known) == [("GET", None)]

    def test_at_most_limit_keys_are_kept_and_later_ones_are_still_named(self):
        """Past `LIMIT` keys (4096, a guard against unbounded methods or routes) nothing more
        is remembered, and every request is still named correctly, made per request."""
        roots = RequestRoots(build_options(), tracker=None)
        for index in range(RequestRoots.LIMIT + 10):
            assert roots.name(("GET", f"/r{index}"), "GET", f"/r{index}", None)[0] == f"GET /r{index}"
        assert len(roots.known) == RequestRoots.LIMIT
        assert ("GET", f"/r{RequestRoots.LIMIT}") not in roots.known
        assert roots.name(("PUT", "/late"), "PUT", "/late", None) == ("PUT /late", "/late")

    def test_a_span_name_callback_sees_every_request_and_nothing_is_remembered(self):
        """With a `span_name` callback, names may depend on the request: the callback runs on
        every call, with that request, and `known` stays empty."""
        seen: list[Any] = []

        def namer(method: str, route: str, request: Any) -> str:
            seen.append(request)
            return f"{method} {route} #{request}"

        roots = RequestRoots(build_options(span_name=namer), tracker=None)
        assert roots.name(("GET", "/a"), "GET", "/a", 1)[0] == "GET /a #1"
        assert roots.name(("GET", "/a"), "GET", "/a", 2)[0] == "GET /a #2"
        assert roots.name(("GET", None), "GET", None, 3)[0] == "GET <unmatched> #3"
        assert seen == [1, 2, 3]
        assert roots.known == {}


class TestRootStart:
    async def test_tags_recorded_headers_and_callback_in_order(self, tracker, memory, caplog):
        """`start` tags method, route, target, then the recorded headers (credentials
        redacted) and the `request_tags` callback's items; a raising callback is logged
        and its tags left out, never failing the request."""

        def extra(request: Any) -> dict[str, Any] | None:
            if request == "bad":
                raise KeyError("oops")
            return {"tenant": request}

        options = build_options(record_headers=["User-Agent", "Authorization"], request_tags=extra)
        roots = RequestRoots(options, tracker)
        headers = {"user-agent": "curl", "authorization": "Bearer secret"}
        root = roots.start("GET /a", "GET", "/a", "/a", headers, "acme", None)
        assert list(root.tags) == [
            "http.method", "http.route", "http.target",
            "http.request.header.user-agent", "http.request.header.authorization", "tenant",
        ]
        assert root.tags["http.request.header.authorization"] == "[REDACTED]"
        assert root.tags["tenant"] == "acme"
        with caplog.at_level(logging.ERROR, logger="flowtracker"):
            other = roots.start("GET <unmatched>", "GET", None, "/b", {}, "bad", None)
        assert "http.route" not in other.tags
        assert "tenant" not in other.tags
        assert any("request_tags callback raised" in r.getMessage() for r in caplog.records)
        end_request_span(root, 200, None, False)
        end_request_span(other, 404, None, False)
        await tracker.flush()
        assert {t["spans"][0]["name"] for t in memory.traces} == {"GET /a", "GET <unmatched>"}

    async def test_continues_the_incoming_context_or_starts_a_new_trace(self, tracker, memory):
        """With an incoming context the root joins the caller's trace under its parent;
        without one it starts a new trace. Either way it is a `server` root, not current."""
        roots = RequestRoots(build_options(), tracker)
        context = parse_traceparent(f"00-{TRACE}-{PARENT}-01")
        continued = roots.start("GET /a", "GET", "/a", "/a", {}, None, context)
        fresh = roots.start("GET /a", "GET", "/a", "/a", {}, None, None)
        assert ft.current_span() is None
        assert continued.trace_id == TRACE
        assert continued.parent_id == int(PARENT, 16)
        assert fresh.trace_id != TRACE
        assert fresh.parent_id is None
        assert continued.kind == fresh.kind == "server"
        end_request_span(continued, 200, None, False)
        end_request_span(fresh, 503, None, False)
        await tracker.flush()
        statuses = sorted(t["spans"][0]["status"] for t in memory.traces)
        assert statuses == ["error", "ok"]
