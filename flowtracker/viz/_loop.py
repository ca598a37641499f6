"""What an event-loop monitor wrote on a trace and its spans, read once for every view.

While ``ft.monitor_event_loop()`` runs, a trace carries ``loop_monitor``
(``"full"`` on an asyncio loop, ``"blocks"`` where only blocks are watched,
uvloop) and its spans carry optional fields: ``busy_ms`` (the span's own
time running on the loop), ``event_loop.blocked`` events (``attributes``:
``duration_ms`` and ``stack``, ``file:line in function`` lines, innermost
first), and ``stalled_ms`` with ``event_loop.stalled`` events (the span waited
while another span's code blocked the loop: ``duration_ms``, ``by_trace_id``,
``by_span_id``, ``by_name``, ``at``). The tree, the statistics, the Chrome
trace and the report read them through these helpers, so a malformed value
is ignored the same way everywhere and a trace without them looks as before.

Example:
    >>> span = {"busy_ms": 301.5, "events": [{"name": "event_loop.blocked",
    ...     "time": "2026-11-20T10:00:00.010000Z",
    ...     "attributes": {"duration_ms": 300.2, "stack": "/srv/app/views.py:41 in report"}}]}
    >>> busy_ms(span), [(b.duration_ms, b.frames) for b in blocks(span)]
    (301.5, [(300.2, ('/srv/app/views.py:41 in report',))])
    >>> short_frame("/srv/app/views.py:41 in report")
    'app/views.py:41 in report'
    >>> waited = {"stalled_ms": 300.0, "events": [{"name": "event_loop.stalled",
    ...     "time": "2026-11-20T10:00:00.010000Z", "attributes": {"duration_ms": 300.0,
    ...     "by_name": "GET /report › render_pdf", "at": "/srv/app.py:107 in render_pdf"}}]}
    >>> stalled_ms(waited), stalls(waited)[0].by_name, line_of("/srv/app.py:107 in render_pdf")
    (300.0, 'GET /report › render_pdf', 'app.py:107')
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from .._wire.frames import is_library_frame as is_library_frame
from .._wire.names import BLOCKED_EVENT as BLOCKED_EVENT
from .._wire.names import MONITOR_BLOCKS, MONITOR_FULL
from .._wire.names import STALLED_EVENT as STALLED_EVENT


class Block(NamedTuple):
    """One ``event_loop.blocked`` event of a span."""

    #: When the block began, as written (RFC 3339), or ``None``.
    time: str | None
    #: How long the loop was held, in ms (0 when unreadable).
    duration_ms: float
    #: ``file:line in function`` lines, innermost first (may be empty).
    frames: tuple[str, ...]


class Stall(NamedTuple):
    """One ``event_loop.stalled`` event of a span: it waited while another span's code held the loop."""

    #: When the stall began for this span, as written (RFC 3339), or ``None``.
    time: str | None
    #: How long it waited, in ms (0 when unreadable).
    duration_ms: float
    #: The guilty span's trace and span ids, and its name (``root › span``);
    #: ``None`` for a block outside any span.
    by_trace_id: str | None
    by_span_id: str | None
    by_name: str | None
    #: The guilty code's innermost frame of the user's own code, or ``None``.
    at: str | None


def busy_ms(span: Mapping[str, Any]) -> float | None:
    """The span's ``busy_ms`` as a finite, non-negative float, or ``None`` when absent or unreadable."""
    return _milliseconds(span.get("busy_ms"))


def _milliseconds(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return max(float(value), 0.0)
    return None


def blocks(span: Mapping[str, Any]) -> list[Block]:
    """The span's ``event_loop.blocked`` events, in the order written."""
    out: list[Block] = []
    for time, duration, attributes in _events(span, BLOCKED_EVENT):
        stack = attributes.get("stack")
        frames = tuple(line for line in stack.splitlines() if line.strip()) if isinstance(stack, str) else ()
        out.append(Block(time, duration, frames))
    return out


def _events(span: Mapping[str, Any], name: str) -> list[tuple[str | None, float, Mapping[str, Any]]]:
    """``(time, duration_ms, attributes)`` of the span's events called ``name``, malformed parts
    read as absent (``None``, 0, ``{}``)."""
    events = span.get("events")
    if not isinstance(events, list):
        return []
    out: list[tuple[str | None, float, Mapping[str, Any]]] = []
    for event in events:
        if not isinstance(event, Mapping) or event.get("name") != name:
            continue
        attributes = event.get("attributes")
        attributes = attributes if isinstance(attributes, Mapping) else {}
        time = event.get("time")
        duration = _milliseconds(attributes.get("duration_ms")) or 0.0
        out.append((time if isinstance(time, str) else None, duration, attributes))
    return out


def stalled_ms(span: Mapping[str, Any]) -> float | None:
    """The span's ``stalled_ms`` as a finite, non-negative float, or ``None`` when absent or unreadable."""
    return _milliseconds(span.get("stalled_ms"))


def stalls(span: Mapping[str, Any]) -> list[Stall]:
    """The span's ``event_loop.stalled`` events, the longest first."""
    keys = ("by_trace_id", "by_span_id", "by_name", "at")
    out = [
        Stall(time, duration, *(_text(attributes.get(key)) for key in keys))
        for time, duration, attributes in _events(span, STALLED_EVENT)
    ]
    out.sort(key=lambda stall: -stall.duration_ms)
    return out


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def loop_monitor(trace: Mapping[str, Any]) -> str | None:
    """The trace's ``loop_monitor`` mode (``"full"`` or ``"blocks"``), or ``None``: not watched.

    Example:
        >>> loop_monitor({"loop_monitor": "blocks"}), loop_monitor({"loop_monitor": 3}), loop_monitor({})
        ('blocks', None, None)
    """
    mode = trace.get("loop_monitor")
    return mode if mode in (MONITOR_FULL, MONITOR_BLOCKS) else None


def has_loop_data(span: Mapping[str, Any]) -> bool:
    """Whether a loop monitor wrote on this span (``busy_ms``, a block or a stall)."""
    return busy_ms(span) is not None or bool(blocks(span)) or stalled_ms(span) is not None


def own_frame(block: Block) -> int:
    """Position in ``block.frames`` of the innermost frame of the user's own code (-1 if none).

    A ``requests.get`` blocks deep in ``socket.py``; the line to change is the
    innermost frame outside the standard library, installed packages and
    flowtracker (:func:`~flowtracker._wire.frames.is_library_frame`).
    """
    return next((index for index, frame in enumerate(block.frames) if not is_library_frame(frame)), -1)


def culprit(block: Block) -> tuple[str, str | None]:
    """The innermost frame, and the innermost frame of the user's own code when that is a different one.

    Example:
        >>> culprit(Block(None, 1.0, ("/usr/lib/python3.12/socket.py:720 in readinto",
        ...     "/venv/lib/python3.12/site-packages/requests/api.py:73 in get",
        ...     "/srv/app/rates.py:18 in fetch")))
        ('/usr/lib/python3.12/socket.py:720 in readinto', '/srv/app/rates.py:18 in fetch')
    """
    if not block.frames:
        return "", None
    own = own_frame(block)
    return block.frames[0], block.frames[own] if own > 0 else None


def short_frame(frame: str) -> str:
    """A frame with its file cut to the last two path parts: ``app/views.py:41 in report``."""
    location, sep, function = frame.rpartition(" in ")
    if not sep:
        location, function = frame, ""
    path, colon, line = location.rpartition(":")
    if not colon or not line.isdigit():
        path, line = location, ""
    parts = re.split(r"[/\\]", path)
    short = "/".join(parts[-2:]) if len(parts) > 2 else path
    return short + (f":{line}" if line else "") + (f" in {function}" if sep else "")


def line_of(frame: str) -> str:
    """A frame as ``file:line`` with the file's name only (``app.py:107``), for one-line views."""
    location = frame.rpartition(" in ")[0] or frame
    path, colon, line = location.rpartition(":")
    if not colon or not line.isdigit():
        path, line = location, ""
    name = re.split(r"[/\\]", path)[-1]
    return f"{name}:{line}" if line else name
