"""The execution tree as text, for terminals (``flowtracker tree``).

One line per span, indented by parent, with its duration, its share of the
parent's duration, its own time on the event loop (``busy 12.3 ms``, when a
loop monitor ran), a ``⚠ blocked the loop`` marker with the offending frame on
spans whose code held the loop, a ``⧗ stalled 300.2 ms by GET /report ›
render_pdf (app.py:107)`` marker on spans that waited while another span's
code held it, its status when it is not ``ok`` (errors with type and
message), and tags. The header says whether a loop monitor watched the
trace (``loop monitor: full`` or ``blocks``) and how many blocks it saw, so
"no blocks" reads apart from "not watched". Colour is opt-in (the CLI turns it on for terminals only).
Names and tag values have control characters escaped, so a span name cannot
move the cursor or clear the screen, and every span stays on one line.

Deep nesting is drawn without recursion; past ``max_indent`` levels the
indentation stops growing and each line carries its depth instead, so a trace
nested 10,000 deep prints in linear time and width.

Example:
    >>> trace = {"trace_id": "4bf9", "spans": [
    ...     {"span_id": "a", "name": "GET /", "duration_ms": 200.0},
    ...     {"span_id": "b", "parent_id": "a", "name": "db", "duration_ms": 50.0, "tags": {"rows": 3}}]}
    >>> print(tree_text(trace, header=False))
    GET /  200.0 ms
    └─ db  50.0 ms  25%  rows=3
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

import orjson

from .._graph.model import TraceDict, TraceTree, format_ms, printable, span_status, tags_of, trace_id_of
from ._loop import blocks, busy_ms, culprit, line_of, loop_monitor, short_frame, stalled_ms, stalls

_RESET = "\x1b[0m"
_STYLES = {
    "bold": "\x1b[1m",
    "dim": "\x1b[2m",
    "error": "\x1b[31m",
    "cancelled": "\x1b[33m",
    "unfinished": "\x1b[35m",
    "duration": "\x1b[36m",
    "busy": "\x1b[34m",
    "blocked": "\x1b[1;93m",
    "stalled": "\x1b[95m",
}
_MARKS = {"error": "✗ error", "cancelled": "⊘ cancelled", "unfinished": "◌ unfinished"}
_BARE = re.compile(r"[\w.:/@+-]{1,60}")
#: Longest tag value shown, in characters.
MAX_TAG_VALUE = 60


def tree_text(
    trace: TraceDict,
    *,
    color: bool = False,
    tags: Collection[str] | None = None,
    header: bool = True,
    max_indent: int = 32,
) -> str:
    """The execution tree of one trace (see the module docstring).

    Args:
        trace: A wire-format trace dict.
        color: ANSI colours (errors red, cancellations yellow, ...).
        tags: Tag keys to show; ``None`` (default) shows all, an empty
            collection none.
        header: Start with a line naming the trace (id, service, start, spans).
        max_indent: Depth after which indentation stops growing. Default 32.

    Returns:
        The lines joined by newlines, without a trailing newline.
    """

    def paint(text: str, style: str) -> str:
        return f"{_STYLES[style]}{text}{_RESET}" if color else text

    tree = TraceTree(trace)
    lines: list[str] = []
    if header:
        lines.append(paint(_header(trace, tree), "bold"))
    spans = tree.spans
    children = tree.children
    # (position, depth, guide, is last sibling): guide is what precedes the connector
    stack: list[tuple[int, int, str, bool]] = [
        (root, 0, "", index == len(tree.roots) - 1) for index, root in reversed(list(enumerate(tree.roots)))
    ]
    parents = tree.parent_of()
    while stack:
        index, depth, guide, last = stack.pop()
        span = spans[index]
        connector = "" if depth == 0 else ("└─ " if last else "├─ ")
        if depth > max_indent:
            connector += paint(f"[{depth}] ", "dim")
        parts = [f"{guide}{connector}{printable(tree.name(index))}"]
        duration = tree.duration(index)
        parts.append(paint(format_ms(duration), "duration"))
        parent = parents[index]
        if parent >= 0:
            whole = tree.duration(parent)
            if whole > 0:
                share = duration / whole
                parts.append(paint("<1%" if 0 < share < 0.01 else f"{share:.0%}", "dim"))
        elif span.get("parent_id") is not None:
            parts.append(paint(f"↖ parent {printable(str(span.get('parent_id')))} not in this trace", "dim"))
        if "busy_ms" in span or "events" in span or "stalled_ms" in span:  # loop-monitor data
            busy = busy_ms(span)
            if busy is not None:
                parts.append(paint(f"busy {format_ms(busy)}", "busy"))
            blocked = _blocked_text(span)
            if blocked:
                parts.append(paint(blocked, "blocked"))
            stalled = _stalled_text(span)
            if stalled:
                parts.append(paint(stalled, "stalled"))
        status = span_status(span)
        if status != "ok":
            parts.append(paint(_status_text(span, status), status))
        shown = _tags_text(tags_of(span), tags)
        if shown:
            parts.append(paint(shown, "dim"))
        lines.append("  ".join(parts))
        kids = children[index]
        if kids:
            if depth == 0:
                child_guide = ""
            elif depth >= max_indent:
                child_guide = guide
            else:
                child_guide = guide + ("   " if last else "│  ")
            for position in range(len(kids) - 1, -1, -1):
                stack.append((kids[position], depth + 1, child_guide, position == len(kids) - 1))
    return "\n".join(lines)


def _header(trace: TraceDict, tree: TraceTree) -> str:
    parts = [f"trace {printable(trace_id_of(trace))}"]
    service = trace.get("service")
    if isinstance(service, str):
        parts.append(f"service={printable(service)}")
    first = [start for span in tree.spans if isinstance(start := span.get("start_time"), str)]
    if first:
        parts.append(printable(min(first)))
    parts.append(f"{len(tree.spans)} span{'' if len(tree.spans) == 1 else 's'}")
    for key, label in (("dropped_spans", "dropped"), ("unfinished_spans", "unfinished")):
        value = trace.get(key)
        if isinstance(value, int) and value:
            parts.append(f"{value} {label}")
    if trace.get("follow_up"):
        parts.append("follow-up")
    held = sum(len(blocks(span)) for span in tree.spans if "events" in span)
    mode = loop_monitor(trace)
    if mode is not None:
        parts.append(f"loop monitor: {mode}, {held or 'no'} block{'' if held == 1 else 's'}")
    elif held:
        parts.append(f"{held} loop block{'' if held == 1 else 's'}")
    return "  ".join(parts)


def _blocked_text(span: Mapping[str, Any]) -> str:
    """``⚠ blocked the loop 300.2 ms at app/views.py:41 in report`` (the longest block's frame)."""
    held = blocks(span)
    if not held:
        return ""
    total = sum(block.duration_ms for block in held)
    text = f"⚠ blocked the loop {format_ms(total)}"
    if len(held) > 1:
        text += f" ({len(held)} blocks)"
    innermost, own = culprit(max(held, key=lambda block: block.duration_ms))
    if innermost:
        text += f" at {printable(short_frame(innermost))}"
    if own:
        text += f" ← {printable(short_frame(own))}"
    return text


def _stalled_text(span: Mapping[str, Any]) -> str:
    """``⧗ stalled 300.2 ms by GET /report › render_pdf (app.py:107)``: the longest stall's culprit."""
    total = stalled_ms(span)
    if not total:
        return ""
    text = f"⧗ stalled {format_ms(total)}"
    found = stalls(span)
    if not found:
        return text
    longest = found[0]
    text += f" by {printable(longest.by_name)}" if longest.by_name else " by code outside spans"
    if longest.at:
        text += f" ({printable(line_of(longest.at))})"
    others = len(found) - 1 + _count(span.get("stalled_dropped"))
    if others:
        text += f" and {others} other block{'' if others == 1 else 's'}"
    return text


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _status_text(span: Mapping[str, Any], status: str) -> str:
    text = _MARKS[status]
    error = span.get("error")
    if status == "error" and isinstance(error, Mapping):
        kind, message = error.get("type"), error.get("message")
        detail = ": ".join(str(part) for part in (kind, message) if part not in (None, ""))
        if detail:
            text += " " + _value_text(detail, quote=False)
    return text


def _tags_text(tags: Mapping[str, Any], keys: Collection[str] | None) -> str:
    if not tags or (keys is not None and not keys):
        return ""
    items = tags.items() if keys is None else [(key, tags[key]) for key in keys if key in tags]
    return " ".join(f"{printable(str(key))}={_value_text(value)}" for key, value in items)


def _value_text(value: Any, *, quote: bool = True) -> str:
    if isinstance(value, str):
        text = value if len(value) <= MAX_TAG_VALUE else value[: MAX_TAG_VALUE - 1] + "…"
        if _BARE.fullmatch(text) or not quote:
            return printable(text)
        return printable(orjson.dumps(text).decode())  # quoted, newlines and control characters escaped
    try:
        text = orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        text = repr(value)
    return printable(text if len(text) <= MAX_TAG_VALUE else text[: MAX_TAG_VALUE - 1] + "…")
