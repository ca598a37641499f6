"""Blocks on a loop whose callbacks cannot be timed one by one (uvloop): the heartbeat runs late.

uvloop runs its callbacks in C, where no Python hook sees one start or end.
There a block is found from outside: the :class:`~._heartbeat.Heartbeat` is
overdue, so something holds the loop. The watchdog, looking at
:class:`StallWatch` as at any block finder (``started`` is the last
heartbeat), samples the loop thread's stack and the span current in the
running task while it is held. When the heartbeat runs again, the stall is
over: if it lasted ``threshold_ns`` or more it is a block, with the
sample's span and stack, and goes to the :class:`~._blocks.BlockRecord`.

Its times are the heartbeat's: the block starts at the last beat (the loop
was free then; at most one heartbeat interval early) and ends at the next,
unless a span of another task ends first. The heartbeat runs after the
callbacks that were ready behind the blocker (a task it woke, I/O), so the
first span that ends on the loop from another task than the blocker's marks
the block's end: that task ran after the blocker.

As the core's switch observer for its loop (see ``_observers``),
:class:`StallWatch` also pins the block on the guilty span when that span
ends while the loop is still held (it ends in the blocking callback, and its
trace may be assembled before the next heartbeat), as the callback timer
does on an asyncio loop. No busy time is recorded: that needs a hook on
every callback.

Example:
    >>> import asyncio, time, flowtracker as ft
    >>> from flowtracker.loop_monitor._blocks import BlockRecord
    >>> from flowtracker.loop_monitor._heartbeat import Heartbeat
    >>> async def main():
    ...     loop = asyncio.get_running_loop()
    ...     heartbeat = Heartbeat(loop, 1_000_000)
    ...     watch = StallWatch(heartbeat, 30_000_000, BlockRecord())
    ...     heartbeat.start()
    ...     await asyncio.sleep(0.01)
    ...     time.sleep(0.05)            # the heartbeat is 50 ms late
    ...     await asyncio.sleep(0.01)
    ...     heartbeat.stop()
    ...     return watch.blocks.blocks, watch.blocks.outside
    >>> asyncio.run(main())
    (1, 1)
"""

from __future__ import annotations

import asyncio
import threading
from types import FrameType
from typing import TYPE_CHECKING

from .._core import Span
from .._core import clock as _clock
from .._wire.names import MONITOR_BLOCKS
from ._blocks import NOT_SAMPLED, Block, BlockRecord, pin
from ._heartbeat import Heartbeat
from ._observers import mark_off_loop, mark_watched
from ._tasks import loop_traces

if TYPE_CHECKING:
    from ._watchdog import Sample

__all__ = ("StallWatch",)

_get_ident = threading.get_ident


class StallWatch:
    """Finds the blocks of ``heartbeat``'s loop from the heartbeat's delays and the watchdog's samples.

    Args:
        heartbeat: The loop's heartbeat; its ``on_beat`` is set to this watch's.
        threshold_ns: A stall this long or longer is a block.
        blocks: Where blocks go.
    """

    def __init__(self, heartbeat: Heartbeat, threshold_ns: int, blocks: BlockRecord) -> None:
        self.heartbeat = heartbeat
        self.loop = heartbeat.loop
        self.threshold_ns = threshold_ns
        self.blocks = blocks
        # Written by the watchdog (one assignment, read from any thread): its
        # last look at the stall in progress, and when it first saw the blocker.
        self._look: tuple[Sample, int] | None = None
        # Loop thread only: when the stall in progress ended (0: not known yet),
        # and the stall whose block is on its span already (its start).
        self._end = 0
        self._pinned = 0
        # Written by the watchdog: the last stall during which it saw the loop run no callback.
        self._idle = 0
        heartbeat.on_beat = self.beat
        blocks.pending = self.pending

    @property
    def started(self) -> int:
        """The last heartbeat: the loop has been held since then, if the next one is overdue."""
        return self.heartbeat.last_beat

    @property
    def thread(self) -> int | None:
        """The loop's thread id (known from the first heartbeat)."""
        return self.heartbeat.thread

    @thread.setter
    def thread(self, thread: int | None) -> None:
        self.heartbeat.thread = thread

    @property
    def idle_frame(self) -> FrameType | None:
        """The frame that calls the heartbeat: where the loop thread is while it runs no callback."""
        return self.heartbeat.base_frame

    def offer(self, sample: Sample) -> None:
        """The watchdog's look at the stall in progress (its thread).

        Once a look found a span, only a look at the same task replaces it
        (the stack follows the blocker): the blocker's callback may be over
        while the heartbeat still waits its turn, and another task's short
        callback (one the blocker woke) is not the culprit. (The watchdog
        never looks while the loop runs no callback: see ``idle_frame``.)
        """
        look = self._look
        if look is None or look[0].started != sample.started:
            self._look = (sample, sample.at)
        elif sample.task is look[0].task:
            self._look = (sample, look[1])
        elif look[0].span is None:  # a span found at last: the blocker, seen first now
            self._look = (sample, sample.at)

    def idle(self, started: int) -> None:
        """The watchdog saw the loop thread run no callback during the stall since ``started``.

        Such a stall, with no look at running code, is no block: the
        heartbeat ran late while the loop waited (the process was not
        scheduled, or a timer fired late). It shows in the lag figures.
        """
        self._idle = started

    def pending(self) -> Block | None:
        """The stall in progress as a block, once its end is known (any thread; ``None`` otherwise).

        Its end is known before the next heartbeat adds it (a span of another
        task ended), and a trace may complete on another thread meanwhile.
        """
        end, look, started = self._end, self._look, self.heartbeat.last_beat
        if not end or look is None or look[0].started != started or end - started < self.threshold_ns:
            return None
        return self._block(look, started, end)

    def _block(self, look: tuple[Sample, int], started: int, end: int) -> Block:
        sample, first = look
        return Block(started, end - started, sample.span, sample.stack, sample.traces, (first, sample.at))

    # -- the switch observer ---------------------------------------------------

    def switched(self, span: Span | None) -> None:
        """Nothing to do: without a hook on each callback there is no busy time to split."""

    def closing(self, span: Span) -> None:
        """``span`` ends: its trace was watched; while the loop is held, the block may be pinned or over.

        A span that ends on another thread ran there (a worker thread): it is
        marked so, and the loop's blocks never stall it.
        """
        thread = self.heartbeat.thread
        if _get_ident() != thread:
            if thread is not None:
                mark_off_loop(span)
            return
        if span.parent is None:
            mark_watched(span, MONITOR_BLOCKS)
        look = self._look
        if look is None:
            return
        sample = look[0]
        started = self.heartbeat.last_beat
        if sample.started != started:
            return
        now = _clock.now_ns()
        if span is sample.span:
            if self._pinned != started and now - started >= self.threshold_ns:
                self._pinned = started
                pin(span, started, now - started, sample.stack)
        elif not self._end and asyncio.current_task(self.loop) is not sample.task:
            self._end = now  # another task runs: the blocker's callback is over

    # -- the heartbeat -------------------------------------------------------------

    def beat(self, now: int) -> None:
        """The heartbeat runs (loop thread): the stall since the last one, if long enough, was a block."""
        started = self.heartbeat.last_beat
        end = self._end or now
        look = self._look
        duration = end - started
        if duration >= self.threshold_ns and started:
            if look is not None and look[0].started == started:
                self.blocks.add(self._block(look, started, end), pinned=self._pinned == started)
            elif self._idle != started:  # the watchdog never got to look (C code holding the GIL)
                block = Block(started, duration, None, NOT_SAMPLED, loop_traces(self.loop))
                self.blocks.add(block, pinned=False)
        # Cleared after the block is added: pending() must see it in one place or the other.
        self._look = None
        self._end = 0
