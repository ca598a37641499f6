"""The live page of ``flowtracker serve`` in a real headless Chromium (Debian's, driven by Playwright).

The server is the real command, a subprocess on a port the OS picked with a
store of its own. Traces reach it over OTLP after the page loaded: from
flowtracker's own OTLP exporter (the loop monitor on where a block is
wanted), from the OpenTelemetry SDK (two services joined in one trace), and
as OTLP bodies in two requests (late spans). The page is the report's own
renderer fed by the API and the live feed: the tests assert what it draws
(list rows, waterfall bars, the block's outline, the tree, the stack in the
details, the statistics), what it asks the server (the filters go to
``GET /api/traces``), that it never reloads, that it loads nothing from
elsewhere and that no text from a trace ever runs as HTML.

Never ``playwright install``: the browser is the distribution's chromium.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from redis_server import redis_url  # noqa: F401  (the session's Redis)
from serve_helpers import ServeProcess, post, protobuf_body, wire_span
from test_report_browser import ARTIFACTS, Opened, browser, expect  # noqa: F401  (browser: the fixture)
from test_shop import exercise
from web_helpers import fetch

import flowtracker as ft
from flowtracker.exporters.otlp import OTLPExporter
from flowtracker.serve.page import LIST_LIMIT
from tests.postgres_server import PostgresServer, postgres  # noqa: F401  (the session's PostgreSQL)

pytestmark = pytest.mark.browser

_T = TypeVar("_T")
HOSTILE = '<img src=x onerror="window.__pwned = 1">'


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """``flowtracker serve`` for the module: HTTP only, a free port, its own store."""
    store = tmp_path_factory.mktemp("serve") / "store.db"
    process = ServeProcess("--port", "0", "--no-grpc", "--db", str(store)).start()
    try:
        yield process
    finally:
        process.stop()


@dataclass
class LivePage(Opened):
    """The live page in a tab, and everything it tried to do (requests, errors, dialogs)."""

    def bar_count(self) -> Any:
        """The waterfall's bars (SVG paths with the bar outline colour), for polling assertions."""
        stroke = self.page.get_attribute("#gantt", "data-bar-stroke")
        return self.page.locator(f'#gantt path[stroke="{stroke}"]')

    def open_trace(self, trace_id: str, spans: int) -> None:
        """Clicks the trace in the list and waits until its waterfall has ``spans`` bars."""
        self.listed(trace_id).click()
        expect(
            self.page.locator(f'#trace-view[data-trace-id="{trace_id}"]:not([data-loading])')
        ).to_have_count(1)
        expect(self.bar_count()).to_have_count(spans)

    def api_requests(self, path: str = "/api/traces?") -> list[str]:
        """The page's requests to ``path`` (the query strings included)."""
        return [url for url in self.requests if url.startswith(self.url.rstrip("/") + path)]

    def assert_clean(self) -> None:
        """No error, no dialog, and no request to anything but this server."""
        assert self.errors == []
        assert self.dialogs == []
        assert all(url.startswith(self.url) for url in self.requests), self.requests


@pytest.fixture
def live(browser: Any, serve: ServeProcess) -> Iterator[LivePage]:  # noqa: F811
    """The page, loaded, its list fetched and its live feed connected."""
    opened = open_live(browser, f"http://127.0.0.1:{serve.port}/")
    try:
        yield opened
    finally:
        opened.page.close()


def open_live(browser: Any, url: str) -> LivePage:  # noqa: F811
    page = browser.new_page()
    opened = LivePage(page, url)
    page.on("console", lambda message: message.type == "error" and opened.errors.append(message.text))
    page.on("pageerror", lambda error: opened.errors.append(str(error)))
    page.on("request", lambda request: opened.requests.append(request.url))
    page.on("dialog", lambda dialog: (opened.dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(url)
    page.wait_for_selector("body[data-ready]", timeout=30_000)
    assert page.get_attribute("body", "data-ready") == "true", page.text_content("#fatal")
    expect(page.locator("#summary")).to_contain_text("· live")  # the feed is connected
    expect(page.locator("#match-count")).not_to_be_empty()  # the first list is drawn
    return opened


def in_thread(coroutine: Awaitable[_T]) -> _T:
    """Runs ``coroutine`` on its own loop in another thread (Playwright's sync API owns this one)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result(timeout=60)  # type: ignore[arg-type]


#: Work that records traces, adding the ids of the traces it started to the list it is given.
Work = Callable[[list[str]], Awaitable[None]]


def record(port: int, service: str, *works: Work, monitor: bool = False) -> list[str]:
    """Runs ``works`` with a tracker whose exporter is flowtracker's OTLP exporter to the server (and
    the loop monitor on, when ``monitor``); returns their trace ids once the server acknowledged them."""

    async def run() -> list[str]:
        ids: list[str] = []
        async with contextlib.AsyncExitStack() as stack:
            if monitor:
                await stack.enter_async_context(ft.monitor_event_loop(0.05))
            exporter = OTLPExporter(f"http://127.0.0.1:{port}/v1/traces")
            tracker = await stack.enter_async_context(ft.Tracker(exporters=[exporter], service=service))
            for work in works:
                await work(ids)
            await tracker.flush()
            assert tracker.stats.exporters["otlp"].exported == len(ids)
        return ids

    return in_thread(run())


def root(name: str, *, seconds: float = 0.0, fail: bool = False, block: float = 0.0,
         children: tuple[str, ...] = ()) -> Work:  # fmt: skip
    """Work that records one trace: a root span ``name`` lasting ``seconds``, with ``children``, a
    ``render_pdf`` child whose ``time.sleep(block)`` holds the loop, and an error when ``fail``."""

    async def work(ids: list[str]) -> None:
        try:
            async with ft.span(name):
                ids.append(str(ft.current_trace_id()))
                for child in children:
                    async with ft.span(child):
                        await asyncio.sleep(0)
                if block:
                    with ft.span("render_pdf"):
                        time.sleep(block)  # noqa: ASYNC251 - holds the loop on purpose
                await asyncio.sleep(seconds)
                if fail:
                    raise LookupError("no such order")
        except LookupError:
            pass

    return work


class TestLive:
    """Traces arrive on the page while it is open: no reload, within a second."""

    def test_a_trace_sent_after_load_appears_without_reload_and_opens(
        self, live: LivePage, serve: ServeProcess
    ) -> None:
        """A trace exported over OTLP by flowtracker after the page loaded is listed within a second
        of the server's acknowledgement, through the live feed: the page neither reloads (a mark
        left on its window stays) nor asks for the list again. Clicking it opens its waterfall (one
        bar per span), its tree and, after a hover, its details."""
        page = live.page
        page.evaluate("window.__mark = 'before'")
        listed_before = len(live.api_requests())
        [trace_id] = record(
            serve.port, "shop", root("POST /checkout", children=("charge card", "send receipt"))
        )
        sent = time.monotonic()
        page.wait_for_selector(f'#trace-list button[data-trace-id="{trace_id}"]', timeout=10_000)
        assert time.monotonic() - sent < 1.0
        assert page.evaluate("window.__mark") == "before"
        assert len(live.api_requests()) == listed_before
        expect(live.listed(trace_id)).to_contain_text("3 spans")
        live.open_trace(trace_id, 3)
        assert page.text_content("#trace-title") == "POST /checkout"
        labels = page.eval_on_selector_all("#tree .label", "nodes => nodes.map(node => node.textContent)")
        assert labels == ["POST /checkout", "charge card", "send receipt"]
        page.hover('#tree .node:has(.label:text-is("charge card"))')
        expect(page.locator("#details .name")).to_have_text("charge card")
        live.assert_clean()

    def test_late_spans_update_the_open_trace(self, live: LivePage, serve: ServeProcess) -> None:
        """A trace whose spans come in two OTLP requests: the open trace gets the late span without a
        click (a third bar, a third tree node, the list row's count), the span whose details were
        shown stays shown, and a new trace arriving meanwhile is listed while the open one stays."""
        page = live.page
        trace_id = uuid.uuid4().hex
        first = [wire_span("a" * 16, "GET /orders", ms=40.0), wire_span("b" * 16, "SELECT", "a" * 16, ms=5.0)]
        in_thread(
            post(serve.port, protobuf_body([{"trace_id": trace_id, "service": "late", "spans": first}]))
        )
        page.wait_for_selector(f'#trace-list button[data-trace-id="{trace_id}"]')
        live.open_trace(trace_id, 2)
        page.click('#tree .node:has(.label:text-is("SELECT"))')
        page.mouse.move(0, 0)  # away: the details follow the pointer over the tree
        later = [wire_span("c" * 16, "late child", "a" * 16, start_us=10_000, ms=20.0)]
        in_thread(
            post(serve.port, protobuf_body([{"trace_id": trace_id, "service": "late", "spans": later}]))
        )
        expect(live.bar_count()).to_have_count(3)
        expect(page.locator('#tree .label:text-is("late child")')).to_have_count(1)
        expect(live.listed(trace_id)).to_contain_text("3 spans")
        expect(page.locator("#details .name")).to_have_text("SELECT")
        [other] = record(serve.port, "shop", root("GET /health"))
        page.wait_for_selector(f'#trace-list button[data-trace-id="{other}"]')
        assert page.get_attribute("#trace-view", "data-trace-id") == trace_id
        assert page.text_content("#trace-title") == "GET /orders"
        live.assert_clean()

    def test_spans_of_several_services_show_their_service(self, live: LivePage, serve: ServeProcess) -> None:
        """Two OpenTelemetry SDK services, each with its own OTLP/HTTP exporter, make one trace: the list
        names both, the trace's summary too, and the span of the second service is marked with it in
        the tree and in its details."""
        url = f"http://127.0.0.1:{serve.port}/v1/traces"
        providers = []
        for service in ("storefront", "inventory"):
            provider = TracerProvider(resource=Resource({"service.name": service}))
            provider.add_span_processor(SimpleSpanProcessor(HttpSpanExporter(url)))
            providers.append(provider)
        front, back = (provider.get_tracer("test") for provider in providers)
        with front.start_as_current_span("GET /cart") as span, back.start_as_current_span("reserve stock"):
            pass
        for provider in providers:
            provider.shutdown()
        trace_id = f"{span.get_span_context().trace_id:032x}"
        page = live.page
        page.wait_for_selector(f'#trace-list button[data-trace-id="{trace_id}"]')
        expect(live.listed(trace_id)).to_contain_text("storefront + inventory")
        live.open_trace(trace_id, 2)
        expect(page.locator("#trace-meta")).to_contain_text("services storefront, inventory")
        chip = page.locator('#tree .node:has(.label:text-is("reserve stock")) .service')
        expect(chip).to_have_text("inventory")
        assert page.locator('#tree .node:has(.label:text-is("GET /cart")) .service').count() == 0
        page.hover('#tree .node:has(.label:text-is("reserve stock"))')
        expect(page.locator('#details dt:text-is("service") + dd')).to_have_text("inventory")
        live.assert_clean()


class TestLoopInsight:
    """What the loop monitor recorded, live: the busy share, the block, its stack, the statistics."""

    def test_blocked_span_is_outlined_with_its_stack(self, live: LivePage, serve: ServeProcess) -> None:
        """A request recorded with the loop monitor on, whose ``render_pdf`` span held the loop: the list
        row says it blocked the loop; its waterfall shades each bar's busy share and outlines the
        block; the tree badges the span; its details show the stack with this file's line first;
        the statistics count the block."""
        work = root("GET /reports/{id}", block=0.12, children=("SELECT orders",))
        [trace_id] = record(serve.port, "reports", work, monitor=True)
        page = live.page
        page.wait_for_selector(f'#trace-list button[data-trace-id="{trace_id}"]')
        expect(live.listed(trace_id)).to_contain_text("⚠ blocked the loop")
        live.open_trace(trace_id, 3)
        busy = page.get_attribute("#gantt", "data-busy-fill")
        outline = page.get_attribute("#gantt", "data-block-stroke")
        expect(page.locator(f'#gantt path[fill="{busy}"]')).to_have_count(3)
        expect(page.locator(f'#gantt path[stroke="{outline}"]')).to_have_count(1)
        expect(page.locator("#trace-meta")).to_contain_text("⚠ 1 loop block")
        badge = page.locator('#tree .node:has(.label:text-is("render_pdf")) .badge.b-blocked')
        expect(badge).to_contain_text("⚠ blocked the loop")
        page.hover('#tree .node:has(.label:text-is("render_pdf"))')
        expect(page.locator("#details .stack .frame.first")).to_contain_text("test_serve_page.py")
        expect(page.locator("#details .stack .frame.first")).to_contain_text("in work")
        row = page.locator('#stats tr:has(td:first-child:text-is("render_pdf"))')
        expect(row.locator("td.blocked")).to_have_text("1")
        live.assert_clean()


class TestFilters:
    """The picker's filters go to ``GET /api/traces`` and apply to the traces that arrive next."""

    def test_each_filter_and_the_traces_that_arrive_after(self, live: LivePage, serve: ServeProcess) -> None:
        """Service, name, status, minimum duration and "blocked the loop", each sent to the server as
        ``GET /api/traces``' parameter and each narrowing the list; with filters set, a new trace
        that matches them is listed and one that does not is not."""
        page = live.page
        buttons = page.locator("#trace-list button")
        works = [root("GET /alpha"), root("GET /beta", fail=True), root("GET /alpha/slow", seconds=0.15),
                 root("GET /gamma", block=0.12)]  # fmt: skip
        ids = record(serve.port, "filters", *works, monitor=True)
        record(serve.port, "elsewhere", root("GET /alpha"))
        expect(page.locator('#service-filter option[value="filters"]')).to_have_count(1)
        page.select_option("#service-filter", "filters")
        expect(buttons).to_have_count(4)
        self.assert_asked(live, "service=filters")
        page.fill("#search", "alpha")
        expect(buttons).to_have_count(2)
        self.assert_asked(live, "name=alpha&service=filters")
        page.fill("#min-duration", "100")
        expect(buttons).to_have_count(1)
        assert page.get_attribute("#trace-list button", "data-trace-id") == ids[2]
        self.assert_asked(live, "name=alpha&service=filters&min_duration_ms=100")
        page.fill("#min-duration", "")
        page.fill("#search", "")
        page.select_option("#status-filter", "error")
        expect(buttons).to_have_count(1)
        assert page.get_attribute("#trace-list button", "data-trace-id") == ids[1]
        self.assert_asked(live, "service=filters&status=error")
        page.select_option("#status-filter", "")
        page.check("#blocked-filter")
        expect(buttons).to_have_count(1)
        assert page.get_attribute("#trace-list button", "data-trace-id") == ids[3]
        self.assert_asked(live, "service=filters&blocked=true")
        page.uncheck("#blocked-filter")
        page.fill("#search", "alpha")
        expect(buttons).to_have_count(2)
        [other] = record(serve.port, "filters", root("GET /delta"))
        [new] = record(serve.port, "filters", root("GET /alpha/new"))
        expect(buttons).to_have_count(3)
        assert page.locator(f'#trace-list button[data-trace-id="{new}"]').count() == 1
        assert page.locator(f'#trace-list button[data-trace-id="{other}"]').count() == 0
        live.assert_clean()

    @staticmethod
    def assert_asked(live: LivePage, query: str) -> None:
        """The page asked ``GET /api/traces?<query>&limit=…`` (polled: the request follows the input)."""
        wanted = f"{live.url}api/traces?{query}&limit={LIST_LIMIT}"
        for _ in range(100):
            if wanted in live.requests:
                return
            live.page.wait_for_timeout(50)
        raise AssertionError(f"{wanted} not in {live.api_requests()}")


class TestSafety:
    """Text from traces is text; the page runs only its own scripts and talks only to its server."""

    def test_hostile_names_tags_and_services_are_text(self, live: LivePage, serve: ServeProcess) -> None:
        """A span named ``<img src=x onerror=…>``, with a ``<script>`` tag value, from a service named
        like markup, shows those characters in the list, the title, the tree, the details and the
        statistics; no element is made of them and nothing in them runs (the window flag they would
        set stays unset)."""

        async def work(ids: list[str]) -> None:
            async with ft.span(HOSTILE, note="<script>window.__pwned = 2</script>"):
                ids.append(str(ft.current_trace_id()))
                async with ft.span("<b onmouseover=window.__pwned=3>child</b>"):
                    pass

        [trace_id] = record(serve.port, "<svg onload=window.__pwned=4>", work)
        page = live.page
        page.wait_for_selector(f'#trace-list button[data-trace-id="{trace_id}"]')
        expect(live.listed(trace_id).locator(".name")).to_have_text(HOSTILE)
        live.open_trace(trace_id, 2)
        assert page.text_content("#trace-title") == HOSTILE
        expect(page.locator("#trace-meta")).to_contain_text("service <svg onload=window.__pwned=4>")
        page.hover("#tree .node >> nth=0")
        expect(page.locator("#details .name")).to_have_text(HOSTILE)
        expect(page.locator('#details dt:text-is("note") + dd')).to_have_text(
            "<script>window.__pwned = 2</script>"
        )
        page.hover("#tree .node >> nth=1")
        expect(page.locator("#details .name")).to_have_text("<b onmouseover=window.__pwned=3>child</b>")
        expect(page.locator("#stats").get_by_text(HOSTILE, exact=True)).to_have_count(1)
        assert page.locator("img, b").count() == 0
        assert page.evaluate("document.querySelectorAll('[onerror], [onload], [onmouseover]').length") == 0
        assert page.evaluate("typeof window.__pwned") == "undefined"
        live.assert_clean()

    def test_only_its_own_scripts_run_and_nothing_else_is_loaded(
        self, live: LivePage, serve: ServeProcess
    ) -> None:
        """The page's Content-Security-Policy header lets scripts run only by the hashes of the page's
        own (the charts, which load by hash too, are drawn), connects only to its server and
        allows no other origin; an inline script put in the page later is refused; every request the
        page made went to its server."""
        status, headers, body = in_thread(fetch(f"http://127.0.0.1:{serve.port}/"))
        assert status == 200
        policy = headers["Content-Security-Policy"]
        directives = dict(item.split(" ", 1) for item in policy.split("; "))
        assert directives["default-src"] == "'none'"
        assert directives["connect-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        scripts = re.findall(rb"<script>(.*?)</script>", body, re.DOTALL)
        assert len(scripts) == 1
        digest = base64.b64encode(hashlib.sha256(scripts[0]).digest()).decode()
        assert f"'sha256-{digest}'" in directives["script-src"].split()
        assert "'unsafe-inline'" not in directives["script-src"]
        record(serve.port, "csp", root("GET /csp", children=("child",)))
        page = live.page
        expect(page.locator("#sankey path").first).to_be_attached()  # the charts ran
        page.evaluate(
            """() => { const s = document.createElement('script');
                       s.textContent = 'window.__injected = 1'; document.body.append(s); }"""
        )
        assert page.evaluate("typeof window.__injected") == "undefined"
        assert any("Content Security Policy" in error for error in live.errors), live.errors
        live.errors.clear()
        live.assert_clean()


class TestManyTraces:
    """The page asks for a page of the list, never the whole store."""

    def test_the_list_is_the_newest_page_of_the_store(self, browser: Any, tmp_path: Path) -> None:  # noqa: F811
        """With 1,000 traces stored the page asks ``GET /api/traces`` for the newest :data:`LIST_LIMIT`,
        lists them newest first and nothing older, and a trace that arrives then comes first."""
        traces = [
            {"trace_id": f"{number + 1:032x}", "service": "bulk",  # a millisecond apart
             "spans": [wire_span(f"{number + 1:016x}", f"GET /item/{number}", start_us=number * 1000)]}
            for number in range(1000)
        ]  # fmt: skip
        process = ServeProcess("--port", "0", "--no-grpc", "--db", str(tmp_path / "store.db")).start()
        try:
            assert in_thread(post(process.port, protobuf_body(traces)))[0] == 200
            live = open_live(browser, f"http://127.0.0.1:{process.port}/")
            page = live.page
            buttons = page.locator("#trace-list button")
            expect(buttons).to_have_count(LIST_LIMIT)
            assert live.api_requests() == [f"{live.url}api/traces?limit={LIST_LIMIT}"]
            names = page.eval_on_selector_all(
                "#trace-list .name", "nodes => nodes.map(node => node.textContent)"
            )
            assert names == [f"GET /item/{number}" for number in range(999, 999 - LIST_LIMIT, -1)]
            newest = {"trace_id": "f" * 32, "service": "bulk",
                      "spans": [wire_span("f" * 16, "GET /newest", start_us=2_000_000)]}  # fmt: skip
            in_thread(post(process.port, protobuf_body([newest])))
            expect(page.locator("#trace-list .name").first).to_have_text("GET /newest")
            expect(buttons).to_have_count(LIST_LIMIT)
            live.assert_clean()
            page.close()
        finally:
            process.stop()


@pytest.mark.slow
class TestScreenshot:
    """The README's picture: the example shop and its inventory service, watched live."""

    def test_the_shop_live_with_its_blocked_request(
        self,
        browser: Any,  # noqa: F811
        postgres: PostgresServer,  # noqa: F811
        redis_url: str,  # noqa: F811
        tmp_path: Path,
    ) -> None:
        """examples/shop (the aiohttp shop and the inventory service, on real PostgreSQL and Redis)
        exports over OTLP to a fresh ``flowtracker serve`` while the page is open: its four traces
        arrive, a product request joins both services, and ``GET /report`` shows ``build_report``
        blocking the loop, its details naming the line in catalog.py. The page, that trace open,
        goes to test-artifacts/serve.png (the README's docs/serve.png is a copy)."""
        process = ServeProcess("--port", "0", "--no-grpc", "--db", str(tmp_path / "store.db")).start()
        try:
            live = open_live(browser, f"http://127.0.0.1:{process.port}/")
            page = live.page
            page.set_viewport_size({"width": 1400, "height": 900})
            also_to = f"otlp+http://127.0.0.1:{process.port}"
            in_thread(exercise("aiohttp", postgres, redis_url, tmp_path, also_to))
            expect(page.locator("#trace-list button")).to_have_count(4)
            products = page.locator('#trace-list button:has(.name:text-is("GET /products/{product_id}"))')
            expect(products.first).to_contain_text("shop + inventory")
            report = page.locator('#trace-list button:has(.name:text-is("GET /report"))')
            expect(report).to_contain_text("⚠ blocked the loop")
            trace_id = str(report.get_attribute("data-trace-id"))
            live.open_trace(trace_id, int(report.locator(".sub").inner_text().split(" · ")[2].split()[0]))
            page.hover('#tree .node:has(.label:text-is("build_report"))')
            first = page.locator("#details .stack .frame.first")
            expect(first).to_contain_text("catalog.py")
            expect(first).to_contain_text("in build_report")
            outline = page.get_attribute("#gantt", "data-block-stroke")
            expect(page.locator(f'#gantt path[stroke="{outline}"]')).to_have_count(1)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "serve.png"))
            live.assert_clean()
            page.close()
        finally:
            process.stop()
