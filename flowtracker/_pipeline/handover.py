"""The hand-over: traces finished in other threads, on their way to the tracker's loop.

A span may end in any thread, but a trace is assembled and emitted only on
the tracker's loop. A thread whose span completed a trace appends it here
(``deque.append``: one C call, atomic under the GIL) and wakes the loop with
one ``call_soon_threadsafe`` only if no wake-up is outstanding: the loop takes
what waits here with its next batched completion check (:meth:`take`, once
per ``batch_interval``), so a steady trickle of traces from threads wakes it
once per interval, not once per trace.

Bounded: while the loop is busy or blocked, at most ``bound`` traces wait. Past
that a trace is dropped at once: its spans are released (memory does not grow
with the backlog) and it is counted, exactly, as completed and dropped for
every exporter. Drops happen in any thread, so their counter is the one
written under a lock; the lock is taken only on that path, never for a trace
that gets through.

Example:
    >>> from flowtracker._pipeline.handover import HandOver
    >>> handover = HandOver(bound=2, release=lambda root: True)
    >>> handover.dropped, len(handover)
    (0, 0)
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

    from .._core.span import Span


class HandOver:
    """Traces waiting for the tracker's loop, with an exact count of those dropped.

    Args:
        bound: How many traces may wait (the tracker's ``max_queue``).
        release: Forgets a trace that will not be emitted: takes its spans and
            stops tracking it; returns False when it was emitted or dropped
            already (so it is not counted twice).
    """

    def __init__(self, bound: int, release: Callable[[Span], bool]) -> None:
        self.bound = bound
        self._release = release
        self._waiting: collections.deque[Span] = collections.deque()
        self._scheduled = False
        self._lock = threading.Lock()
        #: Traces dropped here (waiting list full, or no loop to take them).
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def put(
        self, root: Span, loop: asyncio.AbstractEventLoop | None, wake: Callable[[], None]
    ) -> None:
        """Queues the trace ``root`` carries for the loop (from any thread) and wakes it once per burst.

        ``loop`` ``None``: the tracker has not started yet; the traces wait
        (bounded) until :meth:`wake_up` is called.
        """
        if len(self._waiting) >= self.bound:
            self.drop(root)
            return
        self._waiting.append(root)
        if loop is not None and not self._scheduled:
            self.wake_up(loop, wake)

    def wake_up(self, loop: asyncio.AbstractEventLoop, wake: Callable[[], None]) -> None:
        """Has ``loop`` call ``wake`` (which has :meth:`take` called soon); drops what waits if it cannot."""
        self._scheduled = True
        try:
            loop.call_soon_threadsafe(wake)
        except RuntimeError:  # the loop was closed under us
            self._scheduled = False
            self.drop_all()

    def take(self) -> list[Span]:
        """What was waiting when called (on the loop's thread).

        Other threads keep appending while this drains: what they add after
        the count is left for the wake-up their ``put()`` schedules, so one take
        holds no more than the bound.
        """
        self._scheduled = False  # reset before counting: a put() from now on schedules again
        waiting = self._waiting
        return [waiting.popleft() for _ in range(len(waiting))]

    def drop(self, root: Span) -> None:
        """Releases the trace ``root`` carries and counts it dropped (from any thread)."""
        if self._release(root):
            with self._lock:
                self.dropped += 1

    def drop_all(self) -> None:
        """Drops everything waiting (the loop is gone)."""
        waiting = self._waiting
        while True:
            try:
                root = waiting.popleft()
            except IndexError:
                return
            self.drop(root)
