"""One exporter's lane: a bounded anyio memory stream and the task that drains it.

Each exporter gets its own lane, so a slow, hanging or failing exporter only
ever fills its own buffer: the others keep exporting, and handlers never wait
(``offer`` is ``send_nowait``; a full lane drops the trace and counts it).

Traces arrive in bursts: the tracker checks finished traces for completion
once per ``batch_interval`` (or as soon as ``max_batch`` are waiting) and
offers everything complete at once (see :mod:`flowtracker._pipeline.tracker`).
The drain task sleeps on a future of its own while the lane is empty, not in
``receive()``: the first trace of a burst wakes it (one wake-up per burst),
the rest of the burst is only appended, and the task then takes what is
queued with ``receive_nowait()``, ``max_batch`` traces per ``export()`` call,
until the lane is empty again. Traces offered while an export runs go out as
soon as it ends, in as few batches as ``max_batch`` allows.

Example:
    >>> from flowtracker._pipeline.lane import Lane
    >>> from flowtracker import MemoryExporter
    >>> lane = Lane("memory", MemoryExporter(), max_queue=8, max_batch=4, timeout=1.0)
    >>> lane.stats().queued, lane.idle
    (0, True)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._wire.batch import PartialExportError
from .failure_log import FailureLog
from .stats import ExporterStats

if TYPE_CHECKING:
    from .._wire.record import Trace
    from .exporter import Exporter


class Lane:
    """Buffers traces for one exporter and exports them in batches.

    Args:
        name: The exporter's name in ``Tracker.stats``.
        exporter: Where the batches go.
        max_queue: Traces buffered before new ones are dropped and counted.
        max_batch: Traces per ``export()`` call at most.
        timeout: Seconds one ``export()`` call may take (enforced by the tracker's watchdog).
        before_last_export: Called when the drain task is cancelled from outside
            (the loop ending without ``aclose()``), before its last export:
            the tracker hands over the traces it was still gathering.
    """

    def __init__(
        self,
        name: str,
        exporter: Exporter,
        *,
        max_queue: int,
        max_batch: int,
        timeout: float,
        before_last_export: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.exporter = exporter
        self.max_batch = max_batch
        self.timeout = timeout
        self.max_queue = max_queue
        self._before_last_export = before_last_export
        # Streams are made by ``open()`` when the tracker starts: an unused
        # stream would warn when collected.
        self._send: MemoryObjectSendStream[Trace] | None = None
        self._receive: MemoryObjectReceiveStream[Trace] | None = None
        self.offered = 0
        self.exported = 0
        self.failed = 0
        self.dropped = 0
        self._processed = 0
        #: Traces taken from the stream: ``offered - _taken`` are queued in it.
        self._taken = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.failure_log = FailureLog(name)
        self.task: asyncio.Task[None] | None = None
        self.deadline: float | None = None
        self._timed_out = False
        self.closing = False
        self._interrupted: list[Trace] | None = None
        #: What the drain task awaits while the lane is empty (see the module docstring).
        self._sleep: asyncio.Future[None] | None = None

    def open(self) -> None:
        """Creates the stream (on the tracker's start)."""
        self._send, self._receive = anyio.create_memory_object_stream["Trace"](self.max_queue)

    def offer(self, trace: Trace) -> bool:
        """Queues ``trace`` without ever blocking; False (and counted) when full."""
        try:
            self._send.send_nowait(trace)  # type: ignore[union-attr]
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError, AttributeError):
            self.dropped += 1
            return False
        self.offered += 1
        if self._sleep is not None:  # the first trace of a burst
            self._wake()
        return True

    def _wake(self) -> None:
        """Ends the drain task's sleep (a no-op while it exports)."""
        sleep, self._sleep = self._sleep, None
        if sleep is not None and not sleep.done():
            sleep.set_result(None)

    def drop(self, count: int) -> None:
        """Counts traces this lane never received (tracker not running)."""
        self.dropped += count

    def stats(self, dropped_before: int = 0) -> ExporterStats:
        """The counters; ``dropped_before``: traces dropped before any lane saw them (the hand-over)."""
        return ExporterStats(
            self.exported, self.failed, self.dropped + dropped_before, self.offered - self._processed
        )

    @property
    def idle(self) -> bool:
        """Every trace offered has been exported or failed (nothing queued, nothing in export)."""
        return self._processed >= self.offered

    def renewed(self) -> Lane:
        """A new, empty lane for the same exporter with the same settings."""
        return Lane(
            self.name,
            self.exporter,
            max_queue=self.max_queue,
            max_batch=self.max_batch,
            timeout=self.timeout,
            before_last_export=self._before_last_export,
        )

    def abandon(self) -> None:
        """Forgets what is queued, uncounted: in a forked child it is the parent's to export."""
        self.closing = True
        self._interrupted = None
        self._sleep = None  # the parent's loop's: never touched here
        with contextlib.suppress(RuntimeError):
            if self._send is not None:
                self._send.close()
            if self._receive is not None:
                self._take(self.max_queue)
                self._receive.close()

    def _take(self, limit: int) -> list[Trace] | None:
        """Up to ``limit`` queued traces, without waiting; None once the stream is closed and empty.

        ``offered - _taken`` traces are in the stream (each offer counts one
        that it sent), so the batch is taken without asking the stream how
        many it holds, item by item.
        """
        receive = self._receive
        assert receive is not None, "open() first"
        count = min(limit, self.offered - self._taken)
        try:
            if not count:
                receive.receive_nowait()  # nothing queued: raises WouldBlock, or says it was closed
            batch = [receive.receive_nowait() for _ in range(count)]
        except anyio.WouldBlock:
            return []
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return None
        self._taken += count
        return batch

    async def run(self) -> None:
        """Drains the lane until its stream is closed.

        Cancelled from outside (the event loop shutting down without
        ``aclose()``, e.g. ``asyncio.run`` ending), it makes one last,
        time-bounded attempt to export what is queued before it stops.
        """
        try:
            await self._drain()
        except asyncio.CancelledError:
            if not self.closing:
                if self._before_last_export is not None:
                    self._before_last_export()
                await self._last_export()
            elif self._interrupted:  # aclose() gave up waiting on this batch
                self.failed += len(self._interrupted)
                self._advance(len(self._interrupted))
                self._interrupted = None
            raise
        finally:
            self._sleep = None

    async def _last_export(self) -> None:
        batch: list[Trace] = self._interrupted or []
        self._interrupted = None
        batch.extend(self._take(self.max_queue) or ())
        if not batch:
            return
        try:
            await asyncio.wait_for(self.exporter.export(batch), self.timeout)
        except PartialExportError as error:
            self._count_partial(len(batch), error)
        except BaseException as error:  # cancelled again, timed out or failed: counted
            self.failed += len(batch)
            self.failure_log.failure(len(batch), f"{error!r} at loop shutdown")
        else:
            self.exported += len(batch)
        self._advance(len(batch))

    async def _drain(self) -> None:
        while True:
            if self.offered == self._taken:  # empty: sleep until a trace comes (or close)
                sleep = self._sleep = asyncio.get_running_loop().create_future()
                await sleep
            batch = self._take(self.max_batch)
            if batch is None:
                return
            if batch:
                await self._export(batch)

    async def _export(self, batch: list[Trace]) -> None:
        # The timeout is enforced by the tracker's watchdog (see ``overdue``):
        # a cancel scope per batch costs more than many small exports.
        self.deadline = time.monotonic() + self.timeout
        try:
            await self.exporter.export(batch)
        except asyncio.CancelledError:
            if not self._timed_out:
                # Cancelled from outside: the last export retries this batch
                # (at least once: part of it may already have gone out).
                self._interrupted = batch
                raise
            self._timed_out = False
            uncancel = getattr(asyncio.current_task(), "uncancel", None)  # Python 3.11+
            if uncancel is not None:
                uncancel()
            self.failed += len(batch)
            self.failure_log.failure(len(batch), f"timed out after {self.timeout:.1f}s")
        except PartialExportError as error:
            self._count_partial(len(batch), error)
        except Exception as error:  # an exporter must never take the pipeline down
            self.failed += len(batch)
            self.failure_log.failure(len(batch), repr(error))
        else:
            self.exported += len(batch)
            self.failure_log.success()
        finally:
            self.deadline = None
            if self._interrupted is not batch:
                self._advance(len(batch))

    def _count_partial(self, size: int, error: PartialExportError) -> None:
        """The exporter shipped part of the batch: exported = batch - failed, exactly."""
        failed = min(max(error.failed, 0), size)
        self.failed += failed
        self.exported += size - failed
        if failed:
            self.failure_log.failure(failed, str(error))
        else:
            self.failure_log.success()

    def cancel_if_overdue(self, now: float) -> None:
        """Cancels the export in progress if it has run past the timeout (watchdog)."""
        deadline = self.deadline
        if deadline is not None and now > deadline and not self._timed_out and self.task is not None:
            self._timed_out = True
            self.task.cancel()

    def _advance(self, count: int) -> None:
        self._processed += count
        if self._waiters:
            keep = []
            for target, future in self._waiters:
                if self._processed >= target:
                    if not future.done():
                        future.set_result(None)
                else:
                    keep.append((target, future))
            self._waiters = keep

    async def wait_processed(self) -> None:
        """Waits until every trace offered so far has been exported or failed."""
        target = self.offered
        if self._processed >= target:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        await future

    def close(self) -> None:
        """Closes the stream; what is still queued is counted as dropped."""
        if self._send is None or self._receive is None:
            return
        self._send.close()
        left = self._take(self.max_queue) or ()
        self.dropped += len(left)
        self._advance(len(left))
        self._receive.close()
        self._wake()
