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
context's current span as each callback starts and ends, and from the core's
switch observer (``flowtracker._core.set_switch_observer``), installed only
while a monitor runs: it is told when a span is about to end (its nesting is
worked out then, from its ``start_ns`` and ``parent``) and when
``activate``/``deactivate`` switch spans; entering a span is not reported, so
its way in stays the plain one. With no monitor running, nothing is patched
and the span hot path is the plain one. ``stop()`` (or the last monitor
stopping) puts both back.

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
from ._wire.names import BLOCKED_EVENT as BLOCKED_EVENT

__all__ = ("MAX_FRAMES", "LoopMonitor", "LoopMonitorStats", "monitor_event_loop", "monitor_threshold")

logger = logging.getLogger("flowtracker.loop_monitor")

#: Frames kept in a block's ``stack``, innermost first.
MAX_FRAMES = 20
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
    """The watchdog's look at a callback that runs long: which one, when, where."""

    started: int
    #: When the watchdog looked: the loop thread finds whose code ran then.
    at: int
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
        # Loop thread only (see switched()): the span current since _since, and
        # the time of the ended children of spans still open in this callback.
        self._span: Span | None = None
        self._since = 0
        self._kid_parent: Span | None = None
        self._kid_sum = 0
        self._kids: dict[Span, int] = {}
        self._active = 0  # the loop thread's id while it runs a callback, else 0
        # Written by the loop thread, read by the watchdog: the running
        # callback's start (0: none); written by the watchdog: its last look.
        self._started = 0
        self._sample: _Sample | None = None
        # Loop thread only: the span a sample caught, and the callback whose block is on a span.
        self._culprit: Span | None = None
        self._culprit_of: _Sample | None = None
        self._pinned = 0
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
        context = handle._context  # type: ignore[attr-defined]
        span = context.run(current_span)
        self._span = span if span is not None and span.recording else None
        start = _now()
        self._since = start
        self._started = start
        self._active = _get_ident()
        try:
            _plain_run(handle)  # type: ignore[misc]
        finally:
            end = _now()
            current = context.run(current_span)
            top = self._span
            if (current is top or current is span) and self._kid_parent is None and not self._kids:
                # The common callback: one span's code ran (a task step inside
                # a span), or none (or an unrecorded one: an exporter's silent
                # work); no child ended. The general case is _settle().
                if top is not None:
                    if top.end_ns is None:
                        if self._sample is not None:
                            self._claim(top, self._since)  # before _started is reset
                        _add_busy(top, end - self._since)
                    self._span = None
            else:
                self._settle(current, end)  # before _started is reset: it may claim a sample
            self._active = 0
            self._started = 0
            duration = end - start
            self._callbacks += 1
            self._busy_ns += duration
            if duration >= self._threshold_ns:
                self._blocked(start, duration, span)
            elif self._sample is not None:
                self._sample = self._culprit = None

    # How a callback's time is split, with as little work per span as can be.
    #
    # Entering a span is not reported (the way in stays the plain one): the
    # monitor knows ``_span``, the span current at ``_since`` (the callback's
    # start, or the last activate()/deactivate()), and learns every other
    # span's place when it ends: a span that started at or after ``_since``
    # ran from its ``start_ns`` to now, inside its parent (``with`` blocks
    # nest). Its own time is that minus its children's, which they handed to
    # it as they ended; it hands its whole time to its parent in turn. The
    # children's time waits in one register (``_kid_parent``, ``_kid_sum``):
    # siblings end one after the other and then their parent ends, so a
    # second register is needed only when a subtree ends while an older
    # sibling's time waits (``_kids``, a dict, emptied with each callback). A
    # span still open when the callback ends (a ``with`` block around an
    # ``await``) is found from the context's current span, up through its
    # parents (:meth:`_settle`). So a span costs one call, one clock read, a
    # few attribute reads and writes, and one write of its ``details``.
    #
    # closing() runs for every span on every thread while this monitor is the
    # switch observer: the thread check comes first, and the common case is inline.

    def switched(self, span: Span | None) -> None:
        """activate()/deactivate() on the loop thread: the time so far was the spans' that ran until now.

        Those are ``_span`` and the spans entered since, still open: the ones
        ``span`` is nested in (activate() inside a ``with`` block, as traced
        generators and ``use_span`` do), settled as at a callback's end.
        """
        if _get_ident() != self._active:
            return
        now = _now()
        self._settle(span, now)
        self._since = now
        self._span = span if span is not None and span.recording and span.end_ns is None else None

    def closing(self, span: Span) -> None:
        """``span`` ends on the loop thread: its busy time (and a block in progress) go on it now."""
        if _get_ident() != self._active:
            return
        now = _now()
        if span is self._span:  # current since _since (its code ran before its children's)
            start = self._since
            own = max(0, now - start - self._take_kids(span))
            # What runs next is the parent's code: the rest of its `with` block.
            parent = span.parent
            self._span = parent if parent is not None and parent.recording and parent.end_ns is None else None
            self._since = now
        else:
            start = span.start_ns
            if start < self._since:  # not current since _since (a client span, or unsampled: 0)
                self._ends_idle(span, now)
                return
            own = took = now - start
            if span is self._kid_parent:  # its children just ended
                own -= self._kid_sum
                self._kid_parent = None
            if self._kids:
                own -= self._kids.pop(span, 0)
            if own < 0:  # children that overlapped (started, not entered): never below zero
                own = 0
            parent = span.parent
            if parent is not None:
                waiting = self._kid_parent
                if parent is waiting:
                    self._kid_sum += took
                else:
                    if waiting is not None:  # an older sibling's time waits: park it
                        self._kids[waiting] = self._kids.get(waiting, 0) + self._kid_sum
                    self._kid_parent = parent
                    self._kid_sum = took
        details = span.details
        if details is None:
            span.details = {"busy_ns": own}
        else:
            details["busy_ns"] = details.get("busy_ns", 0) + own
        if self._sample is not None:
            self._pin_if_guilty(span, start, now)

    def _ends_idle(self, span: Span, now: int) -> None:
        """``span`` ends on the loop thread without having run since ``_since``: 0 ns of its own here."""
        if not span.recording:
            return
        details = span.details
        if details is None:
            span.details = {"busy_ns": 0}
        elif "busy_ns" not in details:
            details["busy_ns"] = 0
        if self._sample is not None:
            self._pin_if_guilty(span, None, now)

    def _take_kids(self, span: Span) -> int:
        """The time of ``span``'s children that ended in this callback, taken off the registers."""
        total = 0
        if span is self._kid_parent:
            total = self._kid_sum
            self._kid_parent = None
        if self._kids:
            total += self._kids.pop(span, 0)
        return total

    def _add_kid(self, parent: Span, ns: int) -> None:
        """Hands a child's whole time (``ns``) to ``parent``."""
        waiting = self._kid_parent
        if parent is waiting:
            self._kid_sum += ns
            return
        if waiting is not None:
            self._kids[waiting] = self._kids.get(waiting, 0) + self._kid_sum
        self._kid_parent = parent
        self._kid_sum = ns

    def _settle(self, current: Span | None, end: int) -> None:
        """The callback ends (or the current span is switched): open spans get their time up to ``end``.

        Those are ``current`` (the context's span as the callback ends) and
        its parents that started since ``_since``, up to ``_span``, which ran
        since ``_since``. Innermost first, as if each ended now.
        """
        top = self._span
        since = self._since
        span = current
        while (
            span is not None
            and span is not top
            and span.recording
            and span.end_ns is None
            and span.start_ns >= since
        ):
            start = span.start_ns
            self._claim(span, start)
            _add_busy(span, end - start - self._take_kids(span))
            span = span.parent
            if span is not None:
                self._add_kid(span, end - start)
        if top is not None and top.end_ns is None:
            self._claim(top, since)
            _add_busy(top, end - since - self._take_kids(top))
        self._kid_parent = None
        if self._kids:
            self._kids.clear()
        self._span = None

    def _claim(self, span: Span, start: int | None) -> None:
        """Names ``span`` the guilty one if its stretch from ``start`` holds the watchdog's look.

        Stretches are settled innermost first (a child ends before its
        parent), so the first one to hold the sample's moment is the guilty one.
        """
        sample = self._sample
        if (
            sample is not None
            and sample.started == self._started
            and self._culprit_of is not sample
            and start is not None
            and start <= sample.at
        ):
            self._culprit = span
            self._culprit_of = sample

    def _pin_if_guilty(self, span: Span, start: int | None, now: int) -> None:
        """Pins a block in progress on ``span``, ending now, if its code was caught blocking.

        The span blocked the loop in this very callback and ends in it: the
        block goes on it now, while its trace cannot yet be complete (with the
        default tracker, it is assembled on another thread as soon as the span
        ends); ``duration_ms`` is then the block up to the span's end.
        """
        self._claim(span, start)
        sample = self._sample
        started = self._started
        if (
            sample is not None
            and self._culprit_of is sample
            and self._culprit is span
            and self._pinned != started
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
        culprit, self._culprit = self._culprit, None
        if self._pinned == start:
            return  # already on the span that ended in this callback
        if sample is not None and sample.started == start:
            span = culprit if self._culprit_of is sample else first
            stack = sample.stack
        else:  # the watchdog never got to look (C code holding the GIL)
            span = first
            stack = "<not sampled: the loop thread held the GIL for the whole block>"
        if span is None or not span.recording:
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
            at = _now()
            if at - started < self._threshold_ns // 2:
                continue
            frame = sys._current_frames().get(thread)
            if frame is None or self._started != started:
                continue
            stack = format_stack(frame)
            if self._started == started:
                self._sample = _Sample(started, at, stack)


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
    """Adds ``ns`` (never below zero: children that overlapped) to the span's ``busy_ns``."""
    if ns < 0:
        ns = 0
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
