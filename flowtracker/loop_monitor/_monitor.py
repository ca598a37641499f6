"""``LoopMonitor`` and ``monitor_event_loop()``: one monitor per loop, started and stopped as a whole.

A monitor puts the parts of the package together for one loop: a block
finder (on an asyncio loop the :class:`~._callbacks.CallbackTimer`, which
also splits busy time between spans; on a loop whose callbacks cannot be
hooked, uvloop, the :class:`~._stalls.StallWatch`), the
:class:`~._heartbeat.Heartbeat` (the loop's lag, and what the stall watch
reads), the :class:`~._watchdog.Watchdog` (stack samples while the loop is
held) and the :class:`~._blocks.BlockRecord` (what became of each block),
and reports their counters as :class:`LoopMonitorStats`.

Example:
    >>> import asyncio, flowtracker as ft
    >>> async def main():
    ...     async with ft.monitor_event_loop(0.1) as monitor:
    ...         await asyncio.sleep(0)
    ...     return monitor.running
    >>> asyncio.run(main())
    False
"""

from __future__ import annotations

import asyncio
import logging
import threading
from types import TracebackType
from typing import NamedTuple

from ._blocks import BlockRecord
from ._callbacks import CallbackTimer, unwatch, watch
from ._heartbeat import Heartbeat, interval_for
from ._observers import observe, observe_thread, unobserve
from ._stalled import keep
from ._stalls import StallWatch
from ._watchdog import Watchdog

__all__ = ("LoopMonitor", "LoopMonitorStats", "monitor_event_loop", "monitor_threshold")

logger = logging.getLogger("flowtracker.loop_monitor")

# loop -> its monitor: a loop is never watched twice. Written under _lock.
_monitors: dict[asyncio.AbstractEventLoop, LoopMonitor] = {}
_lock = threading.Lock()


class LoopMonitorStats(NamedTuple):
    """An immutable snapshot of what a :class:`LoopMonitor` saw.

    Example:
        >>> LoopMonitorStats(True, True, 0, 0.0, 0, 0.0, 0.0, 0, 0.0, 0.0, 0.0).blocks
        0
    """

    #: True while blocks are watched for (every kind of loop).
    watching: bool
    #: Whether ``busy_ms`` is recorded on spans: True on asyncio loops, False
    #: where callbacks cannot be hooked (uvloop), where ``callbacks`` and
    #: ``busy_ms`` stay 0.
    busy_time: bool
    #: Callbacks the loop ran while watched.
    callbacks: int
    #: Milliseconds the loop spent running them.
    busy_ms: float
    #: Times the loop was held for at least ``block_threshold``.
    blocks: int
    #: Their total, in milliseconds.
    blocked_ms: float
    #: The longest one, in milliseconds.
    max_block_ms: float
    #: Blocks while no span's code was running (logged, not in any trace).
    blocks_outside_spans: int
    #: How late the heartbeat ran, in ms (median over the last 4096 beats): the loop's lag.
    lag_p50_ms: float
    #: The same, 99th percentile.
    lag_p99_ms: float
    #: The longest lag since the monitor started.
    lag_max_ms: float


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
        threshold_ns = int(block_threshold * 1e9)
        #: False where callbacks cannot be hooked (uvloop): blocks are found from the heartbeat.
        self.busy_time = isinstance(loop, asyncio.BaseEventLoop)
        self._running = False
        self._blocks = BlockRecord()
        self._heartbeat = Heartbeat(loop, interval_for(threshold_ns), on_thread=self._bind_thread)
        self._finder: CallbackTimer | StallWatch
        if self.busy_time:
            self._finder = CallbackTimer(loop, threshold_ns, self._blocks)
        else:
            self._finder = StallWatch(self._heartbeat, threshold_ns, self._blocks)
        self._watchdog = Watchdog(self._finder, on_closed=self.stop)

    # -- public ----------------------------------------------------------------

    @property
    def stats(self) -> LoopMonitorStats:
        """An immutable snapshot of the counters; see :class:`LoopMonitorStats`."""
        blocks = self._blocks
        timer = self._finder if isinstance(self._finder, CallbackTimer) else None
        lag_p50, lag_p99, lag_max = self._heartbeat.lag_percentiles()
        return LoopMonitorStats(
            watching=True,
            busy_time=self.busy_time,
            callbacks=0 if timer is None else timer.callbacks,
            busy_ms=0.0 if timer is None else timer.busy_ns / 1e6,
            blocks=blocks.blocks,
            blocked_ms=blocks.blocked_ns / 1e6,
            max_block_ms=blocks.max_block_ns / 1e6,
            blocks_outside_spans=blocks.outside,
            lag_p50_ms=lag_p50,
            lag_p99_ms=lag_p99,
            lag_max_ms=lag_max,
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
            if _monitors.get(self.loop) is self:
                del _monitors[self.loop]
            if isinstance(self._finder, CallbackTimer):
                unwatch(self._finder)
            unobserve(self._finder)
            self._heartbeat.stop()
        self._watchdog.stop()

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

    # -- under _lock -------------------------------------------------------------

    def _start(self) -> None:
        """Registers this monitor, and starts its block finder, heartbeat and watchdog.

        The loop's thread is learnt now when called on it, else from the first heartbeat.
        """
        self._running = True
        _monitors[self.loop] = self
        keep(self._blocks)  # for stalled time, as long as traces complete, after stop() too
        if isinstance(self._finder, CallbackTimer):
            watch(self._finder)
        observe(self._finder)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self._heartbeat.thread = threading.get_ident()
            observe_thread(self._finder, self._heartbeat.thread)
        self._heartbeat.start()
        self._watchdog.start()

    def _bind_thread(self, thread: int) -> None:
        """The first heartbeat ran on ``thread``: the loop's thread."""
        if self._finder.thread != thread:
            observe_thread(self._finder, thread)

    def _set_threshold(self, block_threshold: float) -> None:
        self.block_threshold = block_threshold
        threshold_ns = int(block_threshold * 1e9)
        self._finder.threshold_ns = threshold_ns
        self._heartbeat.interval_ns = interval_for(threshold_ns)


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
        monitor = _monitors.get(loop)
        if monitor is not None:
            monitor._set_threshold(block_threshold)
            return monitor
        monitor = LoopMonitor(loop, block_threshold)
        monitor._start()
    if not monitor.busy_time:  # a new monitor (a watched loop's was returned above)
        # One line, no warning machinery: it is how this loop is watched, not a fault.
        logger.warning(
            "%s: blocking calls are watched; busy time per span needs the asyncio loop%s",
            type(loop).__module__.partition(".")[0],
            " (uvicorn --loop asyncio)" if type(loop).__module__.startswith("uvloop") else "",
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
