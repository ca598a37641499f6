"""The shape every view shares: a trace's spans as a tree, walked without recursion.

Wire-format traces (``Trace.to_dict()``, lines of a ``FileExporter`` file) are
flat lists of spans linked by ``parent_id``. :class:`TraceTree` indexes one
trace: children per span sorted by start time, and the roots. A span whose
parent is not in the trace (a remote parent, a dropped span, a follow-up
record) is a root; so is every span of a malformed parent cycle, so a walk
always visits every span exactly once.

Every traversal here is iterative: a trace of 10,000 nested spans is as easy
as a flat one (Python's recursion limit is about 1,000 frames).

Example:
    >>> tree = TraceTree({"trace_id": "t", "spans": [
    ...     {"span_id": "a", "name": "root", "duration_ms": 3.0},
    ...     {"span_id": "b", "parent_id": "a", "name": "child", "duration_ms": 1.0}]})
    >>> [(tree.name(i), depth) for i, depth in tree.preorder()]
    [('root', 0), ('child', 1)]
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from .._core.clock import parse_rfc3339

#: Span statuses in the wire format, in the order views rank them (worst last).
STATUSES = ("ok", "cancelled", "unfinished", "error")

Span = Mapping[str, Any]
TraceDict = Mapping[str, Any]


def span_name(span: Span) -> str:
    """The span's name as text (``<unnamed>`` when missing or empty)."""
    name = span.get("name")
    if type(name) is not str:
        name = "<unnamed>" if name is None else str(name)
    return name or "<unnamed>"


def span_status(span: Span) -> str:
    """The span's status; anything unknown counts as ``ok``."""
    status = span.get("status")
    return status if status in STATUSES else "ok"


def duration_ms(span: Span) -> float:
    """The span's duration in milliseconds: ``duration_ms``, else end minus start, else 0."""
    value = span.get("duration_ms")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return max(float(value), 0.0)
    start, end = time_us(span.get("start_time")), time_us(span.get("end_time"))
    if start is not None and end is not None:
        return max(end - start, 0) / 1000.0
    return 0.0


_MINUTES: dict[str, int] = {}


def time_us(value: Any) -> int | None:
    """An RFC 3339 time as unix microseconds, or ``None`` when absent or unreadable.

    Example:
        >>> time_us("2026-11-20T10:00:00.000001Z")
        1795168800000001
    """
    if type(value) is not str:
        return None
    # Fast path for what flowtracker writes ("2026-11-20T10:00:00.000000Z"): a
    # report over 10,000 traces reads tens of thousands of these.
    if len(value) == 27 and value[26] == "Z" and value[19] == "." and value.isascii():
        minute = _MINUTES.get(value[:16])
        if minute is None:
            try:
                minute = parse_rfc3339(value[:16] + ":00Z") // 1000
            except (ValueError, OverflowError):
                return None
            if len(_MINUTES) > 4096:
                _MINUTES.clear()
            _MINUTES[value[:16]] = minute
        seconds, fraction = value[17:19], value[20:26]
        if seconds.isdigit() and fraction.isdigit():
            return minute + int(seconds) * 1_000_000 + int(fraction)
    try:
        return parse_rfc3339(value) // 1000
    except (ValueError, OverflowError):
        return None


def id_key(value: Any) -> Any:
    """A span id usable as a dict key (ids are strings; anything else by its repr)."""
    return value if type(value) is str or value is None else repr(value)


def tags_of(span: Span) -> Mapping[str, Any]:
    """The span's tags, or an empty mapping."""
    tags = span.get("tags")
    return tags if isinstance(tags, Mapping) else {}


def spans_of(trace: TraceDict) -> list[Span]:
    """The trace's spans that are objects (anything else in the list is ignored)."""
    spans = trace.get("spans")
    if not isinstance(spans, list):
        return []
    return [span for span in spans if isinstance(span, Mapping)]


def trace_id_of(trace: TraceDict) -> str:
    """The trace id as text."""
    value = trace.get("trace_id")
    return value if type(value) is str else str(value)


class TraceTree:
    """One trace indexed as a tree; spans are referred to by position.

    Attributes:
        trace: The trace dict.
        spans: Its spans (objects only), in the trace's order.
        children: Child positions per span, sorted by start time.
        roots: Positions of spans without a parent in the trace, by start time.
        starts: Start per span in unix microseconds (the trace's earliest known
            start when a span's own is unreadable; 0 if none is).
    """

    __slots__ = ("_durations", "children", "roots", "spans", "starts", "trace")

    def __init__(self, trace: TraceDict) -> None:
        self.trace = trace
        spans = self.spans = spans_of(trace)
        raw = [time_us(span.get("start_time")) for span in spans]
        known = [value for value in raw if value is not None]
        fallback = min(known) if known else 0
        self.starts = [fallback if value is None else value for value in raw]
        self._durations: list[float] | None = None
        position: dict[Any, int] = {}
        for index, span in enumerate(spans):
            position.setdefault(id_key(span.get("span_id")), index)  # duplicate id: the first is the parent
        children: list[list[int]] = [[] for _ in spans]
        roots: list[int] = []
        for index, span in enumerate(spans):
            parent = position.get(id_key(span.get("parent_id")))
            if parent is None or parent == index:
                roots.append(index)
            else:
                children[parent].append(index)
        self.children = children
        self.roots = roots
        reached = self._reached()
        if reached < len(spans):
            self._break_cycles()
        order = self.starts
        for kids in children:
            if len(kids) > 1:
                kids.sort(key=order.__getitem__)
        self.roots.sort(key=order.__getitem__)

    def _reached(self) -> int:
        seen = 0
        stack = list(self.roots)
        children = self.children
        while stack:
            index = stack.pop()
            seen += 1
            stack.extend(children[index])
        return seen

    def _break_cycles(self) -> None:
        # Spans unreachable from a root sit on a parent cycle (a -> b -> a):
        # detach the earliest span of each such group and make it a root.
        seen = [False] * len(self.spans)
        stack = list(self.roots)
        while stack:
            index = stack.pop()
            seen[index] = True
            stack.extend(self.children[index])
        parents = self.parent_of()
        for index in sorted(range(len(self.spans)), key=self.starts.__getitem__):
            if seen[index]:
                continue
            self.children[parents[index]].remove(index)
            self.roots.append(index)
            stack = [index]
            while stack:
                node = stack.pop()
                seen[node] = True
                stack.extend(kid for kid in self.children[node] if not seen[kid])

    def name(self, index: int) -> str:
        """The name of the span at ``index``."""
        return span_name(self.spans[index])

    def duration(self, index: int) -> float:
        """The duration in ms of the span at ``index``."""
        if self._durations is None:
            self._durations = [duration_ms(span) for span in self.spans]
        return self._durations[index]

    def preorder(self) -> Iterator[tuple[int, int]]:
        """``(position, depth)`` of every span, parents first, siblings by start time."""
        children = self.children
        stack = [(index, 0) for index in reversed(self.roots)]
        while stack:
            index, depth = stack.pop()
            yield index, depth
            kids = children[index]
            if kids:
                stack.extend((kid, depth + 1) for kid in reversed(kids))

    def parent_of(self) -> list[int]:
        """The parent position of every span (-1 for roots)."""
        parents = [-1] * len(self.spans)
        for index, kids in enumerate(self.children):
            for kid in kids:
                parents[kid] = index
        return parents

    def start_us(self) -> int:
        """The earliest span start, in unix microseconds (0 if none is known)."""
        return min(self.starts) if self.starts else 0

    def wall_ms(self) -> float:
        """Milliseconds from the first span's start to the last span's end."""
        if not self.spans:
            return 0.0
        first = min(self.starts)
        last = max(start + self.duration(i) * 1000.0 for i, start in enumerate(self.starts))
        return (last - first) / 1000.0

    def status(self) -> str:
        """The worst status of any span (error > unfinished > cancelled > ok)."""
        worst = 0
        for span in self.spans:
            worst = max(worst, STATUSES.index(span_status(span)))
        return STATUSES[worst]


def as_tree(trace: TraceDict | TraceTree) -> TraceTree:
    """``trace`` indexed (views accept already indexed traces, so a report indexes each once)."""
    return trace if isinstance(trace, TraceTree) else TraceTree(trace)


def plural(count: int, noun: str) -> str:
    """``count`` and ``noun``, plural unless it is one: what every count shown to people goes through.

    Example:
        >>> plural(1, "span"), plural(2, "trace record"), plural(0, "request")
        ('1 span', '2 trace records', '0 requests')
    """
    return f"{count} {noun}{'' if count == 1 else 's'}"


def format_ms(value: float) -> str:
    """A duration for people: ``0.042 ms``, ``12.3 ms``, ``1.23 s``, ``2m 5.0s``.

    Example:
        >>> format_ms(0.0421), format_ms(12.345), format_ms(1234.5), format_ms(125000)
        ('0.042 ms', '12.3 ms', '1.23 s', '2m 5.0s')
    """
    if value < 1.0:
        return f"{value:.3f} ms"
    if value < 1000.0:
        return f"{value:.1f} ms"
    if value < 60_000.0:
        return f"{value / 1000.0:.2f} s"
    minutes, seconds = divmod(value / 1000.0, 60.0)
    return f"{int(minutes)}m {seconds:.1f}s"


def number(value: float) -> str:
    """A weight as a short decimal: at most 3 decimals, no trailing zeros.

    Example:
        >>> number(50.0), number(0.12345), number(1e-9)
        ('50', '0.123', '0')
    """
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def printable(text: str) -> str:
    """``text`` with control characters escaped, so it stays on one terminal line.

    Example:
        >>> printable("a\\nb\\x1b[2J")
        'a\\\\nb\\\\x1b[2J'
    """
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char.isprintable() or char == " ":
            out.append(char)
        else:
            out.append(repr(char)[1:-1])
    return "".join(out)
