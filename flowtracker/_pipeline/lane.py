"""One exporter's lane: a bounded anyio memory stream and the task that drains it.

Each exporter gets its own lane, so a slow, hanging or failing exporter only
ever fills its own buffer: the others keep exporting, and handlers never wait
(``offer`` is ``send_nowait``; a full lane drops the trace and counts it).

The drain task takes one trace with ``receive()`` and then everything already
waiting with ``receive_nowait()``, up to ``max_batch``: anyio's ``receive()``
always yields to the loop first, so a consumer taking one item per call falls
behind a burst, while draining what is ready batches naturally under load and
adds no latency when idle.

Example:
    >>> from flowtracker._pipeline.lane import Lane
    >>> from flowtracker import MemoryExporter
    >>> lane = Lane("memory", MemoryExporter(), max_queue=8, max_batch=4, timeout=1.0)
    >>> lane.stats().queued
    0
"""

from __future__ import annotations

import asyncio
import contextlib
import time
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
    """Buffers traces for one exporter and exports them in batches."""

    def __init__(
        self, name: str, exporter: Exporter, *, max_queue: int, max_batch: int, timeout: float
    ) -> None:
        self.name = name
        self.exporter = exporter
        self.max_batch = max_batch
        self.timeout = timeout
        self.max_queue = max_queue
        # Streams are made by ``open()`` when the tracker starts: an unused
        # stream would warn when collected.
        self._send: MemoryObjectSendStream[Trace] | None = None
        self._receive: MemoryObjectReceiveStream[Trace] | None = None
        self.offered = 0
        self.exported = 0
        self.failed = 0
        self.dropped = 0
        self._processed = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.failure_log = FailureLog(name)
        self.task: asyncio.Task[None] | None = None
        self.deadline: float | None = None
        self._timed_out = False
        self.closing = False
        self._interrupted: list[Trace] | None = None

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
        return True

    def drop(self, count: int) -> None:
        """Counts traces this lane never received (tracker not running)."""
        self.dropped += count

    def stats(self, dropped_before: int = 0) -> ExporterStats:
        """The counters; ``dropped_before``: traces dropped before any lane saw them (the hand-over)."""
        return ExporterStats(
            self.exported, self.failed, self.dropped + dropped_before, self.offered - self._processed
        )

    def renewed(self) -> Lane:
        """A new, empty lane for the same exporter with the same settings."""
        return Lane(
            self.name, self.exporter, max_queue=self.max_queue, max_batch=self.max_batch, timeout=self.timeout
        )

    def abandon(self) -> None:
        """Forgets what is queued, uncounted: in a forked child it is the parent's to export."""
        self.closing = True
        self._interrupted = None
        # Closing wakes a waiting drain task through its loop: in a child that
        # loop may be closed or never run again, which is fine either way.
        with contextlib.suppress(RuntimeError):
            if self._send is not None:
                self._send.close()
            if self._receive is not None:
                while True:
                    try:
                        self._receive.receive_nowait()
                    except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                        break
                self._receive.close()

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
                await self._last_export()
            elif self._interrupted:  # aclose() gave up waiting on this batch
                self.failed += len(self._interrupted)
                self._advance(len(self._interrupted))
                self._interrupted = None
            raise

    async def _last_export(self) -> None:
        receive = self._receive
        assert receive is not None
        batch: list[Trace] = self._interrupted or []
        self._interrupted = None
        while True:
            try:
                batch.append(receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
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
        receive = self._receive
        assert receive is not None, "open() first"
        while True:
            try:
                # receive() always yields to the loop first; take what is ready
                # without that, and wait only when the lane is empty.
                batch = [receive.receive_nowait()]
            except anyio.WouldBlock:
                try:
                    batch = [await receive.receive()]
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    return
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                return
            while len(batch) < self.max_batch:
                try:
                    batch.append(receive.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
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
        while True:
            try:
                self._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            self.dropped += 1
            self._advance(1)
        self._receive.close()
