"""The watchdog: a daemon thread that samples the loop thread's stack while the loop is held.

The loop thread cannot say where it is stuck while it is stuck; another
thread can. The watchdog looks at its :class:`Target` a few times per
threshold (each look is a few attribute reads: ``started``, the moment since
which the loop has been busy, and the loop's thread). ``started`` is the
running callback's start on an asyncio loop (:class:`~._callbacks.CallbackTimer`),
the last heartbeat elsewhere (:class:`~._stalls.StallWatch`). Only when the
loop has been held for half the threshold does it take a :class:`Sample`:
the loop thread's Python stack (``sys._current_frames()``, at most
:data:`~._blocks.MAX_FRAMES` frames formatted), the span current in the
loop's running task and, once per hold, the traces with a task on the loop
(``_tasks``), which holds the GIL for microseconds. The loop thread reads the sample when the block (or a span
in it) ends.

A watchdog whose loop was closed stops its monitor. It never keeps a
process alive (a daemon thread).

Example:
    >>> import asyncio, time
    >>> from flowtracker.loop_monitor._blocks import BlockRecord
    >>> from flowtracker.loop_monitor._callbacks import CallbackTimer
    >>> loop = asyncio.new_event_loop()
    >>> watchdog = Watchdog(CallbackTimer(loop, 50_000_000, BlockRecord()), on_closed=lambda: None)
    >>> watchdog.start(); watchdog.stop(); loop.close()
    >>> watchdog.alive
    False
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import NamedTuple, Protocol

from .._core import Span
from .._core import clock as _clock
from ._blocks import format_stack
from ._tasks import loop_traces, running_span

__all__ = ("Sample", "Target", "Watchdog")


class Sample(NamedTuple):
    """The watchdog's look at a loop held for long: since when, when, where, and for whom."""

    #: Since when the loop was held (``Target.started`` when the watchdog looked).
    started: int
    #: When the watchdog looked: the loop thread finds whose code ran then.
    at: int
    stack: str
    #: The loop's running task then (``None``: a bare callback, or none).
    task: asyncio.Task[object] | None
    #: The span current in that task (``None``: none, or not recorded).
    span: Span | None
    #: The traces with a task on the loop (see ``_tasks.loop_traces``), taken
    #: at the first look at this hold.
    traces: frozenset[int]


class Target(Protocol):
    """What the watchdog watches: a loop, since when it has been held, and where the sample goes."""

    loop: asyncio.AbstractEventLoop
    #: Nanoseconds one hold may last before it is a block.
    threshold_ns: int

    @property
    def started(self) -> int:
        """Since when the loop has been held (monotonic ns; 0: it is not)."""
        ...

    @property
    def thread(self) -> int | None:
        """The loop's thread id, once known."""
        ...

    @property
    def idle_frame(self) -> FrameType | None:
        """The frame the loop thread shows while it runs no callback, if known: nothing to sample."""
        ...

    def offer(self, sample: Sample) -> None:
        """The watchdog's look at the hold that began at ``sample.started`` (called on its thread)."""
        ...

    def idle(self, started: int) -> None:
        """The watchdog saw the loop thread run no callback (``idle_frame``) during that hold."""
        ...


class Watchdog:
    """Samples the stack of ``timer``'s loop thread while its loop is held for long.

    Args:
        timer: What finds the blocks of the watched loop (read: ``started``,
            ``thread``, ``threshold_ns``; told: ``offer()``).
        on_closed: Called (on the watchdog thread) once the loop is closed.
    """

    def __init__(self, timer: Target, on_closed: Callable[[], None]) -> None:
        self.timer = timer
        self.on_closed = on_closed
        self._running = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        """True while the watchdog thread runs."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> None:
        """Starts the daemon thread."""
        self._running = True
        self._thread = threading.Thread(target=self._watch, name="flowtracker-loop-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ends the thread (waits for it, at most a second, unless called from it). Idempotent."""
        self._running = False
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)

    def _watch(self) -> None:
        """Looks at the loop a few times per threshold; samples the stack of a long hold."""
        wait = self._wake.wait
        timer = self.timer
        loop = timer.loop
        traces: frozenset[int] = frozenset()
        traces_of = 0  # the hold whose traces those are
        while self._running:
            wait(min(max(timer.threshold_ns / 4e9, 0.001), 0.05))
            if not self._running:
                return
            if loop.is_closed():
                self.on_closed()
                return
            started = timer.started
            thread = timer.thread
            if not started or thread is None:
                continue
            at = _clock.now_ns()
            if at - started < timer.threshold_ns // 2:
                continue
            frame = sys._current_frames().get(thread)
            if frame is None or timer.started != started:
                continue
            if frame is timer.idle_frame:
                timer.idle(started)
                continue
            stack = format_stack(frame)
            task, span = running_span(loop)
            if traces_of != started:
                traces, traces_of = loop_traces(loop), started
            if timer.started == started:
                timer.offer(Sample(started, at, stack, task, span, traces))
