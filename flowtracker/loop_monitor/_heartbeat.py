"""The heartbeat: a timer on the watched loop that reschedules itself, and the loop's lag.

Every :data:`~Heartbeat.interval_ns` the loop runs one tiny callback. How late
it runs (its *lag*: the time it ran minus the time it was due) is how long
the loop kept every other callback waiting at that moment; the heartbeat
keeps the recent lags (at most :data:`LAG_WINDOW`) for ``lag_p50_ms`` and
``lag_p99_ms``, and the longest one since start for ``lag_max_ms``. It runs
on every kind of loop: it needs nothing but ``call_later``.

The last time it ran (``last_beat``) is also the moment the loop was last
seen free: on a loop whose callbacks cannot be timed one by one (uvloop),
a heartbeat overdue by the block threshold is how a block is found (see
``_stalls``), and each beat hands its time to ``on_beat``.

Example:
    >>> import asyncio
    >>> async def main():
    ...     heartbeat = Heartbeat(asyncio.get_running_loop(), 1_000_000)
    ...     heartbeat.start()
    ...     await asyncio.sleep(0.02)
    ...     heartbeat.stop()
    ...     return heartbeat.beats > 0 and heartbeat.lag_percentiles()[2] >= 0
    >>> asyncio.run(main())
    True
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from types import FrameType

from .._core import clock as _clock

__all__ = ("LAG_WINDOW", "Heartbeat", "interval_for")

#: Lags kept for the percentiles: the most recent ones (a minute at 5 ms a beat is 12,000).
LAG_WINDOW = 4096


def interval_for(threshold_ns: int) -> int:
    """The heartbeat's interval for a block threshold: a twentieth of it, within 1–10 ms.

    Short enough that a block's start is known within a few ms on loops
    where the heartbeat is what finds blocks; long enough to cost nothing
    (200 tiny callbacks a second at the default 0.1 s threshold).

    Example:
        >>> interval_for(100_000_000), interval_for(1_000_000_000), interval_for(5_000_000)
        (5000000, 10000000, 1000000)
    """
    return min(max(threshold_ns // 20, 1_000_000), 10_000_000)


class Heartbeat:
    """A self-rescheduling timer on ``loop``, every ``interval_ns``.

    Args:
        loop: The loop it runs on.
        interval_ns: Time between the end of one beat and the next one's due time.
        on_beat: Called on the loop thread at each beat with its time (monotonic
            ns), before ``last_beat`` moves on.
        on_thread: Called with the loop's thread id when the first beat runs.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        interval_ns: int,
        on_beat: Callable[[int], None] | None = None,
        on_thread: Callable[[int], None] | None = None,
    ) -> None:
        self.loop = loop
        self.interval_ns = interval_ns
        self.on_beat = on_beat
        self.on_thread = on_thread
        #: The loop's thread id, known from the first beat.
        self.thread: int | None = None
        #: When the last beat ran (monotonic ns; 0 before the first): the loop was free then.
        self.last_beat = 0
        #: The Python frame that called the last beat: on a loop that runs in C
        #: (uvloop), the frame the loop thread shows while no callback runs.
        self.base_frame: FrameType | None = None
        #: Beats run.
        self.beats = 0
        #: The longest lag seen, in ns.
        self.max_lag_ns = 0
        self._due = 0
        self._lags = [0] * LAG_WINDOW
        self._running = False
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Starts beating (from any thread; the first beat is scheduled on the loop)."""
        self._running = True
        self.loop.call_soon_threadsafe(self._first)

    def stop(self) -> None:
        """Stops beating. On the loop thread the pending beat is cancelled, else it finds the stop."""
        self._running = False
        self.base_frame = None
        handle = self._handle
        if handle is not None and threading.get_ident() == self.thread:
            handle.cancel()
            self._handle = None

    def lag_percentiles(self) -> tuple[float, float, float]:
        """``(p50, p99, max)`` of the lag in ms: p50 and p99 over the recent beats (0 before any)."""
        count = min(self.beats, LAG_WINDOW)
        if not count:
            return 0.0, 0.0, 0.0
        lags = sorted(self._lags[:count])
        return lags[(count - 1) // 2] / 1e6, lags[(count - 1) * 99 // 100] / 1e6, self.max_lag_ns / 1e6

    def _first(self) -> None:
        if not self._running:
            return
        self.thread = threading.get_ident()
        if self.on_thread is not None:
            self.on_thread(self.thread)
        now = _clock.now_ns()
        self.last_beat = now
        self._schedule(now)

    def _schedule(self, now: int) -> None:
        self._due = now + self.interval_ns
        self._handle = self.loop.call_later(self.interval_ns / 1e9, self._beat)

    def _beat(self) -> None:
        if not self._running:
            return
        now = _clock.now_ns()
        lag = now - self._due
        if lag < 0:  # fired early by the loop's clock resolution
            lag = 0
        self._lags[self.beats % LAG_WINDOW] = lag
        self.beats += 1
        if lag > self.max_lag_ns:
            self.max_lag_ns = lag
        if self.on_beat is not None:
            self.on_beat(now)
        frame = inspect.currentframe()
        self.base_frame = None if frame is None else frame.f_back
        self.last_beat = now
        self._schedule(now)
