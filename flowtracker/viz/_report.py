"""The offline HTML report: one file, no request leaves the page.

The page embeds Apache ECharts (``assets/echarts.min.js``, Apache-2.0; its
licence is in ``assets/echarts.LICENSE`` and is written into the page) and
the traces, pre-digested here so the browser does little work up front:

* the aggregates (the Sankey of where time goes over all traces, the span
  statistics, one summary row per trace for the picker) are computed in
  Python, once;
* each trace's spans are stored flat, in tree order with depth and subtree
  size, and the per-trace views (waterfall, tree, details) are drawn only
  when that trace is picked.

Strings are interned (span names repeat across traces) and times are stored
as millisecond offsets from the trace's start. By default the library and the
data are gzip-compressed and base64-encoded, and the page inflates them with
its own synchronous gunzip (``assets/inflate.js``), not the browser's
asynchronous ``DecompressionStream``: the trace list, the selected trace's tree
and the statistics are then drawn before the browser's first paint, so a
headless screenshot or a preview shows them; the charts follow a frame later.
``compress=False`` writes plain JSON and script instead.

Safety: every string from the traces reaches the page as JSON data and is put
on screen with ``textContent`` or as chart text, never as HTML, so a span named
``<img src=x onerror=alert(1)>`` shows as those characters. A
Content-Security-Policy meta tag forbids the page any network access.

Example:
    >>> trace = {"trace_id": "4bf9", "spans": [{"span_id": "a", "name": "GET /", "duration_ms": 2.0,
    ...     "start_time": "2026-11-20T10:00:00.000000Z"}]}
    >>> html = render_report([trace], compress=False)
    >>> html.startswith("<!doctype html>"), "echarts" in html
    (True, True)
"""

from __future__ import annotations

import base64
import datetime
import gzip
import html
import re
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Any

from .._graph.model import STATUSES, TraceDict, TraceTree, as_tree, span_status, tags_of, time_us, trace_id_of
from .._graph.sankey import sankey_graph
from .._wire.encode import encode
from ._loop import (
    BLOCKED_EVENT,
    STALLED_EVENT,
    blocks,
    busy_ms,
    is_library_frame,
    loop_monitor,
    stalled_ms,
    stalls,
)
from ._stats import SpanStats, span_stats

#: Most Sankey links drawn (the heaviest); more make an unreadable picture.
MAX_SANKEY_LINKS = 300
#: Most rows in the report's span statistics table.
MAX_STATS_ROWS = 500

_MARKER = re.compile(r"@@(?:TITLE|CONNECT|STYLE|LICENSE|DATA|LIBRARY|SCRIPT)@@")


def render_report(
    traces: Iterable[TraceDict],
    *,
    title: str = "flowtracker report",
    compress: bool = True,
    skipped_lines: int = 0,
    max_sankey_links: int = MAX_SANKEY_LINKS,
) -> str:
    """The self-contained HTML report for ``traces`` (see the module docstring).

    Args:
        traces: Wire-format trace dicts (merge follow-up records first, see
            :func:`flowtracker.viz.merge_traces`).
        title: The page title.
        compress: Embed library and data gzip+base64 (default) or plain.
        skipped_lines: Shown in the header (input lines that were not traces).
        max_sankey_links: Most Sankey links drawn. Default 300.

    Returns:
        The page, as one string.
    """
    data = report_data(traces, title=title, skipped_lines=skipped_lines, max_sankey_links=max_sankey_links)
    return report_page(data, title=title, compress=compress)


def report_page(
    data: Mapping[str, Any] | None,
    *,
    title: str = "flowtracker report",
    compress: bool = True,
    script: str = "",
    connect_src: str = "'none'",
) -> str:
    """The report's page around ``data`` (a :func:`report_data` dict), or around none.

    This is how another page reuses the report's views: the page's script
    exposes ``window.flowtrackerReport.render(data)``, which draws every view
    (trace list, waterfall, tree, details, "where time goes", statistics)
    from a :func:`report_data` dict and can be called again with new data
    (the open trace stays open when it is still there). A live page serves
    ``report_page(None, script=..., connect_src="'self'")`` and has its
    ``script`` (run after the report's own) fetch ``report_data(traces)``
    as JSON and pass it to ``render``.

    Args:
        data: What to draw at load, or ``None`` for a page that waits for
            ``flowtrackerReport.render(data)``.
        title: The page title.
        compress: Embed library and data gzip+base64 (default) or plain.
        script: JavaScript run after the report's script, as page code
            (never put trace data here: data goes through ``render``).
        connect_src: The Content-Security-Policy ``connect-src`` (default
            ``'none'``: the page makes no request at all).

    Returns:
        The page, as one string.

    Raises:
        ValueError: ``script`` holds ``</script`` (it would end the page's
            script element early).

    Example:
        >>> page = report_page(None, script="flowtrackerReport.render(window.fromServer);")
        >>> 'id="ft-data"' in page, "connect-src 'none'" in page
        (False, True)
    """
    if "</script" in script.lower():
        raise ValueError("report_page(script=...) cannot hold '</script': it would end the page's script")
    if compress:
        lib_tag = _blob_tag("ft-lib", _library_compressed(), "gzip")
    else:
        lib_tag = f'<script id="ft-lib">{_asset("echarts.min.js")}</script>'
    data_tag = ""
    if data is not None:
        payload = encode(data)  # odd values (ints past 64 bits, ...) become readable stand-ins
        if compress:
            packed = base64.b64encode(gzip.compress(payload, 6, mtime=0)).decode("ascii")
            data_tag = _blob_tag("ft-data", packed, "gzip")
        else:
            data_tag = _blob_tag("ft-data", _json_for_script(payload), "json")
    replacements = {
        "@@TITLE@@": html.escape(title),
        "@@CONNECT@@": html.escape(connect_src, quote=False).replace('"', "&quot;"),
        "@@STYLE@@": _asset("report.css"),
        "@@LICENSE@@": html.escape(_asset("echarts.LICENSE")),
        "@@DATA@@": data_tag,
        "@@LIBRARY@@": lib_tag,
        "@@SCRIPT@@": _asset("inflate.js") + _asset("report.js") + script,
    }
    # one pass, so a marker-like string inside the data or the title is never replaced
    return _MARKER.sub(lambda match: replacements[match.group()], _asset("report.html"))


def report_data(
    traces: Iterable[TraceDict],
    *,
    title: str = "flowtracker report",
    skipped_lines: int = 0,
    max_sankey_links: int = MAX_SANKEY_LINKS,
) -> dict[str, Any]:
    """The JSON-ready data the report page reads (documented in ``assets/report.js``)."""
    trees = [TraceTree(trace) for trace in traces]
    strings: dict[str, int] = {}

    def intern(text: str) -> int:
        return strings.setdefault(text, len(strings))

    summaries: list[list[Any]] = []
    span_rows: list[list[list[Any]]] = []
    span_total = 0
    first_start: int | None = None
    last_end: int | None = None
    for tree in trees:
        start = tree.start_us()
        wall = tree.wall_ms()
        service = _trace_service(tree)
        rows = _span_rows(tree, start, service, intern)
        span_rows.append(rows)
        span_total += len(rows)
        errors = sum(1 for span in tree.spans if span_status(span) == "error")
        root = tree.roots[0] if tree.roots else -1
        summaries.append(
            [
                trace_id_of(tree.trace),
                intern(service) if service is not None else -1,
                start / 1000.0,
                round(wall, 3),
                STATUSES.index(tree.status()),
                len(rows),
                intern(tree.name(root)) if root >= 0 else -1,
                errors,
                _trace_notes(tree),
                [intern(name) for name in _services(tree, service)],
            ]
        )
        if tree.spans:
            first_start = start if first_start is None else min(first_start, start)
            end = start + round(wall * 1000)
            last_end = end if last_end is None else max(last_end, end)
    modes = sorted({mode for tree in trees if (mode := loop_monitor(tree.trace)) is not None})
    held = sum(notes.get("blocks", 0) for *_, notes, _services in summaries if notes)
    from .._core.version import package_version

    return {
        "version": 1,
        "meta": {
            "title": title,
            "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "flowtracker": package_version(),
            "traces": len(trees),
            "spans": span_total,
            "first": None if first_start is None else first_start / 1000.0,
            "last": None if last_end is None else last_end / 1000.0,
            "skipped": skipped_lines,
            # the loop monitors' modes over these traces (none: not watched) and their blocks
            "loop": {"modes": modes, "blocks": held} if modes or held else None,
        },
        "statuses": list(STATUSES),
        "strings": list(strings),
        "traces": summaries,
        "spans": span_rows,
        **report_aggregates(trees, max_sankey_links=max_sankey_links),
    }


def report_aggregates(
    traces: Iterable[TraceDict | TraceTree], *, max_sankey_links: int = MAX_SANKEY_LINKS
) -> dict[str, Any]:
    """The views over all ``traces`` ("where time goes", span statistics), as in :func:`report_data`.

    A page that lists traces by itself (``flowtracker serve``'s) draws these
    beside its list without the per-trace span rows.

    Example:
        >>> trace = {"trace_id": "4bf9", "service": "shop", "spans": [
        ...     {"span_id": "a", "name": "GET /", "duration_ms": 2.0}]}
        >>> views = report_aggregates([trace])
        >>> views["sankey"]["links"], [row[:2] for row in views["stats"]]
        ([[0, 1, 2.0, 1]], [['GET /', 1]])
    """
    trees = [as_tree(trace) for trace in traces]
    graph = sankey_graph(trees, max_links=max_sankey_links, root_source=_service_of)
    stats = span_stats(trees)
    return {
        "sankey": {
            "nodes": graph["nodes"],
            "links": [[source, target, round(ms, 3), count] for source, target, ms, count in graph["links"]],
            "omitted": graph["omitted"],
        },
        "stats": [_stats_row(row) for row in stats[:MAX_STATS_ROWS]],
        "stats_omitted": max(len(stats) - MAX_STATS_ROWS, 0),
    }


def _trace_service(tree: TraceTree) -> str | None:
    """The trace's service: its own, else its root span's (a store that joins services, such as
    ``flowtracker serve``, puts ``service`` on every span instead)."""
    service = tree.trace.get("service")
    if not isinstance(service, str) and tree.roots:
        service = tree.spans[tree.roots[0]].get("service")
    return service if isinstance(service, str) else None


def _services(tree: TraceTree, service: str | None) -> list[str]:
    """Every service with a span in the trace, its own first."""
    found = {span["service"] for span in tree.spans if isinstance(span.get("service"), str)}
    found.discard(service)
    return ([service] if service is not None else []) + sorted(found)


def _service_of(trace: TraceDict, span: Mapping[str, Any]) -> str:
    """Where a root's time comes from in "where time goes": its service (the span's own, from a
    store that joins services, else the trace's), or ``traces``."""
    service = span.get("service") or trace.get("service")
    return service if isinstance(service, str) and service else "traces"


def _stats_row(row: SpanStats) -> list[Any]:
    """``[name, count, p50, p95, p99, max, total, errors, share]``, plus, with loop-monitor data,
    ``busy_p50, busy_p95, blocks, blocked_ms, stalled_ms`` (the busy values ``null`` for names that
    ran off the loop, or under uvloop)."""
    out: list[Any] = [
        row["name"],
        row["count"],
        round(row["p50_ms"], 3),
        round(row["p95_ms"], 3),
        round(row["p99_ms"], 3),
        round(row["max_ms"], 3),
        round(row["total_ms"], 3),
        row["errors"],
        round(row["share"], 4),
    ]
    if "blocks" in row:
        busy = [round(row[key], 3) if key in row else None for key in ("busy_p50_ms", "busy_p95_ms")]
        blocked = round(row.get("blocked_ms", 0.0), 3)
        out += [*busy, row["blocks"], blocked, round(row.get("stalled_ms", 0.0), 3)]
    return out


def _span_rows(tree: TraceTree, start: int, service: str | None, intern: Any) -> list[list[Any]]:
    """One row per span in tree order:
    ``[span_id, parent_row, name, offset_ms, duration_ms, status, depth, subtree_size, extra]``."""
    rows: list[list[Any]] = []
    row_of: dict[int, int] = {}
    parents = tree.parent_of()
    depths: list[int] = []
    for index, depth in tree.preorder():
        span = tree.spans[index]
        row_of[index] = len(rows)
        parent = parents[index]
        span_id = span.get("span_id")
        rows.append(
            [
                span_id if isinstance(span_id, str) else str(span_id),
                row_of[parent] if parent >= 0 else -1,
                intern(tree.name(index)),
                round((tree.starts[index] - start) / 1000.0, 3),
                round(tree.duration(index), 3),
                STATUSES.index(span_status(span)),
                depth,
                1,
                _extra(span, start, service),
            ]
        )
        depths.append(depth)
    # subtree sizes: in tree order a span's subtree is the run of rows after it that are deeper
    open_rows: list[int] = []
    for row, depth in enumerate(depths):
        while open_rows and depths[open_rows[-1]] >= depth:
            done = open_rows.pop()
            rows[done][7] = row - done
        open_rows.append(row)
    while open_rows:
        done = open_rows.pop()
        rows[done][7] = len(rows) - done
    return rows


def _extra(span: Mapping[str, Any], trace_start: int, trace_service: Any) -> dict[str, Any] | int:
    """The rarely present fields of a span, or 0.

    ``service`` when the span names one other than its trace's (a trace
    joined from several services).

    Loop-monitor data: ``busy_ms``, and ``blocks`` as
    ``[[offset_ms, duration_ms, frames, own]]`` in place of the
    ``event_loop.blocked`` events (``own``: the positions of the frames of
    the user's code, outside the standard library and installed packages);
    ``stalled_ms``, ``stalled_dropped`` and ``stalls`` as ``[[offset_ms,
    duration_ms, by_trace_id, by_span_id, by_name, at]]`` (the ``by_*`` and
    ``at`` ``null`` when absent) in place of the ``event_loop.stalled`` events.
    """
    extra: dict[str, Any] = {}
    tags = tags_of(span)
    if tags:
        extra["tags"] = dict(tags)
    service = span.get("service")
    if service is not None and service != trace_service:
        extra["service"] = service
    for key in ("kind", "error", "events", "dropped_tags"):
        value = span.get(key)
        if value:
            extra[key] = value
    busy = busy_ms(span)
    if busy is not None:
        extra["busy_ms"] = round(busy, 3)
    waited = stalled_ms(span)
    if waited is not None:
        extra["stalled_ms"] = round(waited, 3)
        dropped = span.get("stalled_dropped")
        if dropped:
            extra["stalled_dropped"] = dropped
    held = blocks(span) if "events" in extra else []
    found = stalls(span) if "events" in extra else []
    if held or found:
        others = [event for event in extra["events"] if not _is_loop_event(event)]
        if others:
            extra["events"] = others
        else:
            del extra["events"]
    if found:
        extra["stalls"] = [
            [
                round((at - trace_start) / 1000.0, 3) if (at := time_us(stall.time)) is not None else None,
                round(stall.duration_ms, 3),
                stall.by_trace_id,
                stall.by_span_id,
                stall.by_name,
                stall.at,
            ]
            for stall in found
        ]
    if held:
        extra["blocks"] = [
            [
                round((at - trace_start) / 1000.0, 3) if (at := time_us(block.time)) is not None else None,
                round(block.duration_ms, 3),
                list(block.frames),
                [index for index, frame in enumerate(block.frames) if not is_library_frame(frame)],
            ]
            for block in held
        ]
    parent_id = span.get("parent_id")
    if parent_id is not None:
        extra["parent_id"] = parent_id
    return extra or 0


def _is_loop_event(event: Any) -> bool:
    return isinstance(event, Mapping) and event.get("name") in (BLOCKED_EVENT, STALLED_EVENT)


def _trace_notes(tree: TraceTree) -> dict[str, Any] | int:
    trace = tree.trace
    notes = {key: trace[key] for key in ("dropped_spans", "unfinished_spans", "follow_up") if trace.get(key)}
    held = [block.duration_ms for span in tree.spans if "events" in span for block in blocks(span)]
    if held:
        notes["blocks"] = len(held)
        notes["blocked_ms"] = round(sum(held), 3)
    waited = sum(stalled_ms(span) or 0.0 for span in tree.spans if "stalled_ms" in span)
    if waited:
        notes["stalled_ms"] = round(waited, 3)
    mode = loop_monitor(trace)
    if mode is not None:
        notes["loop_monitor"] = mode
    return notes or 0


def _blob_tag(element_id: str, text: str, encoding: str) -> str:
    kind = "application/json" if encoding == "json" else "application/octet-stream"
    return f'<script id="{element_id}" type="{kind}" data-encoding="{encoding}">{text}</script>'


def _json_for_script(payload: bytes) -> str:
    # In JSON, "<", ">" and "&" only occur inside strings, where \\uXXXX means the
    # same; escaped, no "</script>" or "<!--" in the data can end the element.
    return (
        payload.decode()
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


@cache
def _asset(name: str) -> str:
    return (resources.files(__package__) / "assets" / name).read_text(encoding="utf-8")


@cache
def _library_compressed() -> str:
    raw = _asset("echarts.min.js").encode("utf-8")
    return base64.b64encode(gzip.compress(raw, 9, mtime=0)).decode("ascii")
