"""Names the wire format gives to what flowtracker records by itself.

Defined once here, in the layer every writer and reader of traces can import:
the event-loop monitor writes them, the views read them.

Example:
    >>> from flowtracker._wire.names import BLOCKED_EVENT
    >>> BLOCKED_EVENT
    'event_loop.blocked'
"""

from __future__ import annotations

__all__ = ("BLOCKED_EVENT",)

#: The event the event-loop monitor adds to the span whose code held the loop
#: for at least its ``block_threshold`` (attributes ``duration_ms`` and ``stack``).
BLOCKED_EVENT = "event_loop.blocked"
