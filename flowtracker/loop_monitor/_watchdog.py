"""The watchdog: a daemon thread that samples the loop thread's stack while one callback holds the loop.

The loop thread cannot say where it is stuck while it is stuck; another
thread can. The watchdog looks at the :class:`~._callbacks.CallbackTimer` a few
times per threshold (each look is a few attribute reads: the running
callback's start, ``started``, and the loop's thread). Only when one callback
has run for half the threshold does it take a :class:`Sample`: the loop
thread's Python stack (``sys._current_frames()``, at most
:data:`~._blocks.MAX_FRAMES` frames formatted), which holds the GIL for
microseconds. The loop thread reads the sample when the callback (or a span
in it) ends, and names the span whose code was running at ``Sample.at``.

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

import sys
import threading
from collections.abc import Callable
from typing import NamedTuple

from .._core import clock as _clock
from ._blocks import format_stack
from ._callbacks import CallbackTimer

__all__ = ("Sample", "Watchdog")


class Sample(NamedTuple):
    """The watchdog's look at a callback that runs long: which one, when, where."""

    #: The callback's start (``CallbackTimer.started`` when the watchdog looked).
    started: int
    #: When the watchdog looked: the loop thread finds whose code ran then.
    at: int
    stack: str


class Watchdog:
    """Samples the stack of ``timer``'s loop thread while one of its callbacks runs long.

    Args:
        timer: The callback timer of the watched loop (read: ``started``,
            ``thread``, ``threshold_ns``; written: ``sample``).
        on_closed: Called (on the watchdog thread) once the loop is closed.
    """

    def __init__(self, timer: CallbackTimer, on_closed: Callable[[], None]) -> None:
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
        """Looks at the loop a few times per threshold; samples the stack of a long callback."""
        wait = self._wake.wait
        timer = self.timer
        loop = timer.loop
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
            stack = format_stack(frame)
            if timer.started == started:
                timer.sample = Sample(started, at, stack)
