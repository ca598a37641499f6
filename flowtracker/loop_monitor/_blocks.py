"""The block record: every callback that held the loop too long, counted once, and where it went.

A *block* is one callback that ran for ``block_threshold`` or more. Each one
reaches :meth:`BlockRecord.add` once, when its callback ends, and is counted
there (``blocks``, ``blocked_ms``, ``max_block_ms``). It then goes on the span
whose code was running as one ``event_loop.blocked`` event (:func:`pin`), or,
when no recorded span's code ran, it is counted as outside any span and
logged, at most once per code location per :data:`LOG_INTERVAL`, as one
line: the duration, the innermost frame of the user's code and the innermost
library frame under it (the record's ``stack`` attribute has the rest).

The callback timer may pin a block earlier, while its callback still runs
(the guilty span ends inside it, and its trace may be assembled before the
callback ends); :meth:`BlockRecord.add` is then told so and only counts it.
:meth:`BlockRecord.add` is the one place every block passes, with its start,
duration, span and stack: what needs to know about recent blocks learns it there.
It keeps the last :data:`RECENT_BLOCKS` as :class:`PastBlock` (times, who was
guilty, which traces waited; no reference to any span), from which the
stalled time of a trace is worked out when it completes (``_stalled``). The
record outlives its monitor: traces complete after ``monitor.stop()``.

Example:
    >>> import flowtracker as ft
    >>> record = BlockRecord()
    >>> with ft.span("report") as span:
    ...     record.add(Block(0, 150_000_000, span, "app.py:3 in report"), pinned=False)
    >>> record.blocks, record.max_block_ns, span.events[0][0]
    (1, 150000000, 'event_loop.blocked')
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from types import FrameType
from typing import Any, NamedTuple

from .._core import Span
from .._wire.frames import library_frame, user_frame
from .._wire.names import BLOCKED_EVENT

__all__ = (
    "LOG_INTERVAL",
    "MAX_FRAMES",
    "NOT_SAMPLED",
    "RECENT_BLOCKS",
    "Block",
    "BlockRecord",
    "PastBlock",
    "format_stack",
    "past_block",
    "pin",
)

logger = logging.getLogger("flowtracker.loop_monitor")

#: Frames kept in a block's ``stack``, innermost first.
MAX_FRAMES = 20
#: Seconds during which a block outside any span is logged once per code location.
LOG_INTERVAL = 60.0
_LOG_LOCATIONS = 1024  # locations remembered for LOG_INTERVAL (bounded memory)

#: Blocks each record keeps for the stalled time of traces that complete later.
RECENT_BLOCKS = 256

#: The stack of a block the watchdog never got to look at.
NOT_SAMPLED = "<not sampled: the loop thread held the GIL for the whole block>"

# The monitor's own frames (its Handle._run wrapper) are left out of stacks.
_PACKAGE_DIR = os.path.dirname(__file__)


class Block(NamedTuple):
    """One callback that held the loop for at least the threshold."""

    #: Monotonic ns when the callback started.
    start_ns: int
    #: How long it held the loop, in ns.
    duration_ns: int
    #: The span whose code was running, or ``None`` (no recorded span's code).
    span: Span | None
    #: ``file:line in function`` lines, innermost first (or :data:`NOT_SAMPLED`).
    stack: str
    #: The traces that had a task on the loop while it was held (ids of their
    #: root span; see ``_tasks.loop_traces``): the ones it may have stalled.
    traces: frozenset[int] = frozenset()
    #: The first and last time the watchdog saw the blocker run, where the
    #: start and end are the heartbeat's estimates (uvloop); ``None`` where
    #: they are the callback's own.
    seen: tuple[int, int] | None = None


class PastBlock(NamedTuple):
    """A block as stalled time needs it: times, who was guilty, who waited; no span kept alive."""

    start_ns: int
    end_ns: int
    #: See :attr:`Block.seen`.
    seen: tuple[int, int] | None
    #: See :attr:`Block.traces`.
    traces: frozenset[int]
    #: Span ids of the guilty span and its ancestors: their time in the block is their own.
    guilty: frozenset[int]
    #: The ``id()`` of the guilty trace's root span (0: a block outside spans).
    guilty_trace: int
    #: The ``event_loop.stalled`` attributes but ``duration_ms``: ``by_trace_id``,
    #: ``by_span_id`` and ``by_name`` (absent outside spans) and ``at`` (absent unsampled).
    culprit: dict[str, Any]


def past_block(block: Block) -> PastBlock:
    """What stalled time needs of ``block`` (see :class:`PastBlock`).

    ``by_name`` is the guilty span's name after its trace root's (``GET /report
    › render_pdf``), so a stall is understood without the guilty trace at hand.

    Example:
        >>> import flowtracker as ft
        >>> with ft.span("GET /report"), ft.span("render_pdf") as span:
        ...     past = past_block(Block(0, 300, span, "/srv/app.py:107 in render_pdf"))
        >>> past.culprit["by_name"], past.culprit["at"], len(past.guilty)
        ('GET /report › render_pdf', '/srv/app.py:107 in render_pdf', 2)
    """
    culprit: dict[str, Any] = {}
    span = block.span
    guilty: set[int] = set()
    guilty_trace = 0
    if span is not None and span.span_id:
        guilty_trace = id(span.root or span)
        culprit["by_trace_id"] = span.trace_id
        culprit["by_span_id"] = span.span_id_hex
        top: Span = span
        while True:
            guilty.add(top.span_id)
            parent = top.parent
            if parent is None:
                break
            top = parent
        culprit["by_name"] = span.name if top is span else f"{top.name} › {span.name}"
    if block.stack != NOT_SAMPLED:
        frames = block.stack.split("\n")
        at = user_frame(frames) or frames[0]
        if at:
            culprit["at"] = at
    end = block.start_ns + block.duration_ns
    return PastBlock(block.start_ns, end, block.seen, block.traces, frozenset(guilty), guilty_trace, culprit)


class BlockRecord:
    """The blocks of one monitored loop: counters, and what happened to each block.

    Written on the loop thread only; the counters are read by ``LoopMonitor.stats``.
    """

    def __init__(self) -> None:
        self.blocks = 0
        self.blocked_ns = 0
        self.max_block_ns = 0
        #: Blocks while no recorded span's code was running.
        self.outside = 0
        #: The last :data:`RECENT_BLOCKS` blocks, oldest first (read from any thread).
        self.recent: deque[PastBlock] = deque(maxlen=RECENT_BLOCKS)
        #: A block that is over but not yet added (uvloop: its end is known before
        #: the heartbeat that adds it runs), for traces that complete meanwhile.
        self.pending: Callable[[], Block | None] | None = None
        self._logged: dict[str, float] = {}

    def add(self, block: Block, pinned: bool) -> None:
        """Counts ``block``, then pins it on its span or logs it (``pinned``: already on its span)."""
        duration = block.duration_ns
        self.blocks += 1
        self.blocked_ns += duration
        if duration > self.max_block_ns:
            self.max_block_ns = duration
        self.recent.append(past_block(block))
        if pinned:
            return
        span = block.span
        if span is None or not span.recording:
            self.outside += 1
            self._log_outside(duration, block.stack)
            return
        pin(span, block.start_ns, duration, block.stack)

    def _log_outside(self, duration: int, stack: str) -> None:
        location = stack.split("\n", 1)[0]
        now = time.monotonic()
        last = self._logged.get(location)
        if last is not None and now - last < LOG_INTERVAL:
            return
        if len(self._logged) >= _LOG_LOCATIONS:
            self._logged = {k: v for k, v in self._logged.items() if now - v < LOG_INTERVAL}
            if len(self._logged) >= _LOG_LOCATIONS:
                return
        self._logged[location] = now
        frames = stack.split("\n")
        user, library = user_frame(frames), library_frame(frames)
        where = user or library or stack
        if user is not None and library is not None and frames.index(library) < frames.index(user):
            where += f" (innermost: {library})"
        # One line on stderr; the whole stack rides in the record for handlers that want it.
        logger.warning(
            "the event loop was blocked for %.1f ms outside any span, at %s",
            duration / 1e6,
            where,
            extra={"stack": stack},
        )


def pin(span: Span, start: int, duration: int, stack: str) -> None:
    """Adds the ``event_loop.blocked`` event, timed at the block's start, to ``span``, even when it
    has just ended (the block is learnt when its callback ends)."""
    span.record_event(BLOCKED_EVENT, {"duration_ms": duration / 1e6, "stack": stack}, start, after_end=True)


def format_stack(frame: FrameType | None, limit: int = MAX_FRAMES) -> str:
    """``file:line in function`` lines, innermost first, at most ``limit``.

    One string, innermost line first: the tag-value length limit keeps a
    string's head, so the innermost frames are what it never cuts. The
    monitor's own frames (its callback wrapper) are left out.

    Example:
        >>> import sys
        >>> format_stack(sys._getframe()).split(" in ")[-1] != ""
        True
    """
    lines: list[str] = []
    while frame is not None and len(lines) < limit:
        code = frame.f_code
        if os.path.dirname(code.co_filename) != _PACKAGE_DIR:
            lines.append(f"{code.co_filename}:{frame.f_lineno} in {code.co_name}")
        frame = frame.f_back
    return "\n".join(lines)
