"""Per span name: how often, how long, how often it fails (``flowtracker stats``).

``share`` is the name's summed duration over the summed duration of all root
spans (the traced wall time): "the database takes 31% of request time".
Concurrent children can add up to more than their parent, so shares can pass
100%. Percentiles interpolate linearly between the two nearest durations.

When a loop monitor ran (a trace says ``loop_monitor``, or some span has
``busy_ms``, an ``event_loop.blocked`` event or ``stalled_ms``), each row also
has ``busy_p50_ms`` and ``busy_p95_ms`` (over the name's spans that have
``busy_ms``; absent when none has, as for work in worker threads and under
uvloop), ``blocks`` (how many times the name's spans blocked the loop),
``blocked_ms`` (for how long in all) and ``stalled_ms`` (how long in all
they waited while another span's code blocked it), and the table gains those
columns: a watched run with no block reads ``0``, not nothing. Without
monitor data, rows and table are as before.

Example:
    >>> trace = {"trace_id": "t", "spans": [
    ...     {"span_id": "a", "name": "GET /", "duration_ms": 100.0},
    ...     {"span_id": "b", "parent_id": "a", "name": "db", "duration_ms": 25.0, "status": "error"}]}
    >>> row = span_stats([trace])[1]
    >>> row["name"], row["count"], row["p50_ms"], row["error_rate"], row["share"]
    ('db', 1, 25.0, 1.0, 0.25)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypedDict

from .._graph.model import TraceDict, TraceTree, as_tree, format_ms, printable, span_status
from ._loop import blocks, busy_ms, loop_monitor, stalled_ms


class _TimeStats(TypedDict):
    """The keys every row has."""

    name: str
    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    total_ms: float
    errors: int
    error_rate: float
    share: float


class SpanStats(_TimeStats, total=False):
    """One row of :func:`span_stats` (the ``busy_*``, ``block*`` and ``stalled_ms`` keys only with
    loop-monitor data)."""

    busy_p50_ms: float
    busy_p95_ms: float
    blocks: int
    blocked_ms: float
    stalled_ms: float


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of sorted values, interpolated linearly (0 when empty).

    Example:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 0.5)
        2.5
    """
    if not ordered:
        return 0.0
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def span_stats(traces: Iterable[TraceDict | TraceTree]) -> list[SpanStats]:
    """One row per span name, the biggest summed duration first."""
    durations: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    busy: dict[str, list[float]] = {}
    held: dict[str, list[float]] = {}  # block durations per name
    stalled: dict[str, float] = {}
    monitored = False
    wall = 0.0
    for trace in traces:
        tree = as_tree(trace)
        roots = set(tree.roots)
        if loop_monitor(tree.trace) is not None:
            monitored = True
        for index, span in enumerate(tree.spans):
            name = tree.name(index)
            duration = tree.duration(index)
            durations.setdefault(name, []).append(duration)
            if span_status(span) == "error":
                errors[name] = errors.get(name, 0) + 1
            if index in roots:
                wall += duration
            own = busy_ms(span)
            if own is not None:
                busy.setdefault(name, []).append(own)
                monitored = True
            if "events" in span:  # most spans have none: skip the event scan
                found = blocks(span)
                if found:
                    held.setdefault(name, []).extend(block.duration_ms for block in found)
                    monitored = True
            waited = stalled_ms(span)
            if waited is not None:
                stalled[name] = stalled.get(name, 0.0) + waited
                monitored = True
    rows: list[SpanStats] = []
    for name, values in durations.items():
        values.sort()
        total = sum(values)
        failed = errors.get(name, 0)
        row: SpanStats = {
            "name": name,
            "count": len(values),
            "p50_ms": percentile(values, 0.50),
            "p95_ms": percentile(values, 0.95),
            "p99_ms": percentile(values, 0.99),
            "max_ms": values[-1],
            "total_ms": total,
            "errors": failed,
            "error_rate": failed / len(values),
            "share": total / wall if wall > 0 else 0.0,
        }
        if monitored:
            own_times = sorted(busy.get(name, ()))
            if own_times:  # spans that ran off the loop (worker threads) have none
                row["busy_p50_ms"] = percentile(own_times, 0.50)
                row["busy_p95_ms"] = percentile(own_times, 0.95)
            row["blocks"] = len(held.get(name, ()))
            row["blocked_ms"] = sum(held.get(name, ()))
            row["stalled_ms"] = stalled.get(name, 0.0)
        rows.append(row)
    rows.sort(key=lambda row: (-row["total_ms"], row["name"]))
    return rows


def stats_table(rows: Sequence[SpanStats], *, max_name: int = 48) -> str:
    """``rows`` as an aligned text table (names cut at ``max_name`` characters).

    Example:
        >>> print(stats_table([{"name": "db", "count": 2, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 2.0,
        ...     "max_ms": 2.0, "total_ms": 3.0, "errors": 0, "error_rate": 0.0, "share": 0.5}]))
        name  count     p50     p95     p99     max  errors  share
        db        2  1.0 ms  2.0 ms  2.0 ms  2.0 ms      0%    50%
    """
    header: tuple[str, ...] = ("name", "count", "p50", "p95", "p99", "max", "errors", "share")
    loop = any("blocks" in row for row in rows)
    if loop:
        header += ("busy p50", "busy p95", "blocks", "blocked", "stalled")
    table = [header]
    for row in rows:
        name = printable(row["name"])
        if len(name) > max_name:
            name = name[: max_name - 1] + "…"
        line: tuple[str, ...] = (
            name,
            str(row["count"]),
            format_ms(row["p50_ms"]),
            format_ms(row["p95_ms"]),
            format_ms(row["p99_ms"]),
            format_ms(row["max_ms"]),
            _percent(row["error_rate"]),
            _percent(row["share"]),
        )
        if loop:
            held = row.get("blocks", 0)
            line += (
                format_ms(row["busy_p50_ms"]) if "busy_p50_ms" in row else "–",
                format_ms(row["busy_p95_ms"]) if "busy_p95_ms" in row else "–",
                str(held),
                format_ms(row.get("blocked_ms", 0.0)) if held else "–",
                format_ms(row.get("stalled_ms", 0.0)) if row.get("stalled_ms") else "–",
            )
        table.append(line)
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    lines = []
    for line in table:
        cells = []
        for column, cell in enumerate(line):
            cells.append(cell.rjust(widths[column]) if column else cell.ljust(widths[column]))
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _percent(value: float) -> str:
    if 0 < value < 0.01:
        return "<1%"
    return f"{value:.0%}"
