"""The HTML report in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

Asserts on the rendered page: one waterfall bar per span of the selected
trace, the Sankey links drawn with each node in the column of its depth, time
axis labels apart, the picker switching traces, search and status filters,
hostile span names shown as text, no console errors and no request other than
the file itself (the page's CSP forbids any, and every request is recorded
here), and what a loop monitor recorded: the busy share of each bar shaded,
the time a span blocked the loop outlined, its stack in the details panel,
both from a hand-written fixture and from a real aiohttp server run with
``monitor_loop`` where one request blocks among stalled ones (its
``flowtracker tree`` text too). Screenshots go to test-artifacts/report.png
(and loop-report.png, real-block-report.png) for people.

The first paint is checked without Playwright, as a preview or a CI job sees
the page: a plain ``chromium --headless --screenshot`` (and ``--dump-dom``),
which captures the page once it has loaded, without waiting for anything the
page does later.

Never ``playwright install``: the browser is the distribution's chromium.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import itertools
import random
import re
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from web_helpers import fetch, serve

import flowtracker as ft
from flowtracker import viz
from flowtracker.aiohttp import setup

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Plain ``chromium --headless`` as a CI job runs it (the flags this machine needs, nothing that waits).
PLAIN_CHROMIUM = [
    CHROMIUM,
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
#: Tall enough that the whole golden report is in the window, so nothing scrolls.
FIRST_PAINT_WINDOW = (1400, 2400)
GOLDEN = Path(__file__).parent / "golden"
ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
XSS = "<img src=x onerror=alert(1)>"


def expect(locator: Any) -> Any:
    """Playwright's polling assertions (imported lazily, like the rest of Playwright)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def loop_traces() -> list[dict[str, Any]]:
    """The golden traces with loop-monitor data (busy_ms, event_loop.blocked events)."""
    return viz.merge_traces(viz.read_traces([GOLDEN / "loop_traces.jsonl"]).traces)


def golden_traces() -> list[dict[str, Any]]:
    """The golden traces, follow-ups merged, as ``flowtracker report`` reads them."""
    return viz.merge_traces(viz.read_traces([GOLDEN / "traces.jsonl"]).traces)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One Chromium with a fresh profile for the module."""
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()


@dataclass
class Opened:
    """A report page and everything it tried to do."""

    page: Any
    url: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def bars(self) -> int:
        """Waterfall bars drawn (SVG paths with the bar outline colour)."""
        stroke = self.page.get_attribute("#gantt", "data-bar-stroke")
        return int(self.page.eval_on_selector_all(f'#gantt path[stroke="{stroke}"]', "nodes => nodes.length"))

    def links(self) -> int:
        """Sankey links drawn (SVG paths with the link opacity)."""
        opacity = self.page.get_attribute("#sankey", "data-link-opacity")
        return int(
            self.page.eval_on_selector_all(f'#sankey path[fill-opacity="{opacity}"]', "nodes => nodes.length")
        )

    def listed(self, trace_id: str) -> Any:
        """The trace's entry in the picker."""
        return self.page.locator(f'#trace-list button[data-trace-id="{trace_id}"]')

    def gantt_labels(self) -> list[str]:
        """The texts of the waterfall (row labels, with their indent, and time-axis labels)."""
        texts = self.page.eval_on_selector_all("#gantt text", "nodes => nodes.map(node => node.textContent)")
        return list(texts)

    def pick(self, trace_id: str) -> None:
        """Clicks the trace in the picker and waits for its view."""
        self.page.click(f'#trace-list button[data-trace-id="{trace_id}"]')
        self.page.wait_for_selector(f'#trace-view[data-trace-id="{trace_id}"]')

    def assert_clean(self) -> None:
        """No console error, no page error, no dialog, no request but the page itself."""
        assert self.errors == []
        assert self.dialogs == []
        assert self.requests == [self.url]


def open_report(browser: Any, path: Path, traces: list[dict[str, Any]], **options: Any) -> Opened:
    """Writes the report for ``traces`` to ``path`` and opens it, recording errors and requests."""
    path.write_text(viz.render_report(traces, **options), encoding="utf-8")
    return open_page(browser, path)


def open_page(browser: Any, path: Path) -> Opened:
    """Opens the page at ``path`` once it is drawn, recording errors, requests and dialogs."""
    page = browser.new_page()
    opened = Opened(page, path.as_uri())
    page.on("console", lambda message: message.type == "error" and opened.errors.append(message.text))
    page.on("pageerror", lambda error: opened.errors.append(str(error)))
    page.on("request", lambda request: opened.requests.append(request.url))
    page.on("dialog", lambda dialog: (opened.dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(opened.url)
    page.wait_for_selector("body[data-ready]", timeout=30_000)
    assert page.get_attribute("body", "data-ready") == "true", page.text_content("#fatal")
    return opened


@pytest.fixture(params=["gzip", "plain"])
def report(request: pytest.FixtureRequest, browser: Any, tmp_path: Path) -> Iterator[Opened]:
    """The golden report, compressed (default) and plain, open in a tab."""
    opened = open_report(browser, tmp_path / "report.html", golden_traces(), compress=request.param == "gzip")
    try:
        yield opened
    finally:
        opened.page.close()


def plain_chromium(path: Path, profile: Path, *action: str) -> bytes:
    """Runs plain headless Chromium on ``path`` with ``action`` (``--dump-dom``, ``--screenshot=…``).

    Returns its stdout (the DOM, for ``--dump-dom``).
    """
    width, height = FIRST_PAINT_WINDOW
    window = [f"--user-data-dir={profile}", f"--window-size={width},{height}"]
    done = subprocess.run(
        [*PLAIN_CHROMIUM, *window, *action, path.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return done.stdout


class Dom(HTMLParser):
    """A serialized DOM, reduced to what the tests ask: text and descendants of each element with an id."""

    VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"})

    def __init__(self, markup: str) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.inside: dict[str, list[tuple[str, dict[str, str]]]] = {}
        self._open: list[str | None] = []
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Records the element under every open element with an id, then opens it."""
        attributes = {name: value or "" for name, value in attrs}
        for element_id in self._ids():
            self.inside[element_id].append((tag, attributes))
        if tag in self.VOID:
            return
        element_id = attributes.get("id")
        if element_id:
            self.text[element_id] = ""
            self.inside[element_id] = []
        self._open.append(element_id)

    def handle_endtag(self, tag: str) -> None:
        """Closes the innermost element (Chromium's serialization closes every non-void element)."""
        if tag not in self.VOID:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        """Adds text to every open element with an id."""
        for element_id in self._ids():
            self.text[element_id] += data

    def count(self, element_id: str, tag: str, css_class: str | None = None) -> int:
        """How many ``tag`` elements (with ``css_class``) are inside the element ``element_id``."""
        return sum(
            1
            for name, attributes in self.inside[element_id]
            if name == tag and (css_class is None or css_class in attributes.get("class", "").split())
        )

    def _ids(self) -> list[str]:
        return [element_id for element_id in self._open if element_id]


#: Share of the pixels in a box that differ visibly between two PNGs (the browser decodes them).
COMPARE_PIXELS = """
async ([first, second, box]) => {
  const pixels = async (url) => {
    const image = new Image();
    image.src = url;
    await image.decode();
    const canvas = document.createElement('canvas');
    canvas.width = image.width;
    canvas.height = image.height;
    const context = canvas.getContext('2d');
    context.drawImage(image, 0, 0);
    return context.getImageData(box.x, box.y, box.width, box.height).data;
  };
  const a = await pixels(first);
  const b = await pixels(second);
  let differ = 0;
  for (let k = 0; k < a.length; k += 4) {
    if (Math.abs(a[k] - b[k]) + Math.abs(a[k + 1] - b[k + 1]) + Math.abs(a[k + 2] - b[k + 2]) > 48) differ++;
  }
  return differ / (a.length / 4);
}
"""


def png_url(path: Path) -> str:
    """A data: URL of a PNG file."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def asset(name: str) -> str:
    """The text of one of the report page's assets."""
    return (resources.files("flowtracker.viz") / "assets" / name).read_text(encoding="utf-8")


def two_span_trace(trace_id: str, duration_ms: float) -> dict[str, Any]:
    """A root of ``duration_ms`` with one child in its first half."""
    return {
        "trace_id": trace_id,
        "spans": [
            {
                "span_id": "a" * 16,
                "name": "root",
                "start_time": "2026-11-20T10:00:00.000000Z",
                "duration_ms": duration_ms,
            },
            {
                "span_id": "b" * 16,
                "parent_id": "a" * 16,
                "name": "child",
                "start_time": "2026-11-20T10:00:00.000000Z",
                "duration_ms": duration_ms / 2,
            },
        ],
    }


def sankey_layout(page: Any) -> dict[str, Any]:
    """The Sankey's column positions and its labels' text and horizontal extent, in page pixels."""
    return dict(
        page.evaluate(
            """() => {
              const box = document.getElementById('sankey');
              const series = echarts.getInstanceByDom(box).getModel().getSeriesByIndex(0);
              const nodes = series.getData();
              const left = box.getBoundingClientRect().left + series.layoutInfo.x;
              const labels = window.flowtrackerReport.data.sankey.nodes;
              const columns = labels.map((_, k) => left + nodes.getItemLayout(k).x);
              const texts = [...box.querySelectorAll('text')].map((text) => {
                const rect = text.getBoundingClientRect();
                return [text.textContent, rect.left, rect.right];
              });
              return {columns: [...new Set(columns)].sort((a, b) => a - b), labels: texts};
            }"""
        )
    )


def assert_labels_fit(layout: dict[str, Any]) -> None:
    """Every label ends before the next column (the golden graph has five)."""
    columns = layout["columns"]
    assert len(columns) == 5
    for text, left, right in layout["labels"]:
        column = max(index for index, x in enumerate(columns) if x <= left)
        if column + 1 < len(columns):
            assert right < columns[column + 1], (text, right, columns)


class TestReportPage:
    """What a person sees and does on the page."""

    def test_one_bar_per_span_of_the_selected_trace(self, report: Opened) -> None:
        """The first (slowest) trace is selected; the waterfall and the tree show each of its spans."""
        traces = {trace["trace_id"]: trace for trace in golden_traces()}
        selected = report.page.get_attribute("#trace-view", "data-trace-id")
        assert selected == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert report.bars() == len(traces[selected]["spans"]) == 6
        assert report.page.locator("#tree .node").count() == 6
        report.assert_clean()

    def test_sankey_links_present(self, report: Opened) -> None:
        """Every aggregated link is drawn, and the node labels are on the chart: the parent → child
        flows, and each root's own flow from its service."""
        expected = viz.sankey_graph(golden_traces(), root_source=lambda trace, root: trace["service"])
        assert report.links() == len(expected["links"]) == 15 + 2  # orders → GET /, orders → POST /checkout
        labels = report.page.eval_on_selector_all(
            "#sankey text", "nodes => nodes.map(node => node.textContent)"
        )
        assert "DB: Select User" in labels
        assert "fib · 2" in labels
        report.assert_clean()

    def test_sankey_nodes_sit_at_their_depth(self, report: Opened) -> None:
        """Each Sankey node is in the column of its depth: the service first, then the roots;
        ``Process Payment``, a child of a root, is beside its siblings, not beside the deepest leaf
        (echarts' layout, read back from the page)."""
        layout = report.page.evaluate(
            """() => {
              const chart = echarts.getInstanceByDom(document.getElementById('sankey'));
              const nodes = chart.getModel().getSeriesByIndex(0).getData();
              return window.flowtrackerReport.data.sankey.nodes.map(
                (label, k) => [label, nodes.getItemLayout(k).depth, nodes.getItemLayout(k).x]);
            }"""
        )
        depth = {label: column for label, column, _ in layout}
        # a trace continuing a remote parent hangs off "Unknown", in the column of the services
        assert depth == {
            "orders": 0,
            "Unknown": 0,
            "GET /": 1,
            "POST /checkout": 1,
            "POST /ship": 1,
            "Process Payment": 2,
            "DB: Select User": 2,
            "HTTP: Shipping Service": 2,
            "send receipt email": 2,
            "fetch rates": 2,
            "fetch prices": 2,
            "charge card": 2,
            "fetch stock": 2,
            "Calculate Weight": 3,
            "fib · 1": 2,
            'say "hi" [1] #tag // not a comment': 2,
            XSS: 2,
            "fib · 2": 3,
            "fib · 3": 4,
        }
        x = {label: left for label, _, left in layout}
        assert x["Process Payment"] == x["DB: Select User"] < x["Calculate Weight"] < x["fib · 3"]
        report.assert_clean()

    def test_sankey_labels_end_before_the_next_column(self, report: Opened) -> None:
        """A node's label is cut (with "…") where the next column's nodes start, so no name runs
        into them, and again when the window narrows."""
        wide = sankey_layout(report.page)
        assert_labels_fit(wide)
        assert any(text.endswith("…") for text, _, _ in wide["labels"])
        report.page.set_viewport_size({"width": 1000, "height": 1000})
        for _ in range(100):  # the page redraws its charts 100 ms after the last resize event
            narrow = sankey_layout(report.page)
            if narrow["columns"] != wide["columns"]:
                break
            report.page.wait_for_timeout(50)
        assert narrow["columns"][-1] < wide["columns"][-1]
        assert_labels_fit(narrow)
        report.assert_clean()

    def test_picker_switches_traces(self, report: Opened) -> None:
        """Clicking another trace redraws the waterfall and tree for it."""
        report.pick("0af7651916cd43dd8448eb211c80319c")
        assert report.page.text_content("#trace-title") == "POST /checkout"
        assert report.bars() == 5
        assert report.page.locator("#tree .badge.b-error").count() == 2
        report.pick("4bf92f3577b34da6a3ce929d0e0e4736")
        assert report.bars() == 6
        report.assert_clean()

    def test_search_and_status_filter(self, report: Opened) -> None:
        """Search matches span names anywhere in a trace; the status filter keeps error traces."""
        buttons = report.page.locator("#trace-list button")
        report.page.fill("#search", "charge")
        expect(buttons).to_have_count(1)  # polls from outside: the page's CSP forbids eval
        assert (
            report.page.get_attribute("#trace-list button", "data-trace-id")
            == "0af7651916cd43dd8448eb211c80319c"
        )
        report.page.fill("#search", "")
        report.page.select_option("#status-filter", "error")
        expect(buttons).to_have_count(1)
        report.page.select_option("#status-filter", "")
        report.page.select_option("#sort", "name")
        names = report.page.eval_on_selector_all(
            "#trace-list .name", "nodes => nodes.map(node => node.textContent)"
        )
        assert names == ["GET /", "POST /checkout", "POST /ship"]
        report.assert_clean()

    def test_service_duration_and_blocked_filters(self, browser: Any, tmp_path: Path) -> None:
        """The picker also filters by service (offered once there are two), by a minimum duration, and
        to the traces that blocked the loop (offered once one did); filters combine."""
        opened = open_report(browser, tmp_path / "filters.html", [*golden_traces(), *loop_traces()])
        page = opened.page
        buttons = page.locator("#trace-list button")
        try:
            total = len(golden_traces()) + len(loop_traces())
            expect(buttons).to_have_count(total)
            options = page.eval_on_selector_all("#service-filter option", "nodes => nodes.map(n => n.value)")
            assert options == ["", "orders", "shipping", "shop"]
            inside = page.evaluate(
                """() => {
                  const right = document.querySelector('.picker').getBoundingClientRect().right;
                  const controls = [...document.querySelectorAll('.picker input, .picker select')];
                  return controls.every((node) => node.getBoundingClientRect().right <= right);
                }"""
            )
            assert inside  # every control fits the picker
            page.select_option("#service-filter", "shipping")
            expect(buttons).to_have_count(1)
            assert page.text_content("#trace-list .name") == "POST /ship"
            page.select_option("#service-filter", "shop")
            expect(buttons).to_have_count(len(loop_traces()))
            page.check("#blocked-filter")
            blocked = [trace for trace in loop_traces() if "⚠ blocked the loop" in viz.tree_text(trace)]
            expect(buttons).to_have_count(len(blocked))
            page.fill("#min-duration", "300")
            slow = [trace for trace in blocked if viz.TraceTree(trace).wall_ms() >= 300]
            expect(buttons).to_have_count(len(slow))
            assert 0 < len(slow) < len(blocked)
            page.select_option("#service-filter", "")
            page.uncheck("#blocked-filter")
            page.fill("#min-duration", "")
            expect(buttons).to_have_count(total)
            opened.assert_clean()
        finally:
            page.close()

    def test_filters_hide_until_they_can_choose(self, browser: Any, tmp_path: Path) -> None:
        """With one service and no block there is nothing to choose: no service or blocked filter."""
        opened = open_report(
            browser, tmp_path / "one.html", [health_trace(), health_trace() | {"trace_id": "d" * 32}]
        )
        try:
            assert not opened.page.locator("#service-field").is_visible()
            assert not opened.page.locator("#blocked-field").is_visible()
            assert opened.page.locator("#min-duration").is_visible()
            opened.assert_clean()
        finally:
            opened.page.close()

    def test_hostile_names_render_as_text(self, report: Opened) -> None:
        """A span named ``<img src=x onerror=alert(1)>`` shows as those characters; nothing runs."""
        report.pick("b7ad6b7169203331a1b2c3d4e5f60718")
        labels = report.page.eval_on_selector_all(
            "#tree .label", "nodes => nodes.map(node => node.textContent)"
        )
        assert XSS in labels
        report.page.hover(f'#tree .node:has(.label:text-is("{XSS}"))')
        assert report.page.text_content("#details .name") == XSS
        assert report.page.evaluate("document.querySelectorAll('img').length") == 0
        stats = report.page.eval_on_selector_all(
            "#stats td:first-child", "nodes => nodes.map(n => n.textContent)"
        )
        assert XSS in stats
        report.assert_clean()

    def test_tooltip_shows_span_details(self, report: Opened) -> None:
        """Hovering a bar shows the span's status, times and tags."""
        stroke = report.page.get_attribute("#gantt", "data-bar-stroke")
        bars = report.page.locator(f'#gantt path[stroke="{stroke}"]')
        bars.nth(1).hover()
        report.page.wait_for_selector("#gantt .tip")
        tip = report.page.text_content("#gantt .tip") or ""
        assert "Process Payment" in tip
        assert "currency" in tip
        assert "USD" in tip
        assert "2026-11-20T10:00:00.001000Z" in tip
        report.assert_clean()

    def test_tree_collapses(self, report: Opened) -> None:
        """Collapsing a span in the tree hides its subtree and shows it again."""
        node = report.page.locator('#tree .node:has(.label:text-is("HTTP: Shipping Service"))')
        node.locator("button.toggle").click()
        assert report.page.locator("#tree .node:not([hidden])").count() == 5
        node.locator("button.toggle").click()
        assert report.page.locator("#tree .node:not([hidden])").count() == 6
        report.assert_clean()


def boxes(page: Any, selector: str) -> list[dict[str, float]]:
    """Page-pixel boxes of the elements ``selector`` matches, top to bottom."""
    found = page.eval_on_selector_all(
        selector,
        """nodes => nodes.map(node => {
             const r = node.getBoundingClientRect();
             return {left: r.left, right: r.right, top: r.top, bottom: r.bottom};
           })""",
    )
    return sorted(found, key=lambda box: (box["top"], box["left"]))


@pytest.fixture
def loop_report(browser: Any, tmp_path: Path) -> Iterator[Opened]:
    """The report of the loop-monitor golden traces, open in a tab."""
    opened = open_report(browser, tmp_path / "loop.html", loop_traces())
    try:
        yield opened
    finally:
        opened.page.close()


class TestLoopMonitor:
    """What a loop monitor recorded, on the page: busy shading, the block, its stack."""

    def test_busy_share_is_shaded_inside_each_bar(self, loop_report: Opened) -> None:
        """Every span with busy_ms gets a darker inner bar, as long as busy_ms / duration_ms of its bar."""
        page = loop_report.page
        assert loop_report.bars() == 3  # the shading and the block outline are not bars
        stroke = page.get_attribute("#gantt", "data-bar-stroke")
        fill = page.get_attribute("#gantt", "data-busy-fill")
        bars = boxes(page, f'#gantt path[stroke="{stroke}"]')
        shaded = boxes(page, f'#gantt path[fill="{fill}"]')
        assert len(shaded) == 3
        spans = [(2.113, 318.4), (0.352, 11.8), (301.874, 302.6)]  # (busy_ms, duration_ms) per row
        for bar, inner, (busy, duration) in zip(bars, shaded, spans, strict=True):
            assert bar["top"] < inner["top"] < inner["bottom"] < bar["bottom"]
            assert inner["left"] == pytest.approx(bar["left"], abs=1)
            expected = max((bar["right"] - bar["left"]) * busy / duration, 1)
            assert inner["right"] - inner["left"] == pytest.approx(expected, abs=1.5)
        loop_report.assert_clean()

    def test_block_is_outlined_at_its_time_and_marked(self, loop_report: Opened) -> None:
        """The block is outlined from its start to its end on the guilty span's row, whose label and
        tree node carry the ⚠ marker; the trace list and the trace's summary say a block happened."""
        page = loop_report.page
        stroke = page.get_attribute("#gantt", "data-bar-stroke")
        root, _, guilty = boxes(page, f'#gantt path[stroke="{stroke}"]')
        (outline,) = boxes(page, f'#gantt path[stroke="{page.get_attribute("#gantt", "data-block-stroke")}"]')
        scale = (root["right"] - root["left"]) / 318.4  # px per ms: the root spans the whole trace
        assert outline["left"] == pytest.approx(root["left"] + 14.1 * scale, abs=2.5)
        assert outline["right"] == pytest.approx(root["left"] + (14.1 + 300.412) * scale, abs=2.5)
        assert outline["top"] <= guilty["top"]
        assert outline["bottom"] >= guilty["bottom"]
        labels = page.eval_on_selector_all(
            "#gantt text", "nodes => nodes.map(node => node.textContent.trim())"
        )
        assert "⚠ render_pdf" in labels
        assert "SELECT orders" in labels
        badge = page.locator('#tree .node:has(.label:text-is("render_pdf")) .badge.b-blocked')
        expect(badge).to_have_text("⚠ blocked the loop 300.4 ms")
        assert page.locator("#tree .b-blocked").count() == 1
        expect(page.locator("#trace-meta")).to_contain_text("⚠ 1 loop block (300.4 ms)")
        expect(
            page.locator('#trace-list button[data-trace-id="9d41f3c07ab24e6f93b8d2c5e1a07f16"]')
        ).not_to_contain_text("⚠")
        loop_report.assert_clean()

    def test_details_panel_shows_busy_time_and_the_stack(self, loop_report: Opened) -> None:
        """Clicking the guilty span shows its busy time, the block and every frame of the stack,
        innermost first, the user's innermost frame set apart and library frames muted."""
        page = loop_report.page
        page.locator('#tree .node:has(.label:text-is("render_pdf"))').click()
        details = page.locator("#details")
        expect(details).to_contain_text("301.9 ms on the event loop (100% of the span)")
        expect(details).to_contain_text(
            "⚠ 300.4 ms from +14.1 ms at /srv/shop/shop/reports.py:41 in render_pdf"
        )
        frames = details.locator(".stack .frame")
        expect(frames).to_have_count(13)
        expect(details.locator(".stack .frame.first")).to_have_text(
            "/srv/shop/shop/reports.py:41 in render_pdf"
        )
        assert details.locator(".stack .frame.own").all_text_contents() == [
            "/srv/shop/shop/views.py:27 in report",
            "/srv/shop/shop/__main__.py:12 in <module>",
        ]
        assert details.locator(".stack .frame.lib").count() == 10
        loop_report.assert_clean()

    def test_tooltip_keeps_the_top_of_the_stack(self, loop_report: Opened) -> None:
        """Hovering the guilty bar shows the block and the stack down to the user's line, not all of it."""
        page = loop_report.page
        loop_report.pick("c3a57e9b04d14e2f8a6b1d0c9e7f5a23")
        stroke = page.get_attribute("#gantt", "data-bar-stroke")
        page.locator(f'#gantt path[stroke="{stroke}"]').nth(1).hover(
            force=True
        )  # the block outline lies over it, same item
        page.wait_for_selector("#gantt .tip")
        tip = page.locator("#gantt .tip")
        expect(tip).to_contain_text("fetch rates")
        assert (
            tip.locator(".stack .frame.first").all_text_contents()
            == ["/srv/shop/shop/rates.py:18 in fetch_rates"] * 2
        )
        assert tip.locator(".stack .frame").count() == 2 * (
            9 + 1
        )  # down to rates.py, then "… 11 more frames"
        loop_report.assert_clean()

    def test_statistics_gain_the_loop_columns(self, loop_report: Opened) -> None:
        """The span statistics table has busy p50/p95, blocks, blocked and stalled."""
        page = loop_report.page
        heads = page.eval_on_selector_all("#stats th", "nodes => nodes.map(node => node.textContent)")
        assert heads[-5:] == ["busy p50", "busy p95", "blocks", "blocked", "stalled"]
        row = page.eval_on_selector_all(
            '#stats tr:has(td:text-is("fetch rates")) td', "nodes => nodes.map(node => node.textContent)"
        )
        assert row[-5:] == ["256.8", "256.8", "2", "256.1", "–"]  # the heading says "times in ms"
        worker = page.eval_on_selector_all(
            '#stats tr:has(td:text-is("parse csv")) td', "nodes => nodes.map(node => node.textContent)"
        )
        assert worker[-5:] == ["–", "–", "0", "–", "–"]
        loop_report.assert_clean()

    def test_first_paint_shows_the_block(self, tmp_path: Path) -> None:
        """A plain ``chromium --dump-dom`` already has the ⚠ badge in the tree and the loop columns."""
        path = tmp_path / "loop.html"
        path.write_text(viz.render_report(loop_traces()), encoding="utf-8")
        dom = Dom(plain_chromium(path, tmp_path / "profile", "--dump-dom").decode())
        assert dom.text["trace-title"] == "GET /reports/{id}"
        assert dom.count("tree", "span", "b-blocked") == 1
        assert "⚠ blocked the loop 300.4 ms" in dom.text["tree"]
        assert "busy p95" in dom.text["stats"]


# ---- a real server's block, end to end ------------------------------------------------------------

THIS_FILE = Path(__file__).resolve()
#: Requests that await while the guilty one blocks the loop: stalled by it, never marked.
STALLED = 3


def line_of(marker: str) -> int:
    """The number of the one line of this file that ends with ``# <marker>``."""
    source = THIS_FILE.read_text(encoding="utf-8").splitlines()
    found = [number for number, text in enumerate(source, 1) if text.rstrip().endswith(f"# {marker}")]
    assert len(found) == 1, marker
    return found[0]


@ft.traced
def render_invoice() -> None:
    """The guilty code: a synchronous call in async code, holding the event loop for 0.3 s."""
    time.sleep(0.3)  # blocks the loop


async def serve_one_block(path: Path) -> None:
    """A real aiohttp server on 127.0.0.1, loop monitor on (0.1 s), traces written to ``path``.

    ``STALLED`` requests to ``/stock`` wait inside a ``query stock`` span; then
    ``/invoice`` wakes them and, in the same callback, calls the guilty code,
    so each of them waits through the whole block, however fast the machine.
    """
    entered = 0
    all_in = asyncio.Event()
    released = asyncio.Event()

    async def stock(request: web.Request) -> web.Response:
        nonlocal entered
        entered += 1
        if entered == STALLED:
            all_in.set()
        async with ft.span("query stock"):
            await released.wait()
        return web.Response(text="in stock")

    async def invoice(request: web.Request) -> web.Response:
        released.set()  # the waiters can only run once this callback lets go of the loop
        render_invoice()  # calls the guilty code
        return web.Response(text="%PDF-1.7")

    app = web.Application()
    app.router.add_get("/stock", stock)
    app.router.add_get("/invoice", invoice)
    setup(app, ft.Tracker(exporters=[ft.FileExporter(path)], service="shop"), monitor_loop=0.1)
    async with serve(app) as url:  # its cleanup stops the monitor and closes the tracker (flushes the file)
        stalled = [asyncio.ensure_future(fetch(url + "/stock")) for _ in range(STALLED)]
        await asyncio.wait_for(all_in.wait(), 30)
        assert (await fetch(url + "/invoice"))[0] == 200
        assert [status for status, _, _ in await asyncio.gather(*stalled)] == [200] * STALLED


@dataclass
class RealRun:
    """The traces file of one :func:`serve_one_block` run, read as ``flowtracker report`` reads it."""

    path: Path
    traces: list[dict[str, Any]]

    def spans(self, name: str) -> list[dict[str, Any]]:
        """The spans named ``name``, in the order of the traces."""
        return [span for trace in self.traces for span in trace["spans"] if span["name"] == name]

    def trace_of(self, span: dict[str, Any]) -> str:
        """The id of the trace that holds ``span``."""
        return next(trace["trace_id"] for trace in self.traces if span in trace["spans"])


@pytest.fixture(scope="class")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> RealRun:
    """One run of a real server where one request blocks the loop among stalled ones."""
    path = tmp_path_factory.mktemp("real-block") / "traces.jsonl"
    # A thread of its own: Playwright's sync API keeps an event loop in the test's thread.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(lambda: asyncio.run(serve_one_block(path))).result(timeout=60)
    return RealRun(path, viz.merge_traces(viz.read_traces([path]).traces))


@pytest.fixture
def real_report(browser: Any, tmp_path: Path, real_run: RealRun) -> Iterator[Opened]:
    """The report of that run, open in a tab."""
    opened = open_report(browser, tmp_path / "real.html", real_run.traces)
    try:
        yield opened
    finally:
        opened.page.close()


def blocked_event(span: dict[str, Any]) -> dict[str, Any]:
    """The one ``event_loop.blocked`` event of ``span``."""
    (event,) = [event for event in span.get("events", ()) if event["name"] == "event_loop.blocked"]
    return event


def stamp(text: str) -> float:
    """An RFC 3339 wire time as seconds since the epoch."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class TestJoinedServices:
    """A trace joined from several services (as ``flowtracker serve`` stores them) in the report."""

    def test_joined_trace_names_its_services(self, browser: Any, tmp_path: Path) -> None:
        """A trace whose spans name two services (and the trace none) counts for both in the service
        filter; its summary line names both, its root's first, and its tree marks the span of the
        other service with it, not the root's."""
        joined = {
            "trace_id": "e" * 32,
            "spans": [
                {"span_id": "a" * 16, "name": "GET /cart", "duration_ms": 20.0, "service": "web",
                 "start_time": "2026-11-20T11:00:02.000000Z"},
                {"span_id": "b" * 16, "parent_id": "a" * 16, "name": "reserve", "duration_ms": 5.0,
                 "service": "inventory", "start_time": "2026-11-20T11:00:02.001000Z"},
            ],
        }  # fmt: skip
        opened = open_report(browser, tmp_path / "joined.html", [*loop_traces(), joined])
        page = opened.page
        buttons = page.locator("#trace-list button")
        try:
            options = page.eval_on_selector_all("#service-filter option", "nodes => nodes.map(n => n.value)")
            assert options == ["", "inventory", "shop", "web"]
            for service in ("inventory", "web"):
                page.select_option("#service-filter", service)
                expect(buttons).to_have_count(1)
            expect(buttons).to_contain_text("web + inventory")
            opened.pick("e" * 32)
            expect(page.locator("#trace-meta")).to_contain_text("services web, inventory")
            chip = page.locator('#tree .node:has(.label:text-is("reserve")) .service')
            expect(chip).to_have_text("inventory")
            assert page.locator('#tree .node:has(.label:text-is("GET /cart")) .service').count() == 0
            opened.assert_clean()
        finally:
            page.close()


class TestRealServerBlock:
    """A real aiohttp server with ``monitor_loop``: the request whose code blocked the loop is the one
    marked, with the blocking line of this file, in ``flowtracker tree`` and in the report in Chromium;
    the requests it stalled are not."""

    def test_tree_marks_the_guilty_span_only(self, real_run: RealRun) -> None:
        """``flowtracker tree`` on the run's file: busy time on every span, ``⚠ blocked the loop`` with
        this file's blocking line on ``render_invoice`` and on no other line."""
        command = ["tree", str(real_run.path), "--no-tags", "--color", "never"]
        done = subprocess.run(
            [sys.executable, "-m", "flowtracker", *command],
            capture_output=True,
            timeout=60,
            check=True,
        )
        lines = done.stdout.decode().splitlines()
        spans = [line for line in lines if line and not line.startswith("trace ")]
        assert len(spans) == 2 * (STALLED + 1)
        assert all("  busy " in line for line in spans), lines
        (marked,) = [line for line in lines if "⚠" in line]
        blocking = f"tests/{THIS_FILE.name}:{line_of('blocks the loop')} in render_invoice"
        span = r"└─ render_invoice  [\d.]+ ms  \d+%  busy [\d.]+ ms  "
        assert re.fullmatch(rf"{span}⚠ blocked the loop [\d.]+ ms at {re.escape(blocking)}", marked), marked
        assert sum(line.startswith("└─ query stock  ") for line in spans) == STALLED

    def test_guilty_span_is_marked_with_its_line(self, real_report: Opened, real_run: RealRun) -> None:
        """In the report, the guilty trace's list entry, waterfall label, tree node and summary carry the
        ⚠, and its details panel shows the block with the stack, innermost first: this file's
        ``time.sleep`` line, then, further out, the handler's call."""
        page = real_report.page
        (guilty,) = real_run.spans("render_invoice")
        duration = blocked_event(guilty)["attributes"]["duration_ms"]
        assert duration >= 300
        trace_id = real_run.trace_of(guilty)
        expect(real_report.listed(trace_id)).to_contain_text("⚠ blocked the loop")
        real_report.pick(trace_id)
        labels = [label.strip() for label in real_report.gantt_labels()]
        assert "⚠ render_invoice" in labels
        assert "GET /invoice" in labels  # the root's own code did not block
        badges = page.locator("#tree .badge.b-blocked")
        expect(badges).to_have_count(1)
        badge = page.locator('#tree .node:has(.label:text-is("render_invoice")) .badge.b-blocked')
        shown = re.fullmatch(r"⚠ blocked the loop ([\d.]+) ms", badge.text_content() or "")
        assert shown is not None
        assert float(shown[1]) == pytest.approx(duration, abs=0.051)
        expect(page.locator("#trace-meta")).to_contain_text(f"⚠ 1 loop block ({shown[1]} ms)")

        page.locator('#tree .node:has(.label:text-is("render_invoice"))').click()
        details = page.locator("#details")
        blocking = f"{THIS_FILE}:{line_of('blocks the loop')} in render_invoice"
        # From its offset in the span, or from the span's start when the loop step
        # that blocked began a moment before the span did (never "+-0.07 ms").
        started = re.compile(rf"⚠ {re.escape(shown[1])} ms from (\+\d|the span's start)")
        expect(details).to_contain_text(started)
        expect(details).to_contain_text(f" at {blocking}")
        expect(details).to_contain_text("on the event loop (")
        expect(details.locator(".stack .frame.first")).to_have_text(blocking)
        assert details.locator(".stack .frame").first.text_content() == blocking
        own = details.locator(".stack .frame.own").all_text_contents()
        assert f"{THIS_FILE}:{line_of('calls the guilty code')} in invoice" in own
        assert details.locator(".stack .frame.lib").count() >= 1  # aiohttp and asyncio, muted
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "real-block-report.png"))
        real_report.assert_clean()

    def test_busy_share_is_shaded_on_the_guilty_bar(self, real_report: Opened, real_run: RealRun) -> None:
        """The guilty bar is shaded nearly end to end (its time was its own work on the loop), the root's
        only for its own share, and the block is outlined on the guilty bar's row, at its time."""
        page = real_report.page
        (guilty,) = real_run.spans("render_invoice")
        real_report.pick(real_run.trace_of(guilty))
        (root,) = [span for span in real_run.spans("GET /invoice") if "parent_id" not in span]
        assert guilty["busy_ms"] >= 0.9 * guilty["duration_ms"]
        stroke = page.get_attribute("#gantt", "data-bar-stroke")
        fill = page.get_attribute("#gantt", "data-busy-fill")
        bars = boxes(page, f'#gantt path[stroke="{stroke}"]')
        shaded = boxes(page, f'#gantt path[fill="{fill}"]')
        assert len(bars) == len(shaded) == 2
        for bar, inner, span in zip(bars, shaded, [root, guilty], strict=True):
            assert bar["top"] < inner["top"] < inner["bottom"] < bar["bottom"]
            assert inner["left"] == pytest.approx(bar["left"], abs=1)
            expected = max((bar["right"] - bar["left"]) * span["busy_ms"] / span["duration_ms"], 1)
            assert inner["right"] - inner["left"] == pytest.approx(expected, abs=1.5)
        root_bar, guilty_bar = bars
        (outline,) = boxes(page, f'#gantt path[stroke="{page.get_attribute("#gantt", "data-block-stroke")}"]')
        assert outline["top"] <= guilty_bar["top"]
        assert outline["bottom"] >= guilty_bar["bottom"]
        # From the block's recorded start, for its duration: the root's bar spans the whole trace.
        event = blocked_event(guilty)
        scale = (root_bar["right"] - root_bar["left"]) / root["duration_ms"]  # px per ms
        offset = (stamp(event["time"]) - stamp(root["start_time"])) * 1000
        assert outline["left"] == pytest.approx(root_bar["left"] + offset * scale, abs=2.5)
        width = event["attributes"]["duration_ms"] * scale
        assert outline["right"] - outline["left"] == pytest.approx(width, abs=2.5)
        real_report.assert_clean()

    def test_stalled_requests_are_not_marked(self, real_report: Opened, real_run: RealRun) -> None:
        """Each awaiting request waited through the whole block, yet its trace has no ⚠ anywhere on the
        page, no block outline, and its bars are shaded only for their small own share."""
        page = real_report.page
        (guilty,) = real_run.spans("render_invoice")
        event = blocked_event(guilty)
        began = stamp(event["time"])
        ended = began + event["attributes"]["duration_ms"] / 1000
        waits = real_run.spans("query stock")
        assert len(waits) == STALLED
        stroke = page.get_attribute("#gantt", "data-bar-stroke")
        fill = page.get_attribute("#gantt", "data-busy-fill")
        block_stroke = page.get_attribute("#gantt", "data-block-stroke")
        for wait in waits:
            # Stalled by it: the wait began before the block and ended after it.
            assert stamp(wait["start_time"]) < began
            assert stamp(wait["end_time"]) > ended
            trace_id = real_run.trace_of(wait)
            expect(real_report.listed(trace_id)).not_to_contain_text("⚠")
            real_report.pick(trace_id)
            expect(page.locator("#trace-meta")).not_to_contain_text("⚠")
            assert page.locator("#tree .b-blocked").count() == 0
            labels = real_report.gantt_labels()
            assert "query stock" in [label.strip() for label in labels]
            assert not [label for label in labels if "⚠" in label]
            assert boxes(page, f'#gantt path[stroke="{block_stroke}"]') == []
            bars = boxes(page, f'#gantt path[stroke="{stroke}"]')
            shaded = boxes(page, f'#gantt path[fill="{fill}"]')
            assert len(bars) == len(shaded) == 2
            for bar, inner in zip(bars, shaded, strict=True):
                assert inner["right"] - inner["left"] < (bar["right"] - bar["left"]) / 2
        real_report.assert_clean()


def long_names_trace() -> dict[str, Any]:
    """A checkout trace with long span names and many long tags, as instrumentation writes them."""

    def span(
        number: int, parent: int, name: str, start_us: int, duration_ms: float, **tags: Any
    ) -> dict[str, Any]:
        return {
            "span_id": f"{number:016x}",
            **({"parent_id": f"{parent:016x}"} if parent else {}),
            "name": name,
            "start_time": f"2026-11-20T10:00:00.{start_us:06d}Z",
            "duration_ms": duration_ms,
            "status": "ok",
            "tags": tags,
        }

    statement = (
        "SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = $1"
    )
    return {
        "trace_id": "f" * 32,
        "service": "shop",
        "spans": [
            span(
                1,
                0,
                "GET /api/v1/orders/{order_id}/checkout",
                0,
                120.0,
                **{
                    "http.method": "GET",
                    "http.route": "/api/v1/orders/{order_id}/checkout",
                    "http.status_code": 200,
                    "http.user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
                },
            ),
            span(
                2,
                1,
                "SELECT orders JOIN customers",
                1000,
                30.0,
                **{
                    "db.system": "postgresql",
                    "db.statement": statement,
                    "db.name": "shop",
                    "net.peer.name": "127.0.0.1",
                    "net.peer.port": 5432,
                },
            ),
            span(
                3,
                1,
                "GET",
                31000,
                2.0,
                **{
                    "db.system": "redis",
                    "db.statement": "GET cart:42",
                    "db.redis.database_index": 0,
                    "net.peer.name": "127.0.0.1",
                    "net.peer.port": 6379,
                },
            ),
            span(
                4,
                1,
                "HTTP POST inventory.internal:8080/api/v1/reservations",
                34000,
                50.0,
                **{
                    "http.method": "POST",
                    "http.url": "http://inventory.internal:8080/api/v1/reservations",
                    "http.status_code": 201,
                },
            ),
            span(
                5, 4, "serialize_reservation_request_payload", 34100, 1.0, bytes=1234, schema="reservation.v2"
            ),
        ],
    }


def health_trace() -> dict[str, Any]:
    """A trace of one childless span."""
    span = {
        "span_id": "9" * 16,
        "name": "GET /health",
        "start_time": "2026-11-20T10:00:05.000000Z",
        "duration_ms": 1.0,
        "status": "ok",
    }
    return {"trace_id": "e" * 32, "service": "shop", "spans": [span]}


#: Per element: its text, whether its content is wider than its box, and whether its box ends inside
#: the scrolling box that holds it (its right edge at most that box's visible right edge).
MEASURE_CUT = """(selector) => [...document.querySelectorAll(selector)].map((node) => {
  const holder = node.closest('.tree, .table-wrap');
  const right = holder.getBoundingClientRect().left + holder.clientLeft + holder.clientWidth;
  const inside = node.getBoundingClientRect().right <= right + 0.5;
  return [node.textContent, node.scrollWidth > node.clientWidth, inside];
})"""


@pytest.fixture(params=[1280, 1920], ids=lambda width: f"{width}px")
def long_report(request: pytest.FixtureRequest, browser: Any, tmp_path: Path) -> Iterator[Opened]:
    """A report of long names and tags, with loop-monitor columns, at 1280 and 1920 px wide."""
    traces = [long_names_trace(), health_trace(), *loop_traces()]
    opened = open_report(browser, tmp_path / "long.html", traces)
    opened.page.set_viewport_size({"width": request.param, "height": 1000})
    opened.page.wait_for_timeout(250)  # the charts redraw 100 ms after the last resize event
    try:
        yield opened
    finally:
        opened.page.close()


class TestLayout:
    """Names stay whole and every column is in reach at common window widths."""

    def test_tree_names_never_lose_to_tags(self, long_report: Opened) -> None:
        """In every trace's execution tree each span name is whole and inside the tree's box; the
        tags are what gets cut, with the whole name and every tag on hover."""
        page = long_report.page
        cut_tags = 0
        for trace_id in ["f" * 32, "e" * 32, *(trace["trace_id"] for trace in loop_traces())]:
            long_report.pick(trace_id)
            labels = page.evaluate(MEASURE_CUT, "#tree .label")
            assert labels, trace_id
            assert [name for name, cut, inside in labels if cut or not inside] == [], trace_id
            cut_tags += sum(cut for _, cut, _ in page.evaluate(MEASURE_CUT, "#tree .tags"))
        assert cut_tags > 0  # the tags did give way
        long_report.pick("f" * 32)
        node = page.locator('#tree .node:has(.label:text-is("SELECT orders JOIN customers"))')
        assert node.locator(".label").get_attribute("title") == "SELECT orders JOIN customers"
        assert "db.statement=SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id" in (
            node.locator(".tags").get_attribute("title") or ""
        )
        node.hover()
        assert page.text_content("#details .name") == "SELECT orders JOIN customers"
        long_report.assert_clean()

    def test_waterfall_labels_are_whole(self, long_report: Opened) -> None:
        """The waterfall's label column is as wide as its longest label, so no name is cut there."""
        long_report.pick("f" * 32)
        labels = long_report.gantt_labels()
        for name in [span["name"] for span in long_names_trace()["spans"]]:
            assert any(label.strip() == name for label in labels), (name, labels)
        long_report.assert_clean()

    def test_every_statistics_column_is_in_view(self, long_report: Opened) -> None:
        """The statistics table fits its card: every column (the loop ones last) is inside the
        visible box, no name cell is cut, and the last row ends inside the box once it is scrolled
        to the bottom (nothing hides under a scroll bar)."""
        page = long_report.page
        heads = page.evaluate(MEASURE_CUT, "#stats th")
        assert [name for name, _, _ in heads][-5:] == ["busy p50", "busy p95", "blocks", "blocked", "stalled"]
        assert [name for name, cut, inside in heads if cut or not inside] == []
        names = page.evaluate(MEASURE_CUT, "#stats td:first-child")
        assert "HTTP POST inventory.internal:8080/api/v1/reservations" in [name for name, _, _ in names]
        assert [name for name, cut, inside in names if cut or not inside] == []
        gap = page.evaluate(
            """() => {
              const wrap = document.querySelector('.table-wrap');
              wrap.scrollTop = wrap.scrollHeight;
              const rows = wrap.querySelectorAll('tbody tr');
              const bottom = wrap.getBoundingClientRect().top + wrap.clientTop + wrap.clientHeight;
              return bottom - rows[rows.length - 1].getBoundingClientRect().bottom;
            }"""
        )
        assert gap >= -0.5
        long_report.assert_clean()

    def test_narrow_window_scrolls_the_statistics_with_the_name_held(
        self, browser: Any, tmp_path: Path
    ) -> None:
        """Below the width where the table fits, it scrolls sideways: scrolled to the end, the last
        column is inside the box and the name column is still at its left edge."""
        opened = open_report(browser, tmp_path / "narrow.html", [long_names_trace(), *loop_traces()])
        try:
            opened.page.set_viewport_size({"width": 1000, "height": 900})
            place = opened.page.evaluate(
                """() => {
                  const wrap = document.querySelector('.table-wrap');
                  const overflow = wrap.scrollWidth - wrap.clientWidth;
                  wrap.scrollLeft = wrap.scrollWidth;
                  const box = wrap.getBoundingClientRect();
                  const heads = wrap.querySelectorAll('th');
                  return {overflow: overflow, right: box.left + wrap.clientLeft + wrap.clientWidth,
                          left: box.left + wrap.clientLeft,
                          last: heads[heads.length - 1].getBoundingClientRect().right,
                          name: heads[0].getBoundingClientRect().left};
                }"""
            )
            assert place["overflow"] > 0
            assert place["last"] <= place["right"] + 0.5
            assert abs(place["name"] - place["left"]) <= 0.5
            opened.assert_clean()
        finally:
            opened.page.close()

    def test_counts_are_spelled_right(self, long_report: Opened) -> None:
        """One span is "1 span", in the picker and in the trace's line; more are plural."""
        page = long_report.page
        assert "· 1 span ·" in page.text_content(f'#trace-list button[data-trace-id="{"e" * 32}"] .sub')
        assert "· 5 spans ·" in page.text_content(f'#trace-list button[data-trace-id="{"f" * 32}"] .sub')
        long_report.pick("e" * 32)
        assert "· 1 span ·" in page.text_content("#trace-meta")
        assert page.text_content("#summary").startswith("6 traces · 16 spans · ")
        long_report.assert_clean()

    def test_single_span_trace_is_in_where_time_goes(self, long_report: Opened) -> None:
        """A trace of one childless span flows from its service in "where time goes"."""
        nodes = long_report.page.evaluate("() => window.flowtrackerReport.data.sankey.nodes")
        labels = long_report.page.eval_on_selector_all(
            "#sankey text", "nodes => nodes.map(n => n.textContent)"
        )
        assert "GET /health" in nodes
        assert "GET /health" in labels
        assert "shop" in labels
        long_report.assert_clean()

    def test_screenshot_of_long_names(self, long_report: Opened) -> None:
        """Saves test-artifacts/long-names-<width>.png: the long-named trace's waterfall and tree."""
        long_report.pick("f" * 32)
        long_report.page.locator('#tree .node:has(.label:text-is("SELECT orders JOIN customers"))').hover()
        width = long_report.page.viewport_size["width"]
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"long-names-{width}.png"
        long_report.page.locator("#trace-view").screenshot(path=str(path))
        assert path.stat().st_size > 10_000
        long_report.assert_clean()


class TestReuse:
    """Another page draws its data with the report's own views (flowtracker.viz.report_page)."""

    def test_empty_page_draws_what_it_is_given_and_keeps_the_open_trace(
        self, browser: Any, tmp_path: Path
    ) -> None:
        """``report_page(None)`` waits for data; ``flowtrackerReport.render(report_data(...))`` draws the
        list, waterfall, tree, Sankey and statistics; rendering again with more traces keeps the
        trace that was open and adds the new one to the list."""
        path = tmp_path / "live.html"
        path.write_text(viz.report_page(None, title="live"), encoding="utf-8")
        opened = open_page(browser, path)
        page = opened.page
        try:
            assert page.text_content("#summary") == "Waiting for traces…"
            assert page.locator("#trace-list button").count() == 0
            first, later = golden_traces(), [long_names_trace()]
            page.evaluate("(data) => flowtrackerReport.render(data)", viz.report_data(first))
            assert page.locator("#trace-list button").count() == len(first)
            opened.pick("0af7651916cd43dd8448eb211c80319c")
            assert opened.bars() == 5
            page.evaluate("(data) => flowtrackerReport.render(data)", viz.report_data(first + later))
            assert page.get_attribute("#trace-view", "data-trace-id") == "0af7651916cd43dd8448eb211c80319c"
            assert opened.bars() == 5
            assert page.locator("#trace-list button").count() == len(first) + 1
            assert opened.links() == len(viz.report_data(first + later)["sankey"]["links"])
            assert page.locator('#stats td:text-is("serialize_reservation_request_payload")').count() == 1
            opened.assert_clean()
        finally:
            page.close()


class TestTimeAxis:
    """The waterfall's time axis stays readable whatever the trace's length."""

    def test_labels_keep_apart_and_the_last_is_the_trace_end(self, browser: Any, tmp_path: Path) -> None:
        """Consecutive time labels keep a gap, and the axis ends with the trace's length, where a round
        tick close to it used to be printed against it ("25.0 ms26.8 ms")."""
        lengths = [26.8, 415.0, 1234.0, *(round(20.1 + 0.37 * step, 2) for step in range(30))]
        traces = [two_span_trace(f"{number:032x}", length) for number, length in enumerate(lengths)]
        opened = open_report(browser, tmp_path / "axis.html", traces)
        try:
            for number, length in enumerate(lengths):
                opened.pick(f"{number:032x}")
                labels = opened.page.eval_on_selector_all(
                    "#gantt text",
                    """nodes => nodes.filter(node => /^[0-9.]+ m?s$/.test(node.textContent)).map(node => {
                         const box = node.getBoundingClientRect();
                         return [node.textContent, box.left, box.right];
                       }).sort((a, b) => a[1] - b[1])""",
                )
                gaps = [after[1] - before[2] for before, after in itertools.pairwise(labels)]
                assert len(labels) >= 3, (length, labels)
                assert min(gaps) >= 8, (length, labels)
                end = f"{length:.1f} ms" if length < 1000 else f"{length / 1000:.2f} s"
                assert labels[-1][0] == end, (length, labels)
            opened.assert_clean()
        finally:
            opened.page.close()


class TestFirstPaint:
    """The page shows the traces at its first paint; only the charts may follow."""

    def test_dumped_dom_holds_the_list_tree_and_statistics(self, tmp_path: Path) -> None:
        """``chromium --dump-dom`` (the DOM once the page has loaded) holds every trace in the list,
        the slowest trace's execution tree and the statistics table."""
        path = tmp_path / "report.html"
        path.write_text(viz.render_report(golden_traces()), encoding="utf-8")
        dom = Dom(plain_chromium(path, tmp_path / "profile", "--dump-dom").decode())
        assert dom.text["summary"].startswith("3 traces · 17 spans · "), dom.text["summary"]
        listed = [
            attributes["data-trace-id"] for tag, attributes in dom.inside["trace-list"] if tag == "button"
        ]
        assert listed == [
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "0af7651916cd43dd8448eb211c80319c",
            "b7ad6b7169203331a1b2c3d4e5f60718",
        ]
        assert dom.text["trace-title"] == "GET /"
        assert dom.count("tree", "div", "node") == 6
        assert dom.count("stats", "tr") == 1 + len(viz.report_data(golden_traces())["stats"])
        assert dom.text["fatal"] == ""

    def test_plain_screenshot_shows_the_list_tree_and_statistics(self, browser: Any, tmp_path: Path) -> None:
        """A plain ``chromium --screenshot`` shows the trace list, the tree and the statistics exactly
        as the finished page does, where the page's empty shell (scripts off) shows none of them."""
        opened = open_report(browser, tmp_path / "report.html", golden_traces())
        try:
            width, height = FIRST_PAINT_WINDOW
            opened.page.set_viewport_size({"width": width, "height": height})
            finished = tmp_path / "finished.png"
            opened.page.screenshot(path=str(finished))
            boxes = {
                selector: opened.page.locator(selector).bounding_box()
                for selector in ("#trace-list", "#tree", "#stats")
            }
            opened.assert_clean()
        finally:
            opened.page.close()
        page = tmp_path / "report.html"
        without_scripts = tmp_path / "shell.html"  # the page before any of its scripts ran
        shell_markup = re.sub(r"<script.*?</script>", "", page.read_text(encoding="utf-8"), flags=re.S)
        without_scripts.write_text(shell_markup, encoding="utf-8")
        plain, shell = tmp_path / "plain.png", tmp_path / "shell.png"
        plain_chromium(page, tmp_path / "profile-plain", f"--screenshot={plain}")
        plain_chromium(without_scripts, tmp_path / "profile-shell", f"--screenshot={shell}")
        blank = browser.new_page()
        try:
            for selector, box in boxes.items():
                assert box is not None, selector
                assert box["height"] > 40, selector
                drawn = blank.evaluate(COMPARE_PIXELS, [png_url(plain), png_url(finished), box])
                empty = blank.evaluate(COMPARE_PIXELS, [png_url(shell), png_url(finished), box])
                assert drawn < 0.005, (selector, drawn)
                assert empty > 0.02, (selector, empty)  # so the check above can tell an empty box
        finally:
            blank.close()


class TestGunzip:
    """The page's own synchronous gunzip (assets/inflate.js) against Python's gzip and zlib."""

    def test_every_block_type_decodes_to_the_original(self, browser: Any) -> None:
        """Stored, fixed and dynamic Huffman blocks, long runs, far matches, header fields decode right."""
        rng = random.Random(6)
        words = ["span", "trace", "GET /", "duration_ms", "x" * 300, "\u00e9\u4e2d", "0123456789abcdef"]
        payloads = {
            "empty": b"",
            "random": rng.randbytes(70_000),  # incompressible: stored blocks
            "runs": b"a" * 100_000 + b"ab" * 30_000,  # 258-byte matches 1 and 2 bytes back
            "words": " ".join(rng.choice(words) for _ in range(10_000)).encode(),  # matches up to 32 KiB back
            "file name in the header": b"a header with a file name",
        }
        cases: list[tuple[str, str, bytes]] = []  # (what, payload name, gzip member)
        for name, payload in payloads.items():
            for level in (0, 1, 6, 9):
                cases.append((f"level {level}", name, gzip.compress(payload, level, mtime=0)))
            for strategy in (zlib.Z_FIXED, zlib.Z_HUFFMAN_ONLY, zlib.Z_RLE, zlib.Z_FILTERED):
                packer = zlib.compressobj(6, zlib.DEFLATED, 31, 9, strategy)  # wbits 31: a gzip member
                cases.append((f"strategy {strategy}", name, packer.compress(payload) + packer.flush()))
        named = io.BytesIO()
        with gzip.GzipFile(filename="traces.json", mode="wb", fileobj=named, mtime=0) as writer:
            writer.write(payloads["file name in the header"])
        cases.append(("FNAME", "file name in the header", named.getvalue()))
        page = browser.new_page()
        try:
            page.add_script_tag(content=asset("inflate.js"))
            results = page.evaluate(
                """([payloads, cases]) => {
                     const bytes = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
                     const originals = {};
                     for (const [name, text] of Object.entries(payloads)) originals[name] = bytes(text);
                     return cases.map(([what, name, packed]) => {
                       const out = flowtrackerGunzip(bytes(packed));
                       const want = originals[name];
                       const same = out.length === want.length && out.every((byte, k) => byte === want[k]);
                       return [what, name, same];
                     });
                   }""",
                [
                    {name: base64.b64encode(payload).decode() for name, payload in payloads.items()},
                    [[what, name, base64.b64encode(packed).decode()] for what, name, packed in cases],
                ],
            )
        finally:
            page.close()
        assert [(what, name) for what, name, same in results if not same] == []
        assert len(results) == len(cases) == 41

    def test_damage_is_an_error_not_wrong_data(self, browser: Any) -> None:
        """A changed byte (the CRC catches it if nothing else does), a cut or foreign blob: "damaged"."""
        packed = gzip.compress(b"".join(b"span %d took %d ms\n" % (k, k * 7 % 101) for k in range(5000)), 6)
        changed = bytearray(packed)
        changed[len(changed) // 2] ^= 0x10
        cut_off = packed[: len(packed) // 2]
        cases = {"changed": bytes(changed), "cut off": cut_off, "foreign": b"not gzip" * 10}
        page = browser.new_page()
        try:
            page.add_script_tag(content=asset("inflate.js"))
            messages = page.evaluate(
                """cases => Object.fromEntries(Object.entries(cases).map(([name, packed]) => {
                     try {
                       flowtrackerGunzip(Uint8Array.from(atob(packed), (c) => c.charCodeAt(0)));
                       return [name, 'no error'];
                     } catch (error) {
                       return [name, error.message];
                     }
                   }))""",
                {name: base64.b64encode(value).decode() for name, value in cases.items()},
            )
        finally:
            page.close()
        assert set(messages) == set(cases)
        for name, message in messages.items():
            assert message.startswith("The report data is damaged ("), (name, message)


class TestLargeInputs:
    """Deep and wide inputs stay drawable."""

    def test_deep_trace_and_many_traces(self, browser: Any, tmp_path: Path) -> None:
        """A 3,000-deep trace (canvas waterfall) among 2,000 small ones loads and switches without errors."""
        deep = [
            {
                "span_id": f"{index + 1:016x}",
                **({"parent_id": f"{index:016x}"} if index else {}),
                "name": f"level {index}",
                "start_time": f"2026-11-20T10:00:00.{index:06d}Z",
                "duration_ms": (3000 - index) / 1000 + 1000,
                "status": "ok",
            }
            for index in range(3000)
        ]
        many = [
            {**trace, "trace_id": f"{number:032x}"} for number in range(2000) for trace in golden_traces()[:1]
        ]
        opened = open_report(browser, tmp_path / "big.html", [{"trace_id": "d" * 32, "spans": deep}, *many])
        try:
            assert opened.page.get_attribute("#trace-view", "data-trace-id") == "d" * 32
            assert opened.page.get_attribute("#gantt", "data-renderer") == "canvas"
            assert opened.page.locator("#tree .node").count() == 3000
            assert (
                opened.page.text_content("#match-count")
                == "2001 of 2001 traces · first 300 shown, refine the search"
            )
            opened.pick(f"{5:032x}")
            assert opened.bars() == 6
            opened.assert_clean()
        finally:
            opened.page.close()


class TestScreenshot:
    """A picture of the report for people (test-artifacts/ is not committed)."""

    def test_screenshot(self, browser: Any, tmp_path: Path) -> None:
        """Saves test-artifacts/report.png of the golden report."""
        opened = open_report(browser, tmp_path / "report.html", golden_traces())
        try:
            ARTIFACTS.mkdir(exist_ok=True)
            opened.page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
            assert (ARTIFACTS / "report.png").stat().st_size > 10_000
            opened.assert_clean()
        finally:
            opened.page.close()

    def test_loop_screenshot(self, loop_report: Opened) -> None:
        """Saves test-artifacts/loop-report.png: the loop-monitor report with the guilty span selected."""
        loop_report.page.locator('#tree .node:has(.label:text-is("render_pdf"))').click()
        ARTIFACTS.mkdir(exist_ok=True)
        loop_report.page.screenshot(path=str(ARTIFACTS / "loop-report.png"))
        assert (ARTIFACTS / "loop-report.png").stat().st_size > 10_000
        loop_report.assert_clean()
