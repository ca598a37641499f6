"""The HTML report in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

Asserts on the rendered page: one waterfall bar per span of the selected
trace, the Sankey links drawn, the picker switching traces, search and status
filters, hostile span names shown as text, no console errors and no request
other than the file itself (the page's CSP forbids any, and every request is
recorded here). A screenshot goes to test-artifacts/report.png for people.

Never ``playwright install``: the browser is the distribution's chromium.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from flowtracker import viz

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
GOLDEN = Path(__file__).parent / "golden"
ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
XSS = "<img src=x onerror=alert(1)>"


def expect(locator: Any) -> Any:
    """Playwright's polling assertions (imported lazily, like the rest of Playwright)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


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
        """Every aggregated link is drawn, and the node labels are on the chart."""
        expected = viz.sankey_graph(golden_traces())
        assert report.links() == len(expected["links"]) == 15
        labels = report.page.eval_on_selector_all(
            "#sankey text", "nodes => nodes.map(node => node.textContent)"
        )
        assert "DB: Select User" in labels
        assert "fib · 2" in labels
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
