"""How a lane reports its exporter's failures: a summary at most once a minute, and the recovery.

An outage fails batch after batch. The first failure after a healthy spell is
logged at once; the next ones are summed and written as one summary per
``interval`` (60 s): how many traces failed in that time, in how many
batches, and the last error. The first batch exported after failures says so
once, with what failed since the last line. Nothing is ever written per
retry or per batch.

Example:
    >>> log = FailureLog("otlp", interval=60.0)
    >>> log.failure(512, "DeliveryError('POST http://collector:4318/v1/traces failed')")
    >>> log.failure(100, "DeliveryError('...')")  # within the minute: summed, not logged
    >>> log.pending
    100
    >>> log.success()
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

logger = logging.getLogger("flowtracker")

#: Seconds between two lines about the same exporter's failures.
WARN_INTERVAL = 60.0


class FailureLog:
    """Rate-limited failure summaries and a recovery line for one exporter.

    Args:
        name: The exporter's name, as in ``Tracker.stats``.
        interval: Least seconds between two failure lines. Default
            :data:`WARN_INTERVAL` (60).
        clock: Seconds, monotonic (tests may pass their own).
    """

    __slots__ = ("_batches", "_clock", "_failing", "_last_line", "_since", "interval", "name", "pending")

    def __init__(
        self, name: str, interval: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.interval = WARN_INTERVAL if interval is None else interval
        self._clock = clock
        self._failing = False  # a failure was logged and no success followed yet
        self._since = 0  # traces failed since the outage began
        self.pending = 0  # traces failed since the last line
        self._batches = 0  # batches behind ``pending``
        self._last_line = 0.0

    def failure(self, traces: int, error: str) -> None:
        """Counts ``traces`` failed because of ``error``; logs when the interval allows."""
        now = self._clock()
        self.pending += traces
        self._since += traces
        self._batches += 1
        if not self._failing:
            self._failing = True
            logger.warning("exporter %s failed: %s; %d traces failed", self.name, error, traces)
        elif now - self._last_line >= self.interval:
            logger.warning(
                "exporter %s: %d traces failed in the last %.0f s (%d batches); last error: %s",
                self.name,
                self.pending,
                now - self._last_line,
                self._batches,
                error,
            )
        else:
            return
        self._last_line = now
        self.pending = 0
        self._batches = 0

    def success(self) -> None:
        """Notes a batch exported; says once that the exporter recovered."""
        if not self._failing:
            return
        logger.warning(
            "exporter %s recovered: exporting again after %d failed traces (%d since the last message)",
            self.name,
            self._since,
            self.pending,
        )
        self._failing = False
        self._since = 0
        self.pending = 0
        self._batches = 0
