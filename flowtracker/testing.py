"""Helpers for testing code that uses flowtracker (shipped to users).

``capture_traces()`` collects every trace finished inside its block as dicts
in the wire format; ``sequential_ids()`` and ``FakeClock`` make ids and times
deterministic, so a whole trace can be asserted literally.

Example:
    >>> import flowtracker as ft
    >>> from flowtracker.testing import capture_traces, FakeClock, sequential_ids
    >>> with capture_traces(ids=sequential_ids(), clock=FakeClock(step_ms=1)) as traces:
    ...     with ft.span("root"):
    ...         pass
    >>> traces[0]["spans"][0]["span_id"], traces[0]["spans"][0]["duration_ms"]
    ('0000000000000002', 1.0)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from ._core import BOUND_SINK
from ._core import clock as _clock
from ._core.clock import parse_rfc3339
from ._pipeline.tracker import Tracker
from .exporters.memory import MemoryExporter

__all__ = ("FakeClock", "capture_traces", "sequential_ids", "use_clock", "use_ids")


def sequential_ids(start: int = 1) -> Callable[[int], int]:
    """An id source returning ``start``, ``start + 1``, ... (trace and span ids alike).

    Example:
        >>> ids = sequential_ids()
        >>> ids(64), ids(128)
        (1, 2)
    """
    counter = itertools.count(start)

    def next_id(bits: int) -> int:
        return next(counter) & ((1 << bits) - 1)

    return next_id


class FakeClock:
    """A clock that advances ``step_ms`` per reading, starting at ``start`` (UTC).

    Example:
        >>> clock = FakeClock("2026-11-20T10:00:00Z", step_ms=0)
        >>> clock.advance(5); clock() - clock.start_ns
        5000000
    """

    def __init__(self, start: str = "2026-11-20T10:00:00Z", step_ms: float = 0.0) -> None:
        self.start_ns = parse_rfc3339(start)
        self.now_ns = self.start_ns
        self.step_ns = int(step_ms * 1_000_000)

    def __call__(self) -> int:
        value = self.now_ns
        self.now_ns += self.step_ns
        return value

    def advance(self, ms: float) -> None:
        """Moves the clock forward by ``ms`` milliseconds."""
        self.now_ns += int(ms * 1_000_000)


@contextmanager
def use_ids(ids: Callable[[int], int]) -> Iterator[None]:
    """Uses ``ids`` (called with a bit count) as the id source inside the block."""
    previous = _clock.install(ids=ids)
    try:
        yield
    finally:
        _clock.install(ids=previous[1])


@contextmanager
def use_clock(clock: Callable[[], int]) -> Iterator[None]:
    """Uses ``clock`` (wall-clock nanoseconds) as the time source inside the block."""
    previous = _clock.install(clock=clock, anchor_ns=0)
    try:
        yield
    finally:
        _clock.install(clock=previous[0], anchor_ns=previous[2])


class capture_traces:
    """Collects the traces finished inside the block (``with`` or ``async with``).

    Yields a list that holds each trace as a wire-format dict once the block
    is left. Under ``async with`` the tracker runs on the current loop;
    under ``with`` on a private thread, so it also works in sync tests.

    Args:
        ids: Optional id source, e.g. :func:`sequential_ids`.
        clock: Optional clock, e.g. :class:`FakeClock`.
        **tracker_options: Passed to :class:`~flowtracker.Tracker`.
    """

    def __init__(
        self,
        *,
        ids: Callable[[int], int] | None = None,
        clock: Callable[[], int] | None = None,
        **tracker_options: Any,
    ) -> None:
        self.exporter = MemoryExporter()
        self.tracker = Tracker(exporters=[self.exporter], **tracker_options)
        self._ids = ids
        self._clock = clock
        self._previous: tuple[Any, Any, int] | None = None
        self._token: Any = None

    def _install(self) -> None:
        anchor = 0 if self._clock is not None else None
        self._previous = _clock.install(clock=self._clock, ids=self._ids, anchor_ns=anchor)
        self._token = BOUND_SINK.set(self.tracker)

    def _uninstall(self) -> None:
        try:
            BOUND_SINK.reset(self._token)
        except (ValueError, RuntimeError):
            BOUND_SINK.set(None)
        assert self._previous is not None
        clock, ids, anchor = self._previous
        _clock.install(clock=clock, ids=ids, anchor_ns=anchor)

    def __enter__(self) -> list[dict[str, Any]]:
        self.tracker.start_in_thread(name="flowtracker-capture")
        self._install()
        return self.exporter.traces

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.tracker.close_thread()
        finally:
            self._uninstall()

    async def __aenter__(self) -> list[dict[str, Any]]:
        await self.tracker.start()
        self._install()
        return self.exporter.traces

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.tracker.aclose()
        finally:
            self._uninstall()
