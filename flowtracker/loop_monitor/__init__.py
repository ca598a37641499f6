"""The event-loop monitor: busy time per span, and blocking calls pinned on the span that blocked.

``monitor_event_loop()`` watches one asyncio event loop (the running one, or
``loop=``) until ``stop()``:

* every callback the loop runs is timed, and its time is split between the
  spans whose code ran in it, exactly at child-span boundaries: each span
  that ran on the loop gets ``busy_ms``, its own time on the loop (self time:
  its children's own code is theirs), so ``duration_ms`` ≈ own busy time +
  children + waiting;
* a callback that holds the loop for ``block_threshold`` seconds or more is a
  *block*. A watchdog thread samples the loop thread's Python stack while it
  is stuck, and the span whose code was running gets one event,
  ``event_loop.blocked``, with ``duration_ms`` and ``stack`` (``file:line in
  function`` lines, innermost first, at most :data:`MAX_FRAMES`). The
  concurrent requests it stalled get nothing. A block outside any span is
  counted in :attr:`LoopMonitor.stats` and logged (at most once per code
  location per minute).

On a loop that does not run its callbacks through ``asyncio.Handle``
(uvloop), callbacks cannot be timed one by one: there blocks are found by a
heartbeat (a timer that reschedules itself) running late, with the same
watchdog sampling the stack and reading the span current in the loop's
running task. Blocks are pinned the same way; ``busy_ms`` is not recorded
(``stats.busy_time`` is False), and a one-line message says so at start. On
every loop the heartbeat measures the loop's lag (``stats.lag_p50_ms``, ...).

One job per module:

* ``_callbacks``: the hook on ``asyncio.Handle._run`` (installed only while a
  loop is watched) and the busy accounting;
* ``_heartbeat``: the self-rescheduling timer and the loop's lag;
* ``_stalls``: blocks found from the heartbeat where callbacks cannot be hooked;
* ``_observers``: which loop's block finder hears of span switches and ends
  (the core's switch observer);
* ``_watchdog``: the thread that samples the loop thread's stack, and the
  running task's span, while the loop is held;
* ``_blocks``: the block record (counting each block once, the
  ``event_loop.blocked`` event, stack formatting, logging blocks outside spans);
* ``_monitor``: :class:`LoopMonitor`, which puts them together for one
  loop, and :func:`monitor_event_loop`.

With no monitor running, nothing is patched and the span hot path is the
plain one.

Example:
    >>> import asyncio, time, flowtracker as ft
    >>> async def main():
    ...     with ft.monitor_event_loop(block_threshold=0.05) as monitor:
    ...         await asyncio.sleep(0)        # watching starts with the next callback
    ...         async with ft.span("report"):
    ...             time.sleep(0.06)          # blocks the loop: an event on "report"
    ...         await asyncio.sleep(0)
    ...     return monitor.stats.blocks
    >>> asyncio.run(main())
    1
"""

from __future__ import annotations

from .._wire.names import BLOCKED_EVENT as BLOCKED_EVENT
from .._wire.names import STALLED_EVENT as STALLED_EVENT
from ._blocks import LOG_INTERVAL as LOG_INTERVAL
from ._blocks import MAX_FRAMES as MAX_FRAMES
from ._blocks import format_stack as format_stack
from ._monitor import LoopMonitor as LoopMonitor
from ._monitor import LoopMonitorStats as LoopMonitorStats
from ._monitor import monitor_event_loop as monitor_event_loop
from ._monitor import monitor_threshold as monitor_threshold

__all__ = (
    "BLOCKED_EVENT",
    "LOG_INTERVAL",
    "MAX_FRAMES",
    "STALLED_EVENT",
    "LoopMonitor",
    "LoopMonitorStats",
    "format_stack",
    "monitor_event_loop",
    "monitor_threshold",
)
