"""The live page of ``flowtracker serve`` in Chromium, timed against a full store (part of suite ``serve``).

Run by :func:`benchmarks.serve.run_queries` against its server (100,000
traces stored), in Debian's headless Chromium driven by Playwright, each
round in a fresh tab:

* **list painted**: from the navigation's start until the frame that paints
  the trace list's rows (the page asks ``GET /api/traces`` for the
  newest :data:`~flowtracker.serve.page.LIST_LIMIT` only). Goal: < 1 s.
* **trace drawn**: until the newest trace's waterfall is drawn as well
  (its spans fetched, the charting library started).
* **new trace listed**: from the server's answer to an OTLP request holding a
  new trace until the page's list has it (the live feed), the page at rest
  (drawn, its aggregates too); the same wall clock on both sides.

Times come from the page's own clock (``performance.now()``, whose zero is
the navigation's start), read by an observer the harness adds to each tab
before the page's scripts run.

Example:
    python -m benchmarks serve --quick
"""

from __future__ import annotations

import time
import urllib.request
from typing import Any

from ._harness import format_table, median

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip

#: Added to every tab before the page runs: notes the frame in which the list first has rows,
#: when the waterfall first has bars, and the wall time each trace id first appears in the list.
OBSERVER = """
(() => {
  const marks = window.__marks = {list: null, trace: null, seen: {}};
  // the frame that paints the change: rendering (style, layout, paint) follows its rAF callbacks
  const afterPaint = (key) => requestAnimationFrame(() => {
    if (marks[key] === null) marks[key] = performance.now();
  });
  new MutationObserver(() => {
    const list = document.getElementById('trace-list');
    if (list && marks.list === null && list.children.length) afterPaint('list');
    const gantt = document.getElementById('gantt');
    if (gantt && marks.trace === null && gantt.querySelector('path')) afterPaint('trace');
    for (const button of list ? list.querySelectorAll('button[data-trace-id]') : []) {
      if (!(button.dataset.traceId in marks.seen)) marks.seen[button.dataset.traceId] = Date.now();
    }
  }).observe(document, {childList: true, subtree: true});
})();
"""


def page_timings(port: int, rounds: int) -> tuple[dict[str, Any], str]:
    """Times the page of the server on ``port``, ``rounds`` times; the medians and their table."""
    from playwright.sync_api import sync_playwright

    url = f"http://127.0.0.1:{port}/"
    samples: dict[str, list[float]] = {"list painted": [], "trace drawn": [], "new trace listed": []}
    rows_listed = 0
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.add_init_script(OBSERVER)
            for number in range(rounds + 1):  # the first round warms Chromium up and is not counted
                page = context.new_page()
                page.goto(url)
                _poll(page, "window.__marks.list !== null && window.__marks.trace !== null")
                _poll(page, "document.getElementById('summary').textContent.endsWith('live')")
                _poll(page, "document.querySelector('#stats tbody tr') !== null")  # the aggregates came
                marks = page.evaluate("window.__marks")
                page.wait_for_timeout(500)  # a page at rest, as one that watches is
                trace_id = f"{0xFEED0000 + number:032x}"
                answered = _post_new_trace(port, trace_id)
                _poll(page, f"'{trace_id}' in window.__marks.seen")
                listed_at = page.evaluate(f"window.__marks.seen['{trace_id}']")
                rows_listed = page.locator("#trace-list button").count()
                page.close()
                if number:
                    samples["list painted"].append(marks["list"])
                    samples["trace drawn"].append(marks["trace"])
                    samples["new trace listed"].append(max(0.0, listed_at - answered))
        finally:
            browser.close()
    medians = {label: median(values) for label, values in samples.items()}
    table = format_table(
        f"The live page in Chromium with the store above: median ms of {rounds} fresh tabs "
        f"({rows_listed} rows listed)",
        ["from", "until", "ms"],
        [
            ["navigation start", "the trace list painted", f"{medians['list painted']:.0f}"],
            ["navigation start", "the newest trace's waterfall drawn", f"{medians['trace drawn']:.0f}"],
            [
                "the server's answer to a new trace",
                "the trace in the list (live feed)",
                f"{medians['new trace listed']:.0f}",
            ],
        ],
    )
    return {"ms": medians, "samples": samples, "rows_listed": rows_listed}, table


def _poll(page: Any, expression: str, timeout: float = 60.0) -> None:
    """Waits until ``expression`` is true in the page (asked from outside: the page's CSP allows no
    eval, which Playwright's own ``wait_for_function`` needs)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the page never had {expression}")
        page.wait_for_timeout(5)


def _post_new_trace(port: int, trace_id: str) -> float:
    """POSTs one new trace (starting now) over OTLP/HTTP; the wall time of the answer, in ms."""
    from flowtracker._core.clock import format_rfc3339
    from flowtracker._wire.otlp import otlp_request_dict
    from flowtracker._wire.otlp_proto import request_message

    now = time.time_ns()
    span = {"span_id": trace_id[-16:], "name": "GET /new", "start_time": format_rfc3339(now),
            "end_time": format_rfc3339(now + 1_000_000), "duration_ms": 1.0, "status": "ok"}  # fmt: skip
    body = request_message(otlp_request_dict([{"trace_id": trace_id, "service": "bench", "spans": [span]}]))
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/traces",
        data=body.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()
    return time.time() * 1000
