"""The callback hook and busy accounting: each callback of a watched loop timed, split between spans.

Every callback of an asyncio loop (task steps, C-accelerated tasks included,
``TaskGroup`` and anyio tasks, future callbacks, timers, I/O readiness) runs
through ``asyncio.Handle._run``. While at least one loop is watched, that
method is replaced by :func:`run_watched`, which looks the handle's loop up
in a dict and runs unwatched loops' callbacks straight through; a watched
loop's callbacks go to its :class:`CallbackTimer`.

A :class:`CallbackTimer` times each callback and splits its time between
the spans whose code ran in it, exactly at child-span boundaries (self time,
``busy_ns`` on each span). Which span runs when is learnt from the context's
current span as each callback starts and ends, and from the core's switch
observer (the timer is its loop's observer, see ``_observers``), installed
only while a loop is watched: it is told when a span is about to end and
when ``activate``/``deactivate`` switch spans. A callback that runs for the
threshold or more goes to the :class:`~._blocks.BlockRecord`, with the span
whose code the watchdog caught running.

Example:
    >>> import asyncio
    >>> from flowtracker.loop_monitor._blocks import BlockRecord
    >>> async def main():
    ...     timer = CallbackTimer(asyncio.get_running_loop(), 100_000_000, BlockRecord())
    ...     watch(timer)
    ...     await asyncio.sleep(0)
    ...     await asyncio.sleep(0)
    ...     unwatch(timer)
    ...     return timer.callbacks > 0
    >>> asyncio.run(main())
    True
"""

from __future__ import annotations

import asyncio
import threading
from asyncio import events
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._core import Span, current_span
from .._core import clock as _clock
from .._core.patches import Patch, patch_attribute
from .._wire.names import MONITOR_FULL
from ._blocks import NOT_SAMPLED, Block, BlockRecord, pin
from ._observers import mark_off_loop, mark_watched
from ._tasks import loop_traces

if TYPE_CHECKING:
    from ._watchdog import Sample

__all__ = ("CallbackTimer", "add_busy", "run_watched", "unwatch", "watch")

# loop -> its timer. Written under _lock, read lock-free on the hot path
# (dict reads are atomic under the GIL).
_by_loop: dict[asyncio.AbstractEventLoop, CallbackTimer] = {}
_lock = threading.Lock()
_plain_run: Callable[[events.Handle], None] | None = None
_handle_patch: Patch | None = None

_get_ident = threading.get_ident
# The span clock, as a global (cheaper than the module attribute on the hot
# path); refreshed when ``flowtracker.testing`` swaps it.
_now = _clock.now_ns


def _refresh_clock() -> None:
    global _now
    _now = _clock.now_ns


_clock.on_change(_refresh_clock)


class CallbackTimer:
    """Times one loop's callbacks and splits their time between spans; made by the monitor.

    Args:
        loop: The loop whose callbacks it times.
        threshold_ns: A callback that runs this long or longer is a block.
        blocks: Where blocks go.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, threshold_ns: int, blocks: BlockRecord) -> None:
        self.loop = loop
        self.threshold_ns = threshold_ns
        self.blocks = blocks
        #: The loop's thread id, once known (the watchdog samples its stack).
        self.thread: int | None = None
        # Loop thread only (see switched()): the span current since _since, and
        # the time of the ended children of spans still open in this callback.
        self._span: Span | None = None
        self._since = 0
        self._kid_parent: Span | None = None
        self._kid_sum = 0
        self._kids: dict[Span, int] = {}
        self._active = 0  # the loop thread's id while it runs a callback, else 0
        #: Written by the loop thread, read by the watchdog: the running
        #: callback's start (0: none).
        self.started = 0
        #: Written by the watchdog: its last look at a long callback.
        self.sample: Sample | None = None
        # Loop thread only: the span a sample caught, and the callback whose block is on a span.
        self._culprit: Span | None = None
        self._culprit_of: Sample | None = None
        self._pinned = 0
        #: False once unwatched: the callback that stopped the monitor is not a block then.
        self.watching = False
        #: Callbacks run, and their total time (ns).
        self.callbacks = 0
        self.busy_ns = 0

    #: Never idle while ``started`` is set: it is set only while a callback runs.
    idle_frame = None

    def offer(self, sample: Sample) -> None:
        """The watchdog's latest look at the running callback (its thread): the loop thread reads it."""
        self.sample = sample

    def idle(self, started: int) -> None:
        """Never called: ``started`` is set only while a callback runs (see ``idle_frame``)."""

    # -- one callback ------------------------------------------------------------

    def run(self, handle: events.Handle) -> None:
        """Runs ``handle`` timed, its time split between the spans whose code ran."""
        context = handle._context  # type: ignore[attr-defined]
        span = context.run(current_span)
        self._span = span if span is not None and span.recording else None
        start = _now()
        self._since = start
        self.started = start
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
                        if self.sample is not None:
                            self._claim(top, self._since)  # before started is reset
                        add_busy(top, end - self._since)
                    self._span = None
            else:
                self._settle(current, end)  # before started is reset: it may claim a sample
            self._active = 0
            self.started = 0
            duration = end - start
            self.callbacks += 1
            self.busy_ns += duration
            if duration >= self.threshold_ns and self.watching:
                self._blocked(start, duration, span)
            elif self.sample is not None:
                self.sample = self._culprit = None

    # How a callback's time is split, with as little work per span as can be.
    #
    # Entering a span is not reported (the way in stays the plain one): the
    # timer knows ``_span``, the span current at ``_since`` (the callback's
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
    # few attribute reads and writes, and one write of its ``busy_ns``.
    #
    # closing() runs for every span on every thread while this timer is the
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

    def closing(self, span: Span) -> int | None:
        """``span`` ends on the loop thread: its busy time (and a block in progress) go on it now.

        A root that ends here marks its trace as watched (``loop_monitor``); a
        span that ends on another thread (a worker's) is marked off the loop.
        Returns the reading its time was split at, which the span ends at (so
        a parent's own time is exactly its duration less its children's), or
        ``None`` off the loop thread.
        """
        ident = _get_ident()
        if ident != self._active:
            if ident != self.thread and self.thread is not None:
                mark_off_loop(span)
            return None
        now = _now()
        if span is self._span:  # current since _since (its code ran before its children's)
            start = self._since
            own = now - start - self._take_kids(span)
            # What runs next is the parent's code: the rest of its `with` block.
            parent = span.parent
            if parent is None:
                self._span = None
            else:
                self._span = parent if parent.recording and parent.end_ns is None else None
            self._since = now
        else:
            start = span.start_ns
            if start < self._since:  # not current since _since (a client span, or unsampled: 0)
                self._ends_idle(span, now)
                return now
            own = took = now - start
            if span is self._kid_parent:  # its children just ended
                own -= self._kid_sum
                self._kid_parent = None
            if self._kids:
                own -= self._kids.pop(span, 0)
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
        add_busy(span, own)
        if parent is None:  # a root: its trace was watched (after add_busy, which made its extras)
            mark_watched(span, MONITOR_FULL)
        if self.sample is not None:
            self._pin_if_guilty(span, start, now)
        return now

    def _ends_idle(self, span: Span, now: int) -> None:
        """``span`` ends on the loop thread without having run since ``_since``: 0 ns of its own here."""
        if not span.recording:
            return
        add_busy(span, 0)
        if span.parent is None:
            mark_watched(span, MONITOR_FULL)
        if self.sample is not None:
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
            add_busy(span, end - start - self._take_kids(span))
            span = span.parent
            if span is not None:
                self._add_kid(span, end - start)
        if top is not None and top.end_ns is None:
            self._claim(top, since)
            add_busy(top, end - since - self._take_kids(top))
        self._kid_parent = None
        if self._kids:
            self._kids.clear()
        self._span = None

    # -- blocks: which span's code the watchdog caught -----------------------------

    def _claim(self, span: Span, start: int | None) -> None:
        """Names ``span`` the guilty one if its stretch from ``start`` holds the watchdog's look.

        Stretches are settled innermost first (a child ends before its
        parent), so the first one to hold the sample's moment is the guilty one.
        """
        sample = self.sample
        if (
            sample is not None
            and sample.started == self.started
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
        sample = self.sample
        started = self.started
        if (
            sample is not None
            and self._culprit_of is sample
            and self._culprit is span
            and self._pinned != started
            and now - started >= self.threshold_ns
        ):
            self._pinned = started
            pin(span, started, now - started, sample.stack)

    def _blocked(self, start: int, duration: int, first: Span | None) -> None:
        """A callback held the loop for ``duration`` ns: it goes to the block record."""
        sample, self.sample = self.sample, None
        culprit, self._culprit = self._culprit, None
        if sample is not None and sample.started == start:
            span = culprit if self._culprit_of is sample else first
            stack, traces = sample.stack, sample.traces
        else:  # the watchdog never got to look (C code holding the GIL)
            span = first
            stack, traces = NOT_SAMPLED, loop_traces(self.loop)
        # Pinned already: on the span that ended in this callback (see _pin_if_guilty).
        self.blocks.add(Block(start, duration, span, stack, traces), pinned=self._pinned == start)


def run_watched(handle: events.Handle) -> None:
    """``asyncio.Handle._run`` while a loop is watched: watched loops' callbacks are timed."""
    timer = _by_loop.get(handle._loop)  # type: ignore[attr-defined]
    if timer is None:
        _plain_run(handle)  # type: ignore[misc]
    else:
        timer.run(handle)


def _patch() -> None:
    """Installs the callback wrapper (under ``_lock``; idempotent)."""
    global _plain_run, _handle_patch
    if _handle_patch is not None:
        return
    _handle_patch = patch_attribute(
        events.Handle,
        "_run",
        run_watched,
        reason="while an event-loop monitor runs: every callback of a watched loop is timed",
    )
    # Kept after unpatching: another thread may still be inside run_watched.
    _plain_run = _handle_patch.original


def _unpatch() -> None:
    """Puts back what :func:`_patch` changed (under ``_lock``)."""
    global _handle_patch
    if _handle_patch is not None:
        _handle_patch.undo()
        _handle_patch = None


def watch(timer: CallbackTimer) -> None:
    """Starts timing ``timer.loop``'s callbacks (and patches, for the first loop watched)."""
    with _lock:
        _by_loop[timer.loop] = timer
        timer.watching = True
        _patch()


def unwatch(timer: CallbackTimer) -> None:
    """Stops timing ``timer.loop``'s callbacks; with no loop left watched, undoes the patch."""
    with _lock:
        timer.watching = False
        if _by_loop.get(timer.loop) is timer:
            del _by_loop[timer.loop]
        if not _by_loop:
            _unpatch()


def add_busy(span: Span, ns: int) -> None:
    """Adds ``ns`` (never below zero: children that overlapped) to the span's ``busy_ns``.

    The one writer of ``SpanExtras.busy_ns``.
    """
    if ns < 0:
        ns = 0
    extras = span.extras or span.ensure_extras()
    busy = extras.busy_ns
    extras.busy_ns = ns if busy is None else busy + ns
