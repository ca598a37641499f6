"""What an event-loop monitor wrote on a span, read once for every view.

While ``ft.monitor_event_loop()`` runs, spans carry two optional wire fields:
``busy_ms`` (the span's own time running on the loop) and ``event_loop.blocked``
events (``attributes``: ``duration_ms`` and ``stack``, ``file:line in
function`` lines, innermost first). The tree, the statistics, the Chrome trace
and the report read them through these helpers, so a malformed value is
ignored the same way everywhere and a trace without them looks as before.

Example:
    >>> span = {"busy_ms": 301.5, "events": [{"name": "event_loop.blocked",
    ...     "time": "2026-11-20T10:00:00.010000Z",
    ...     "attributes": {"duration_ms": 300.2, "stack": "/srv/app/views.py:41 in report"}}]}
    >>> busy_ms(span), [(b.duration_ms, b.frames) for b in blocks(span)]
    (301.5, [(300.2, ('/srv/app/views.py:41 in report',))])
    >>> short_frame("/srv/app/views.py:41 in report")
    'app/views.py:41 in report'
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from .._wire.frames import is_library_frame as is_library_frame
from .._wire.names import BLOCKED_EVENT as BLOCKED_EVENT


class Block(NamedTuple):
    """One ``event_loop.blocked`` event of a span."""

    #: When the block began, as written (RFC 3339), or ``None``.
    time: str | None
    #: How long the loop was held, in ms (0 when unreadable).
    duration_ms: float
    #: ``file:line in function`` lines, innermost first (may be empty).
    frames: tuple[str, ...]


def busy_ms(span: Mapping[str, Any]) -> float | None:
    """The span's ``busy_ms`` as a finite, non-negative float, or ``None`` when absent or unreadable."""
    return _milliseconds(span.get("busy_ms"))


def _milliseconds(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return max(float(value), 0.0)
    return None


def blocks(span: Mapping[str, Any]) -> list[Block]:
    """The span's ``event_loop.blocked`` events, in the order written."""
    events = span.get("events")
    if not isinstance(events, list):
        return []
    out: list[Block] = []
    for event in events:
        if not isinstance(event, Mapping) or event.get("name") != BLOCKED_EVENT:
            continue
        attributes = event.get("attributes")
        attributes = attributes if isinstance(attributes, Mapping) else {}
        duration = _milliseconds(attributes.get("duration_ms")) or 0.0
        stack = attributes.get("stack")
        frames = tuple(line for line in stack.splitlines() if line.strip()) if isinstance(stack, str) else ()
        time = event.get("time")
        out.append(Block(time if isinstance(time, str) else None, duration, frames))
    return out


def has_loop_data(span: Mapping[str, Any]) -> bool:
    """Whether a loop monitor wrote on this span (``busy_ms`` or a block)."""
    return busy_ms(span) is not None or bool(blocks(span))


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
