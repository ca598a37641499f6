"""Names the wire format gives to what flowtracker records by itself.

Defined once here, in the layer every writer and reader of traces can import:
the event-loop monitor writes them, the views read them.

Example:
    >>> from flowtracker._wire.names import BLOCKED_EVENT
    >>> BLOCKED_EVENT
    'event_loop.blocked'
"""

from __future__ import annotations

__all__ = ("BLOCKED_EVENT", "MONITOR_BLOCKS", "MONITOR_FULL", "STALLED_EVENT")

#: The event the event-loop monitor adds to the span whose code held the loop
#: for at least its ``block_threshold`` (attributes ``duration_ms`` and ``stack``).
BLOCKED_EVENT = "event_loop.blocked"

#: The event on a span that waited while another span's code blocked the loop
#: (attributes ``duration_ms``; ``by_trace_id``, ``by_span_id`` and ``by_name``
#: naming the guilty span, absent for a block outside spans; ``at``, the guilty
#: code's innermost frame of the user's own code). The span's ``stalled_ms``
#: is their sum.
STALLED_EVENT = "event_loop.stalled"

#: A trace's ``loop_monitor`` field when its loop's callbacks were hooked (an
#: asyncio loop): ``busy_ms`` on its spans, blocks, stalled time.
MONITOR_FULL = "full"
#: A trace's ``loop_monitor`` field when only blocks were watched (uvloop): no ``busy_ms``.
MONITOR_BLOCKS = "blocks"
