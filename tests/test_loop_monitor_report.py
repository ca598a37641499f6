"""Stalled time in the HTML report, in a real headless Chromium (Debian's chromium, via Playwright).

From the loop-monitor golden traces (one ``SELECT items`` stalled 300.4 ms
by ``render_pdf``) and from a real run on uvloop: the stalled stretch is
hatched on the waiting span's bar, its tree node says by whom, the details
panel names the guilty span and links to it, the trace list filters to the
stalled traces, the header gives the monitor's mode and the number of blocks,
and the statistics have a stalled column.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import uvloop
from loop_helpers import recorded_run
from test_report_browser import (  # noqa: F401  (browser: a module-scoped fixture)
    Opened,
    boxes,
    browser,
    expect,
    loop_traces,
    open_report,
)

from flowtracker import viz

pytestmark = pytest.mark.browser

STALLED_TRACE = "9d41f3c07ab24e6f93b8d2c5e1a07f16"
GUILTY_TRACE = "5e0c9a7d2b414f0e8c3d6a1b9f207e44"


@pytest.fixture
def report(browser: Any, tmp_path: Path) -> Iterator[Opened]:  # noqa: F811
    """The report of the loop-monitor golden traces, the stalled trace open."""
    opened = open_report(browser, tmp_path / "loop.html", loop_traces())
    try:
        opened.pick(STALLED_TRACE)
        yield opened
    finally:
        opened.page.close()


class TestStalledInTheReport:
    def test_the_stalled_stretch_is_hatched_on_the_waiting_bar(self, report: Opened) -> None:
        """On ``SELECT items`` the time it waited for ``render_pdf`` is shaded and hatched, from the
        block's start for its length; the other bar is not."""
        page = report.page
        stroke = page.get_attribute("#gantt", "data-bar-stroke")
        root, query = boxes(page, f'#gantt path[stroke="{stroke}"]')
        (shade,) = boxes(page, f'#gantt path[fill="{page.get_attribute("#gantt", "data-stall-fill")}"]')
        scale = (root["right"] - root["left"]) / 309.7  # px per ms: the root spans the whole trace
        assert shade["left"] == pytest.approx(root["left"] + 9.1 * scale, abs=2.5)
        assert shade["right"] == pytest.approx(root["left"] + (9.1 + 300.412) * scale, abs=2.5)
        assert query["top"] <= shade["top"] < shade["bottom"] <= query["bottom"]
        hatch = boxes(page, f'#gantt path[stroke="{page.get_attribute("#gantt", "data-stall-stroke")}"]')
        assert len(hatch) > 20
        assert all(shade["left"] - 1 <= one["left"] and one["right"] <= shade["right"] + 1 for one in hatch)
        report.assert_clean()

    def test_tree_badge_details_and_the_link_to_the_guilty_trace(self, report: Opened) -> None:
        """The waiting span's node says by whom it was stalled; its details name the guilty span and
        line, and the link opens the guilty trace with that span's details."""
        page = report.page
        node = page.locator('#tree .node:has(.label:text-is("SELECT items"))')
        expect(node.locator(".badge.b-stalled")).to_have_text(
            "◷ stalled 300.4 ms by GET /reports/{id} › render_pdf (reports.py:41)"
        )
        node.click()
        details = page.locator("#details")
        expect(details).to_contain_text("300.4 ms waiting while other code held the loop (98% of the span)")
        culprit = "GET /reports/{id} › render_pdf at /srv/shop/shop/reports.py:41 in render_pdf"
        expect(details).to_contain_text(f"◷ 300.4 ms from +9.1 ms by {culprit}")
        page.click("#details .stall-link")
        page.wait_for_selector(f'#trace-view[data-trace-id="{GUILTY_TRACE}"]')
        expect(page.locator("#trace-title")).to_have_text("GET /reports/{id}")
        expect(page.locator("#details .tip .name")).to_have_text("render_pdf")
        report.assert_clean()

    def test_filter_header_and_statistics(self, report: Opened) -> None:
        """"stalled by another" leaves the stalled trace; the header gives the monitor's mode and the
        blocks; the trace's summary its stalled time; the statistics a stalled column."""
        page = report.page
        expect(page.locator("#summary")).to_contain_text("loop monitor: full, 3 loop blocks")
        meta = page.locator("#trace-meta")
        expect(meta).to_contain_text("◷ stalled 300.4 ms by other code · loop monitor: full")
        page.check("#stalled-filter")
        buttons = page.locator("#trace-list button")
        expect(buttons).to_have_count(1)
        expect(buttons.first).to_have_attribute("data-trace-id", STALLED_TRACE)
        page.uncheck("#stalled-filter")
        expect(buttons).to_have_count(4)
        heads = page.eval_on_selector_all("#stats th", "nodes => nodes.map(node => node.textContent)")
        assert heads[-5:] == ["busy p50", "busy p95", "blocks", "blocked", "stalled"]
        row = page.eval_on_selector_all(
            '#stats tr:has(td:text-is("SELECT items")) td', "nodes => nodes.map(node => node.textContent)"
        )
        assert row[-3:] == ["0", "–", "300.4"]
        report.assert_clean()


class TestStalledFromARealRun:
    def test_uvloop_run_stall_is_hatched_and_linked(self, browser: Any, tmp_path: Path) -> None:  # noqa: F811
        """A real run on uvloop: the waiting query's stretch is hatched and its link opens the
        request that rendered the PDF; the header says the monitor watched blocks only."""
        path = tmp_path / "traces.jsonl"
        with ThreadPoolExecutor(1) as worker:  # Playwright's sync API runs a loop in this thread
            worker.submit(recorded_run, path, uvloop.run).result()
        traces = viz.read_traces([path]).traces
        opened = open_report(browser, tmp_path / "real.html", traces)
        try:
            page = opened.page
            waiting = next(t["trace_id"] for t in traces if t["spans"][0]["name"] == "GET /users")
            opened.pick(waiting)
            fill = page.get_attribute("#gantt", "data-stall-fill")
            assert len(boxes(page, f'#gantt path[fill="{fill}"]')) == 1
            expect(page.locator("#summary")).to_contain_text("loop monitor: blocks, 1 loop block")
            page.locator('#tree .node:has(.label:text-is("SELECT users"))').click()
            page.click("#details .stall-link")
            expect(page.locator("#trace-title")).to_have_text("GET /report")
            expect(page.locator("#details .tip .name")).to_have_text("render_pdf")
            opened.assert_clean()
        finally:
            opened.page.close()
