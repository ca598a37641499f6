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

How it watches (and why so): every callback of an asyncio loop — task steps,
C-accelerated tasks included, ``TaskGroup`` and anyio tasks, future
callbacks, timers, I/O readiness — runs through ``asyncio.Handle._run``.
While at least one monitor runs, that method is replaced by a wrapper that
looks the handle's loop up in a dict and runs unwatched loops' callbacks
straight through (other loops, like the default tracker's private one, are
not measured and get no events). Which span runs when is learnt from the
core's switch observer (``flowtracker._core.set_switch_observer``), installed
only while a monitor runs: with none running, nothing is patched and the span
hot path is the plain one. ``stop()`` (or the last monitor stopping) puts
both back.

Loops that do not run their callbacks through ``asyncio.Handle`` (uvloop) cannot be
watched: starting a monitor on one warns, and its ``stats.watching`` is False.

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

import asyncio
import logging
import sys
import threading
import time
import warnings
from asyncio import events
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, NamedTuple

from ._core import Span, current_span, set_switch_observer
from ._core import clock as _clock

__all__ = ("MAX_FRAMES", "LoopMonitor", "LoopMonitorStats", "monitor_event_loop", "monitor_threshold")

logger = logging.getLogger("flowtracker.loop_monitor")

#: Frames kept in a block's ``stack``, innermost first.
MAX_FRAMES = 20
#: The name of the event a block adds to the span that blocked.
BLOCKED_EVENT = "event_loop.blocked"
#: Seconds during which a block outside any span is logged once per code location.
LOG_INTERVAL = 60.0
_LOG_LOCATIONS = 1024  # locations remembered for LOG_INTERVAL (bounded memory)

_THIS_FILE = __file__

# loop -> its monitor, and loop thread id -> its monitor. Written under
# _lock, read lock-free on the hot path (dict reads are atomic under the GIL).
_by_loop: dict[asyncio.AbstractEventLoop, LoopMonitor] = {}
_by_thread: dict[int, LoopMonitor] = {}
_lock = threading.Lock()
_plain_run: Callable[[events.Handle], None] | None = None

_get_ident = threading.get_ident
# The span clock, as a global (cheaper than the module attribute on the hot
# path); refreshed when ``flowtracker.testing`` swaps it.
_now = _clock.now_ns


def _refresh_clock() -> None:
    global _now
    _now = _clock.now_ns


_clock.on_change(_refresh_clock)


class LoopMonitorStats(NamedTuple):
    """An immutable snapshot of what a :class:`LoopMonitor` saw.

    Example:
        >>> LoopMonitorStats(True, 0, 0.0, 0, 0.0, 0.0, 0).blocks
        0
    """

    #: False when the loop cannot be watched (uvloop): nothing is recorded.
    watching: bool
    #: Callbacks the loop ran while watched.
    callbacks: int
    #: Milliseconds the loop spent running them.
    busy_ms: float
    #: Callbacks that held the loop for at least ``block_threshold``.
    blocks: int
    #: Their total, in milliseconds.
    blocked_ms: float
    #: The longest one, in milliseconds.
    max_block_ms: float
    #: Blocks while no span's code was running (logged, not in any trace).
    blocks_outside_spans: int


class _Sample(NamedTuple):
    """The watchdog's look at a callback that runs long: which one, whose code, where."""

    started: int
    span: Span | None
    stack: str


class LoopMonitor:
    """Watches one event loop; made by :func:`monitor_event_loop`.

    A context manager (``with`` and ``async with``) that stops on exit.

    Example:
        >>> import asyncio, flowtracker as ft
        >>> async def main():
        ...     async with ft.monitor_event_loop(0.1) as monitor:
        ...         await asyncio.sleep(0)
        ...         async with ft.span("work"):
        ...             sum(range(1000))
        ...         await asyncio.sleep(0)  # a callback is counted once it has ended
        ...     return monitor.stats.callbacks > 0
        >>> asyncio.run(main())
        True
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, block_threshold: float) -> None:
        self.loop = loop
        self.block_threshold = block_threshold
        self._threshold_ns = int(block_threshold * 1e9)
        self._watching = isinstance(loop, asyncio.BaseEventLoop)
        self._running = False
        self._thread: int | None = None
        # Written by the loop thread, read by the watchdog: the running
        # callback's start (0: none), the span whose code runs now and since when.
        self._started = 0
        self._span: Span | None = None
        self._since = 0
        self._stack: list[int] = []  # parked time of _span's ancestors (see switched())
        self._active = 0  # the loop thread's id while it runs a callback, else 0
        self._sample: _Sample | None = None
        self._pinned = 0  # start of the callback whose block is already on a span
        self._wake = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._logged: dict[str, float] = {}
        # Counters.
        self._callbacks = 0
        self._busy_ns = 0
        self._blocks = 0
        self._blocked_ns = 0
        self._max_block_ns = 0
        self._outside = 0

    # -- public ----------------------------------------------------------------

    @property
    def stats(self) -> LoopMonitorStats:
        """An immutable snapshot of the counters; see :class:`LoopMonitorStats`."""
        return LoopMonitorStats(
            watching=self._watching,
            callbacks=self._callbacks,
            busy_ms=self._busy_ns / 1e6,
            blocks=self._blocks,
            blocked_ms=self._blocked_ns / 1e6,
            max_block_ms=self._max_block_ns / 1e6,
            blocks_outside_spans=self._outside,
        )

    @property
    def running(self) -> bool:
        """True between start and :meth:`stop`."""
        return self._running

    def stop(self) -> None:
        """Stops watching; with no other monitor left, undoes every patch. Idempotent."""
        with _lock:
            if not self._running:
                return
            self._running = False
            if _by_loop.get(self.loop) is self:
                del _by_loop[self.loop]
            if self._thread is not None and _by_thread.get(self._thread) is self:
                del _by_thread[self._thread]
            if not _by_loop:
                _unpatch()
            _observe()
        self._wake.set()
        watchdog = self._watchdog
        if watchdog is not None and watchdog is not threading.current_thread():
            watchdog.join(1.0)

    def __enter__(self) -> LoopMonitor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> LoopMonitor:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"<LoopMonitor {state} threshold={self.block_threshold}s {self.stats}>"

    # -- start -------------------------------------------------------------------

    def _start(self) -> None:
        """Registers this monitor (under ``_lock``) and starts its watchdog."""
        self._running = True
        _by_loop[self.loop] = self
        _patch()
        _observe()
        loop = self.loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._thread = _get_ident()
            _by_thread[self._thread] = self
        else:  # the loop runs (or will run) in another thread: learn which from there
            loop.call_soon_threadsafe(self._bind_thread)
        self._watchdog = threading.Thread(
            target=self._watch, name="flowtracker-loop-watchdog", daemon=True
        )
        self._watchdog.start()

    def _bind_thread(self) -> None:
        with _lock:
            if self._running:
                self._thread = _get_ident()
                _by_thread[self._thread] = self

    # -- on the loop thread: one callback --------------------------------------

    def _run(self, handle: events.Handle) -> None:
        """Runs ``handle`` timed, its time split between the spans whose code ran."""
        span = handle._context.run(current_span)  # type: ignore[attr-defined]
        self._span = span if span is not None and span.recording else None
        start = _now()
        self._since = start
        self._started = start
        self._active = _get_ident()
        try:
            _plain_run(handle)  # type: ignore[misc]
        finally:
            end = _now()
            self._active = 0
            self._started = 0
            self._flush(end)
            self._span = None
            duration = end - start
            self._callbacks += 1
            self._busy_ns += duration
            if duration >= self._threshold_ns:
                self._blocked(start, duration, span)
            elif self._sample is not None:
                self._sample = None

    # How a callback's time is split. ``_span`` is the span whose code runs
    # now, since ``_since``. When a child of it becomes current (entered), the
    # parent's time so far is parked on ``_stack`` instead of being written
    # into its details; when the child ends, the parent resumes with its
    # parked time (``_since`` moved back by it). So a nested ``with`` costs a
    # list append and pop for the parent, and one write for the child; the
    # details of spans still running are written only at the callback's end
    # or at a switch that is not a plain enter/leave (``_flush``).
    #
    # switched() and closing() run for every span on every thread while this
    # monitor is the switch observer: the thread check comes first, and the
    # bookkeeping is inline (each call saved is ~50 ns a span).

    def switched(self, span: Span | None) -> None:
        """The loop thread's current span changed: the time so far was the previous one's."""
        if _get_ident() != self._active:
            return
        current = self._span
        if current is not None and span is not None and span.parent is current and span.recording:
            # A child entered: park the parent's time up to the child's start
            # (read a moment ago by the span itself: no second clock read).
            start = span.start_ns
            if start < self._since:  # a child started earlier, activated only now
                start = _now()
            self._stack.append(start - self._since)
            self._since = start
            self._span = span
            return
        now = _now()
        if current is not None and span is current.parent and self._stack:
            # Back to the parent (deactivate): the child's time is its own.
            details = current.details
            if details is None:
                current.details = {"busy_ns": now - self._since}
            else:
                details["busy_ns"] = details.get("busy_ns", 0) + now - self._since
            self._since = now - self._stack.pop()
            self._span = span
            return
        self._flush(now)
        self._since = now
        self._span = span if span is not None and span.recording else None

    def closing(self, span: Span) -> None:
        """``span`` ends on the loop thread: its busy time (and a block in progress) go on it now."""
        if _get_ident() != self._active:
            return
        now = _now()
        details = span.details
        if span is self._span:
            if details is None:
                span.details = {"busy_ns": now - self._since}
            else:
                details["busy_ns"] = details.get("busy_ns", 0) + now - self._since
            # What runs next is the parent's code: the rest of its `with` block
            # (a span ended while still active hands over at deactivate()).
            parent = span.parent
            if self._stack:  # the parent parked its time when this span started
                self._since = now - self._stack.pop()
                self._span = parent
            else:
                self._since = now
                self._span = (
                    parent if parent is not None and parent.recording and parent.end_ns is None else None
                )
        elif not span.recording:
            return
        elif details is None:  # never current here (a client span): on the loop, 0 ns of its own
            span.details = {"busy_ns": 0}
        elif "busy_ns" not in details:
            details["busy_ns"] = 0
        if self._sample is not None:
            self._pin_if_guilty(span, now)

    def _flush(self, now: int) -> None:
        """Writes the running span's time, and its ancestors' parked time, into their details."""
        span = self._span
        stack = self._stack
        if span is None:
            stack.clear()
            return
        if span.end_ns is None:
            _add_busy(span, now - self._since)
        self._since = now
        ancestor = span.parent
        while stack:  # stack[-1] is the parent's, stack[-2] the grandparent's, ...
            parked = stack.pop()
            if ancestor is None:
                stack.clear()
                break
            if ancestor.end_ns is None:
                _add_busy(ancestor, parked)
            ancestor = ancestor.parent

    def _pin_if_guilty(self, span: Span, now: int) -> None:
        """Pins a block in progress on ``span`` if its code was caught blocking.

        The span blocked the loop in this very callback and ends in it: the
        block goes on it now, while its trace cannot yet be complete (with the
        default tracker, it is assembled on another thread as soon as the span
        ends); ``duration_ms`` is then the block up to the span's end.
        """
        sample = self._sample
        started = self._started
        if (
            sample is not None
            and sample.span is span
            and sample.started == started
            and now - started >= self._threshold_ns
        ):
            self._pinned = started
            _pin(span, started, now - started, sample.stack)

    def _blocked(self, start: int, duration: int, first: Span | None) -> None:
        """A callback held the loop for ``duration`` ns: count it, and pin or log it."""
        self._blocks += 1
        self._blocked_ns += duration
        if duration > self._max_block_ns:
            self._max_block_ns = duration
        sample, self._sample = self._sample, None
        if self._pinned == start:
            return  # already on the span that ended in this callback
        if sample is not None and sample.started == start:
            span, stack = sample.span, sample.stack
        else:  # the watchdog never got to look (C code holding the GIL)
            span = first if first is not None and first.recording else None
            stack = "<not sampled: the loop thread held the GIL for the whole block>"
        if span is None:
            self._outside += 1
            self._log_outside(duration, stack)
            return
        _pin(span, start, duration, stack)

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
        logger.warning(
            "the event loop was blocked for %.1f ms outside any span, at:\n%s", duration / 1e6, stack
        )

    # -- the watchdog thread -------------------------------------------------------

    def _watch(self) -> None:
        """Looks at the loop a few times per threshold; samples the stack of a long callback.

        Each look is a few attribute reads; a sample (``sys._current_frames()``
        and at most :data:`MAX_FRAMES` frames formatted) happens only while a
        callback has run for half the threshold: the GIL is held for microseconds.
        """
        wait = self._wake.wait
        while self._running:
            interval = min(max(self.block_threshold / 4, 0.001), 0.05)
            wait(interval)
            if not self._running:
                return
            if self.loop.is_closed():
                self.stop()
                return
            started = self._started
            thread = self._thread
            if not started or thread is None:
                continue
            if _now() - started < self._threshold_ns // 2:
                continue
            frame = sys._current_frames().get(thread)
            span = self._span
            if frame is None or self._started != started:
                continue
            stack = format_stack(frame)
            if self._started == started:
                self._sample = _Sample(started, span, stack)


class _Dispatch:
    """The switch observer while several monitors run: forwards to the thread's monitor, if any."""

    __slots__ = ()

    def switched(self, span: Span | None) -> None:
        monitor = _by_thread.get(_get_ident())
        if monitor is not None:
            monitor.switched(span)

    def closing(self, span: Span) -> None:
        monitor = _by_thread.get(_get_ident())
        if monitor is not None:
            monitor.closing(span)


def _observe() -> None:
    """Installs the switch observer for the monitors registered now (under ``_lock``).

    One monitor (the common case) observes directly; several share a dispatcher.
    """
    monitors = list(_by_loop.values())
    if not monitors:
        set_switch_observer(None)
    elif len(monitors) == 1:
        set_switch_observer(monitors[0])
    else:
        set_switch_observer(_Dispatch())


def _run_watched(handle: events.Handle) -> None:
    """``asyncio.Handle._run`` while a monitor runs: watched loops' callbacks are timed."""
    monitor = _by_loop.get(handle._loop)  # type: ignore[attr-defined]
    if monitor is None:
        _plain_run(handle)  # type: ignore[misc]
    else:
        monitor._run(handle)


def _patch() -> None:
    """Installs the callback wrapper and the switch observer (under ``_lock``; idempotent)."""
    global _plain_run
    if events.Handle._run is _run_watched:
        return
    # Kept after unpatching: another thread may still be inside _run_watched.
    _plain_run = events.Handle._run
    events.Handle._run = _run_watched  # type: ignore[method-assign,assignment]


def _unpatch() -> None:
    """Puts back what :func:`_patch` changed (under ``_lock``)."""
    if events.Handle._run is _run_watched and _plain_run is not None:
        events.Handle._run = _plain_run  # type: ignore[method-assign,assignment]


def _add_busy(span: Span, ns: int) -> None:
    details = span.details
    if details is None:
        span.details = {"busy_ns": ns}
    else:
        details["busy_ns"] = details.get("busy_ns", 0) + ns


def _pin(span: Span, start: int, duration: int, stack: str) -> None:
    """Adds the ``event_loop.blocked`` event to ``span``, even when it has just ended."""
    details = span.details
    if details is None:
        details = span.details = {}
    events_list: list[tuple[str, int, dict[str, Any]]] = details.setdefault("events", [])
    state = span.trace_state
    if state is not None and len(events_list) >= state.limits.max_events_per_span:
        state.limits.events_dropped += 1
        return
    events_list.append((BLOCKED_EVENT, start, {"duration_ms": duration / 1e6, "stack": stack}))


def format_stack(frame: FrameType | None, limit: int = MAX_FRAMES) -> str:
    """``file:line in function`` lines, innermost first, at most ``limit``.

    One string, innermost line first: the tag-value length limit keeps a
    string's head, so the innermost frames are what it never cuts. The
    monitor's own wrapper frame is left out.

    Example:
        >>> import sys
        >>> format_stack(sys._getframe()).split(" in ")[-1] != ""
        True
    """
    lines: list[str] = []
    while frame is not None and len(lines) < limit:
        code = frame.f_code
        if code.co_filename != _THIS_FILE:
            lines.append(f"{code.co_filename}:{frame.f_lineno} in {code.co_name}")
        frame = frame.f_back
    return "\n".join(lines)


def monitor_event_loop(
    block_threshold: float = 0.1, *, loop: asyncio.AbstractEventLoop | None = None
) -> LoopMonitor:
    """Watches the running event loop (or ``loop``) until :meth:`LoopMonitor.stop`.

    Calling it again for a watched loop returns that loop's monitor with the
    new threshold: a loop is never watched twice.

    Args:
        block_threshold: Seconds one callback may hold the loop before it
            counts as a block and its span gets an ``event_loop.blocked``
            event. Default 0.1.
        loop: The loop to watch. Default: the running loop (a ``RuntimeError``
            without one).

    Returns:
        The loop's :class:`LoopMonitor` (also a context manager, sync and async).

    Example:
        >>> import asyncio, flowtracker as ft
        >>> async def main():
        ...     monitor = ft.monitor_event_loop(block_threshold=0.2)
        ...     again = ft.monitor_event_loop(block_threshold=0.5)
        ...     monitor.stop()
        ...     return again is monitor, monitor.block_threshold
        >>> asyncio.run(main())
        (True, 0.5)
    """
    if block_threshold <= 0:
        raise ValueError(f"block_threshold must be positive, got {block_threshold!r}")
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "monitor_event_loop() needs a running event loop: call it from async code, or pass loop="
            ) from None
    if loop.is_closed():
        raise RuntimeError("monitor_event_loop(): the loop is closed")
    with _lock:
        monitor = _by_loop.get(loop)
        if monitor is not None:
            monitor.block_threshold = block_threshold
            monitor._threshold_ns = int(block_threshold * 1e9)
            return monitor
        monitor = LoopMonitor(loop, block_threshold)
        if monitor._watching:
            monitor._start()
    if not monitor._watching:
        warnings.warn(
            f"flowtracker cannot watch {type(loop).__module__}.{type(loop).__qualname__}: it does not "
            "run its callbacks through asyncio.Handle (uvloop does not). No busy_ms and no "
            "event_loop.blocked events will be recorded; LoopMonitor.stats.watching is False.",
            RuntimeWarning,
            stacklevel=2,
        )
    return monitor


def monitor_threshold(monitor_loop: bool | float) -> float | None:
    """The block threshold an integration's ``monitor_loop=`` option asks for (``None``: off).

    ``True`` is the default threshold (0.1 s), a number is a threshold in seconds.

    Example:
        >>> monitor_threshold(True), monitor_threshold(0.25), monitor_threshold(False)
        (0.1, 0.25, None)
    """
    if monitor_loop is False:
        return None
    if monitor_loop is True:
        return 0.1
    if isinstance(monitor_loop, bool) or not isinstance(monitor_loop, (int, float)) or monitor_loop <= 0:
        raise ValueError(f"monitor_loop must be True, False or a threshold in seconds, got {monitor_loop!r}")
    return float(monitor_loop)
