"""The Tracker: turns ended spans into whole traces and feeds the exporter lanes.

A tracker runs on one event loop: the app's (``async with tracker`` /
``await tracker.start()``) or a private one in a daemon thread
(``with tracker`` / ``tracker.start_in_thread()``). Every decision that a
trace is complete, and every hand-off to the lanes, happens on that loop's
thread; spans ending in other threads pass their trace over with
``call_soon_threadsafe`` (one wake-up per batch, not per trace).

Finished traces are batched by time as well as by count: they are gathered
for ``batch_interval`` (5 ms by default) or until 64 of them wait,
then checked for completion and handed to the exporter lanes together, so a
service whose requests are spaced by I/O wakes the pipeline once per
interval, not once per request. ``flush()``, ``aclose()`` and the loop ending
take what is gathering at once; an idle ``flush()`` returns without awaiting.

Which tracker gets a new trace: the one given explicitly (middlewares), else
the one bound to the current context by ``async with tracker``, else the most
recently started one that is still running, else the default tracker.

The default tracker starts on first use, in a daemon thread with its own loop,
so it works in sync code, in threads, and across any number of event loops
coming and going (``asyncio.run`` twice, one loop per test). Its exporters come
from ``FLOWTRACKER_EXPORTERS`` (console when unset). At interpreter exit an
``atexit`` hook flushes it (at most ``close_timeout`` seconds); in a
``multiprocessing`` child, which leaves through ``os._exit``, the process's
exit finalizers do.

Under trio (or any async library that is not asyncio) ``async with tracker``
and ``await tracker.start()`` run the pipeline in a thread, as ``with tracker``
does: spans work the same, and ``flush()``/``aclose()`` wait in a worker thread.

Across ``fork()`` (``gunicorn --preload``, ``multiprocessing``), a tracker
stays with the process that started it. In the child, every tracker started
before the fork is *left behind*: it no longer runs there, nothing it had
buffered is exported twice (the parent exports it), and it is never picked
for a new trace. The child's traces go to the tracker in effect there,
usually a fresh default tracker (``FLOWTRACKER_EXPORTERS``) started on first
use: new roots, spans started under a span that was open at the fork (as
follow-up records of that trace), and roots given a left-behind tracker
explicitly (said once through ``logging``). ``start()`` on a left-behind
tracker raises ``RuntimeError``: create trackers after the fork to give a
child exporters of its own. See :mod:`flowtracker._pipeline.fork` for how the
trackers' threads are kept safe across the fork itself.

Example:
    >>> import asyncio, flowtracker as ft
    >>> memory = ft.MemoryExporter()
    >>> async def main():
    ...     async with ft.Tracker(exporters=[memory], service="orders"):
    ...         async with ft.span("checkout"):
    ...             pass
    >>> asyncio.run(main())
    >>> memory.traces[0]["service"]
    'orders'
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import contextvars
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterable
from types import MappingProxyType, TracebackType
from typing import Any, Literal, TypeVar

import anyio

from .._core import clock
from .._core.sink import BOUND_SINK, Limits, TraceSink, set_default_sink_resolver
from .._core.span import Span, activate, silent_span
from .._core.trace import all_ended, claim, stop_open
from .._wire.policy import DEFAULT_MAX_STRING, ExportPolicy
from .._wire.record import Trace
from .executor import PrestartedExecutor
from .exporter import Exporter
from .fork import import_before_threads, park_at_fork
from .handover import HandOver
from .lane import Lane
from .stats import TrackerStats

logger = logging.getLogger("flowtracker")

#: Turns ``Tracker(exporters=...)`` into exporter objects (strings are exporter
#: URLs; ``None`` reads the environment). Installed by :mod:`flowtracker.exporters`,
#: which knows the URL schemes; until then only exporter objects are accepted.
ExporterResolver = Callable[["Iterable[Any] | None", "OnConfigError"], "tuple[list[Exporter], str | None]"]

#: What a tracker does with a bad exporter setting: raise at start-up, or fall
#: back to the console exporter and say so (see ``Tracker(on_config_error=...)``).
OnConfigError = Literal["raise", "fallback"]
_exporter_resolver: ExporterResolver | None = None

_T = TypeVar("_T")
_get_ident = threading.get_ident

_running: list[Tracker] = []
#: Every tracker started and not yet closed: left behind in a forked child.
_started: weakref.WeakSet[Tracker] = weakref.WeakSet()
_default: Tracker | None = None
_default_lock = threading.Lock()
#: Seconds finished traces are gathered before they are checked and exported (``batch_interval``).
DEFAULT_BATCH_INTERVAL = 0.005
#: Finished traces that are checked at once, interval or not (fewer if ``max_batch`` is
#: smaller): one check per 64 traces costs little, and it keeps traces young. Held longer,
#: a burst's spans outlive several passes of the garbage collector's youngest generation
#: (700 objects; a trace of five spans is about twenty): 512 cost the ``pipeline``
#: benchmark a quarter of its throughput, where 32 or 128 cost a tenth.
CHECK_AT_ONCE = 64
_NEVER = 1 << 62


class Tracker:
    """Assembles finished traces and exports them, off the request path.

    Args:
        exporters: Where traces go: exporter objects, or exporter URLs as
            :func:`~flowtracker.exporters.exporter_from_url` reads them
            (``["console", "file:///var/log/traces.jsonl"]``). ``None``: from
            ``FLOWTRACKER_EXPORTERS``, else one
            :class:`~flowtracker.ConsoleExporter`. ``[]``: nowhere (traces are
            still assembled and counted). An unknown URL raises ``ValueError``
            listing the known schemes; an object without ``export``/``aclose``
            raises ``TypeError``.
        service: Written as ``service`` in every trace.
        max_queue: Traces buffered per exporter lane before new ones are
            dropped and counted; also how many traces finished in other
            threads may wait for a busy loop. Default 8192.
        max_batch: Traces handed to one ``export()`` call at most. Default 512.
        batch_interval: Seconds finished traces are gathered before they are
            checked for completion and handed to the lanes together: the
            pipeline wakes at most this often under sparse traffic (sooner
            when 64 traces wait, or ``max_batch`` if fewer, and on
            ``flush()`` and close). A
            trace reaches its exporters at most this long after its last span
            ended (``completion_delay``, if longer), unless an exporter is
            still busy with the batches ahead of it. 0: checked on the loop's
            next turn, each lane woken per turn. Default 0.005 (5 ms).
        export_timeout: Seconds one ``export()`` call may take before its batch
            counts as failed. Default 30.
        close_timeout: Seconds ``aclose()`` waits for the lanes to drain, and
            then for each exporter's ``aclose()``. Default 10.
        max_spans_per_trace: Spans kept per trace; the rest are counted
            (``dropped_spans`` in the trace). Default 10,000.
        max_tags_per_span: Distinct tag keys per span. Default 128.
        max_events_per_span: Events per span. Default 128.
        max_trace_age: Seconds after which a trace with spans still open is
            exported anyway, those spans marked ``unfinished``. Default 300.
        completion_delay: Seconds to wait, after a trace's last span ended,
            for fire-and-forget children. Default 0: the trace is emitted
            with the next batch (``batch_interval``), always after the
            loop's already-scheduled callbacks have run.
        redact_keys: Tag-key words whose values are replaced by
            ``[REDACTED]`` at export. Default: authorization, cookie,
            password, passwd, secret, token, api_key and a few more (see
            ``flowtracker._policy.DEFAULT_REDACT_KEYS``); ``()`` turns it off.
        max_value_length: Longest string (tag value, name, error message)
            exported whole; longer ones are cut and marked. Default 4096.
        sample_rate: Head sampling: the share of new root traces recorded,
            decided from the trace id. An incoming ``traceparent``'s sampled
            flag wins. Default 1.0.
        tail_sampler: Called with each finished :class:`Trace`; return False to
            drop it (counted in ``traces_sampled_out``). Default: keep all.
        on_config_error: ``"raise"`` (default): a bad exporter setting raises
            here, at start-up. ``"fallback"``: it is named once on stderr and
            through ``logging``, the console exporter takes its place, and
            ``stats.config_error`` holds the message. The default tracker and
            the trackers the middlewares make for themselves fall back, so a
            typo in ``FLOWTRACKER_EXPORTERS`` never breaks a request.

    Example:
        >>> import flowtracker as ft
        >>> tracker = ft.Tracker(exporters=[ft.MemoryExporter()], service="orders")
        >>> tracker.stats.traces_completed
        0
    """

    def __init__(
        self,
        exporters: Iterable[Exporter | str] | None = None,
        *,
        service: str | None = None,
        max_queue: int = 8192,
        max_batch: int = 512,
        batch_interval: float = DEFAULT_BATCH_INTERVAL,
        export_timeout: float = 30.0,
        close_timeout: float = 10.0,
        max_spans_per_trace: int = 10_000,
        max_tags_per_span: int = 128,
        max_events_per_span: int = 128,
        max_trace_age: float = 300.0,
        completion_delay: float = 0.0,
        redact_keys: Iterable[str] | None = None,
        max_value_length: int = DEFAULT_MAX_STRING,
        sample_rate: float = 1.0,
        tail_sampler: Callable[[Trace], bool] | None = None,
        on_config_error: OnConfigError = "raise",
    ) -> None:
        built, self._config_error = resolve_exporters(exporters, on_config_error)
        if max_queue < 1 or max_batch < 1:
            raise ValueError("max_queue and max_batch must be at least 1")
        if not batch_interval >= 0.0:
            raise ValueError(f"batch_interval must be 0 or more seconds, got {batch_interval!r}")
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be between 0 and 1, got {sample_rate!r}")
        self.service = service
        self.limits = Limits(
            max_spans_per_trace=max_spans_per_trace,
            max_tags_per_span=max_tags_per_span,
            max_events_per_span=max_events_per_span,
        )
        self.max_trace_age = max_trace_age
        self.completion_delay = completion_delay
        self.close_timeout = close_timeout
        self.sample_rate = sample_rate
        self._sample_threshold = int(sample_rate * (1 << 56))
        self.sampling = sample_rate < 1.0
        self.tail_sampler = tail_sampler
        self._policy = ExportPolicy(redact_keys, max_value_length)
        self._lanes: list[Lane] = []
        for exporter in built:
            name = _unique_name(exporter, {lane.name for lane in self._lanes})
            self._lanes.append(
                Lane(
                    name,
                    exporter,
                    max_queue=max_queue,
                    max_batch=max_batch,
                    timeout=export_timeout,
                    before_last_export=self._check,
                )
            )
        # Counters (read by ``stats``; written on the loop's thread only, except
        # the hand-over's drops, see HandOver).
        self._traces_completed = 0
        self._traces_dropped = 0
        self._sampled_out = 0
        self._unfinished = 0
        self._follow_ups = 0
        # Assembly state.
        #: Traces under assembly, by their root (the core adds each new one), swept for the age limit.
        self.open_traces: set[Span] = set()
        self._pending: list[Span] = []
        # The batched completion check (see _schedule_completion): its timer,
        # and how many pending traces make span_ended() schedule it (1: the
        # first one; CHECK_AT_ONCE while the timer runs; _NEVER once it is queued).
        self.batch_interval = batch_interval
        self._check_at_once = min(max_batch, CHECK_AT_ONCE)
        self._check_timer: asyncio.TimerHandle | None = None
        self._check_at = 1
        self._checking = False
        self._handover = HandOver(max_queue, self._release)
        #: The parent's pid once this tracker was left behind by a fork (see the module docstring).
        self._forked_from: int | None = None
        self._forward_noted = False
        # Loop binding.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        #: True once :meth:`aclose` ran: new traces go to another tracker.
        self.closed = False
        self._tasks: list[asyncio.Task[None]] = []
        self._context_token: contextvars.Token[TraceSink | None] | None = None
        self._thread: threading.Thread | None = None
        self._thread_stop: asyncio.Event | None = None

    # -- public ------------------------------------------------------------

    @property
    def exporters(self) -> tuple[Exporter, ...]:
        """The exporters, in lane order."""
        return tuple(lane.exporter for lane in self._lanes)

    @property
    def max_spans_per_trace(self) -> int:
        """Spans kept per trace (see the constructor)."""
        return self.limits.max_spans_per_trace

    @property
    def max_tags_per_span(self) -> int:
        """Distinct tag keys kept per span (see the constructor)."""
        return self.limits.max_tags_per_span

    @property
    def max_events_per_span(self) -> int:
        """Events kept per span (see the constructor)."""
        return self.limits.max_events_per_span

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``aclose()``."""
        return self._loop is not None and not self.closed

    @property
    def stats(self) -> TrackerStats:
        """An immutable snapshot of the counters; see :class:`TrackerStats`."""
        handover_dropped = self._handover.dropped  # dropped by every lane
        return TrackerStats(
            traces_completed=self._traces_completed + handover_dropped,
            traces_dropped=self._traces_dropped + handover_dropped,
            spans_dropped=self.limits.spans_dropped,
            tags_dropped=self.limits.tags_dropped,
            events_dropped=self.limits.events_dropped,
            traces_sampled_out=self._sampled_out,
            traces_unfinished=self._unfinished,
            tags_redacted=self._policy.redacted,
            values_truncated=self._policy.truncated,
            exporters=MappingProxyType({lane.name: lane.stats(handover_dropped) for lane in self._lanes}),
            config_error=self._config_error,
            traces_follow_up=self._follow_ups,
        )

    async def start(self) -> None:
        """Runs the export pipeline on the current event loop (idempotent).

        With no asyncio loop running here (trio, another library), the
        pipeline runs on its own loop in a thread, as with :meth:`start_in_thread`.
        """
        if self._forked_from is not None:
            raise RuntimeError(
                f"this Tracker was started in process {self._forked_from} before fork(), and a "
                f"tracker does not survive fork(): create a new Tracker in this process "
                f"(gunicorn: in post_fork or the app's startup; multiprocessing: in the worker)"
            )
        if self.closed:
            raise RuntimeError("this Tracker was closed; create a new one")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # trio or another async library: a loop of our own
            self.start_in_thread()
            return
        if self._loop is not None:
            if self._loop is not loop:
                raise RuntimeError("this Tracker already runs on another event loop")
            return
        self._loop = loop
        self._loop_thread = threading.get_ident()
        # Exporter tasks run in a context of their own whose current span is
        # non-recording: spans an exporter opens (say, through an instrumented
        # HTTP client) must not become traces that are exported in turn.
        quiet = contextvars.Context()
        quiet.run(activate, silent_span())
        for lane in self._lanes:
            lane.open()
            lane.task = quiet.run(loop.create_task, lane.run())
            self._tasks.append(lane.task)
        self._tasks.append(quiet.run(loop.create_task, self._sweep()))
        _running.append(self)
        _started.add(self)
        if len(self._handover):
            self._handover.wake_up(loop, self._on_handover)

    async def flush(self, timeout: float | None = None) -> bool:
        """Exports every trace completed so far; True unless ``timeout`` ran out.

        May be awaited on any event loop: a tracker running on another one
        (the default tracker's thread, ``with tracker``) flushes there.

        Example:
            >>> async def handler(tracker):
            ...     await tracker.flush(timeout=5)
        """
        if self._loop is None or self.closed or self._idle():
            return True  # nothing completed waits anywhere: no await at all
        if self._loop_thread != threading.get_ident():  # a thread's tracker, or trio
            return await self._on_own_loop(self.flush(timeout), True)
        await asyncio.sleep(0)  # lets completion checks already scheduled run
        self._check()
        with anyio.move_on_after(timeout) as scope:
            for lane in self._lanes:
                await lane.wait_processed()
        return not scope.cancelled_caught

    async def aclose(self, timeout: float | None = None) -> None:
        """Flushes, emits still-open traces as unfinished, closes the exporters.

        Waits at most ``timeout`` (default ``close_timeout``) for the lanes, and
        as long again for the exporters' own ``aclose()``. Idempotent.
        """
        if self.closed:
            return
        if self._loop is None:
            self.closed = True
            self._handover.drop_all()
            await self._close_exporters(timeout)
            return
        if self._loop_thread != threading.get_ident():  # a thread's tracker, or trio
            if self._thread is not None:
                await _wait_in_thread(self.close_thread, timeout)
            else:
                await self._on_own_loop(self.aclose(timeout), None)
            return
        timeout = self.close_timeout if timeout is None else timeout
        await asyncio.sleep(0)
        self._check()
        for root in list(self.open_traces):
            self._emit_unfinished(root)
        await self.flush(timeout)
        self.closed = True
        if self in _running:
            _running.remove(self)
        for lane in self._lanes:
            lane.closing = True
            lane.close()
        for task in self._tasks:
            task.cancel()
        # wait() does not re-raise the lane tasks' own CancelledError, so only a
        # cancellation of *this* task stops aclose(): one already being
        # cancelled (a `finally:` after Ctrl-C) still closes the exporters.
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._tasks.clear()
        await self._close_exporters(timeout)
        self._loop = None
        self._loop_thread = None
        _started.discard(self)
        self._handover.drop_all()

    async def __aenter__(self) -> Tracker:
        await self.start()
        self._context_token = BOUND_SINK.set(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token, self._context_token = self._context_token, None
        if token is not None:
            try:
                BOUND_SINK.reset(token)
            except (ValueError, RuntimeError):
                BOUND_SINK.set(None)
        await self.aclose()

    def start_in_thread(self, name: str = "flowtracker-export") -> None:
        """Runs the pipeline on a private event loop in a daemon thread.

        For sync programs, and for the default tracker. Stop it with
        :meth:`close_thread` (or leave ``with tracker``).
        """
        if self._thread is not None:
            return
        # Whatever the thread would import on first use is imported here: a
        # fork() in another thread must never cut that thread mid-import.
        import_before_threads()
        ready = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            try:
                await self.start()
                self._thread_stop = asyncio.Event()
            except BaseException as error:  # reported to the starting thread
                failure.append(error)
                return
            finally:
                ready.set()
            await self._thread_stop.wait()
            await self.aclose()

        def run() -> None:
            # A loop run by hand, not asyncio.run(): its teardown would start a
            # thread to shut the executor down, which fails at interpreter exit.
            loop = asyncio.new_event_loop()
            park_at_fork(loop, threading.current_thread())
            executor = PrestartedExecutor()
            loop.set_default_executor(executor)
            try:
                loop.run_until_complete(main())
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                ready.set()
                loop.close()
                executor.shutdown(wait=False)

        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]

    def close_thread(self, timeout: float | None = None) -> None:
        """Flushes and stops a tracker started with :meth:`start_in_thread`."""
        thread, loop, stop = self._thread, self._loop, self._thread_stop
        if thread is None or loop is None or stop is None:
            return
        try:
            loop.call_soon_threadsafe(stop.set)
        except RuntimeError:  # loop already closed
            return
        thread.join(timeout if timeout is not None else 3 * self.close_timeout)

    def __enter__(self) -> Tracker:
        self.start_in_thread()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close_thread()

    # -- the TraceSink interface (called by the core) ------------------------

    def sample(self, trace_id: int, sampled: bool | None) -> bool:
        """Head sampling for a new root: the caller's flag wins, else ``sample_rate``."""
        if sampled is not None:
            return sampled
        if self._sample_threshold >= 1 << 56:
            return True
        return (trace_id & ((1 << 56) - 1)) < self._sample_threshold

    def span_ended(self, root: Span) -> None:
        """A span of the trace ``root`` carries ended and it may have been the last one."""
        if self._loop_thread == _get_ident():
            pending = self._pending
            pending.append(root)
            if len(pending) >= self._check_at:
                self._schedule_completion()
            return
        if self._forked_from is not None:
            self._forward(root)
        elif self.closed:
            self._handover.drop(root)
        else:
            self._handover.put(root, self._loop, self._on_handover)

    # -- on the tracker's loop ------------------------------------------------

    def _schedule_completion(self) -> None:
        """Has the pending traces checked, in batches, after the callbacks already scheduled ran.

        Batched by time: the first trace to wait sets a timer, and the check
        runs ``batch_interval`` later (``completion_delay`` if that is longer)
        for every trace that ended meanwhile, here or in other threads (see
        :meth:`_on_handover`). Traffic spaced by I/O thus costs one timer and
        one lane wake-up per interval, not a loop callback and a wake-up per
        trace. :data:`CHECK_AT_ONCE` traces waiting (``max_batch``, if fewer)
        are checked at once, unless a ``completion_delay`` is asked. A timer runs after the callbacks
        scheduled before it, so the check still comes after every callback
        already scheduled when the trace ended (fire-and-forget children have
        started by then). Held: at most :data:`CHECK_AT_ONCE` traces (an
        interval's worth, with ``completion_delay``) plus the hand-over's bound.
        """
        loop = self._loop
        assert loop is not None
        if self._check_timer is None:
            delay = max(self.batch_interval, self.completion_delay)
            if delay > 0:
                self._check_timer = loop.call_later(delay, self._check)
                self._check_at = _NEVER if self.completion_delay else self._check_at_once
                return
        self._check_at = _NEVER  # a full batch: now
        loop.call_soon(self._check)

    def _check(self) -> None:
        """The batched completion check (see :meth:`_schedule_completion`); also flush's and close's."""
        timer, self._check_timer = self._check_timer, None
        if timer is not None:
            timer.cancel()
        self._check_at = 1
        self._checking = True
        try:
            self._take_handed_over()
            self._complete_pending()
        finally:
            self._checking = False

    def _idle(self) -> bool:
        """Nothing completed waits: not handed over, not pending, not queued or in export.

        Right from any thread (a flush from another loop reads it) because of
        the order: a trace already taken from the hand-over is in a check
        (``_checking``) until every lane it went to counts it as offered.
        """
        return (
            not len(self._handover)
            and not self._checking
            and not self._pending
            and all(lane.idle for lane in self._lanes)
        )

    def _on_handover(self) -> None:
        """Other threads handed traces over: the next check takes them.

        Until it has (``HandOver.take``), further hand-overs wake the loop no
        more: one wake-up per interval, not per trace.
        """
        if self._check_timer is None and self._check_at == 1:
            self._schedule_completion()

    def _take_handed_over(self) -> None:
        self._pending.extend(self._handover.take())

    def _release(self, root: Span) -> bool:
        """Forgets a trace that will not be emitted; False if it was emitted or dropped already.

        Callers race (a completion check here, a drop in another thread, the
        age sweep): the core's ``claim`` lets only one take a trace's spans.
        """
        return claim(root) is not None

    def _complete_pending(self) -> None:
        pending, self._pending = self._pending, []
        for root in pending:
            spans = root.spans
            if not spans:  # emitted or dropped already (a second trigger for the same trace)
                continue
            # The end count seen by the trigger equal to the spans started now
            # means no span started since: all ended. Otherwise look.
            if root.ended_seen != len(spans) and not all_ended(spans):
                continue
            spans = claim(root)
            if spans is not None:
                self._emit(root, spans, 0)

    def _emit(self, root: Span, spans: list[Span], unfinished: int) -> None:
        """Hands the spans claimed from the trace ``root`` carries to every lane as one ``Trace`` record.

        The one way out of assembly: complete traces, follow-ups, unfinished
        ones. The caller claimed the trace (the core's ``claim``).
        """
        if not spans:
            return
        extras = root.extras  # what the trace rarely has: a follow-up, dropped spans
        if extras is None:
            follow_up, dropped = False, 0
        else:
            follow_up, dropped = extras.follow_up, extras.dropped_spans
        record = Trace(root.trace_id_int, self.service, spans, dropped, follow_up, unfinished, self._policy)
        if unfinished:
            self._unfinished += 1
            record.to_dict()  # snapshot now: open spans may still change
        sampler = self.tail_sampler
        if sampler is not None:
            try:
                keep = sampler(record)
            except Exception:
                logger.exception("tail_sampler raised; keeping the trace")
                keep = True
            if not keep:
                self._sampled_out += 1
                return
        self._traces_completed += 1
        if follow_up:
            self._follow_ups += 1
        if self.closed:
            self._traces_dropped += 1
            for lane in self._lanes:
                lane.drop(1)
            return
        accepted = True
        for lane in self._lanes:
            if not lane.offer(record):
                accepted = False
        if not accepted:
            self._traces_dropped += 1

    # -- elsewhere than on the tracker's loop --------------------------------

    async def _on_own_loop(self, coroutine: Coroutine[Any, Any, _T], if_gone: _T) -> _T:
        """Runs ``coroutine`` on this tracker's loop and waits for it here (another
        loop, another thread, trio); ``if_gone`` when that loop is closed."""
        loop = self._loop
        try:
            if loop is None:
                raise RuntimeError("not running")
            future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        except RuntimeError:  # closed meanwhile
            coroutine.close()
            return if_gone
        return await _wait_for(future)

    def _forward(self, root: Span) -> None:
        """In a forked child: hands a trace that reported here to the tracker in effect."""
        target = resolve_tracker()
        self._note_left_behind()
        self.open_traces.discard(root)
        root.sink = target
        target.open_traces.add(root)
        target.span_ended(root)

    def _note_left_behind(self) -> None:
        """Says once, in a forked child, that this tracker's traces go elsewhere."""
        if self._forward_noted:
            return
        self._forward_noted = True
        logger.warning(
            "flowtracker: Tracker(%s) was started in process %s before fork(); it does not run in "
            "this child process (%d), whose traces go to the tracker started here, else to the "
            "default tracker (FLOWTRACKER_EXPORTERS, else the console). To choose where a child's "
            "traces go, create its tracker after the fork (gunicorn: post_fork or the app's "
            "startup; multiprocessing: in the worker).",
            f"service={self.service!r}" if self.service else ", ".join(lane.name for lane in self._lanes),
            self._forked_from,
            os.getpid(),
        )

    def _leave_behind(self, parent: int, *, quiet: bool) -> None:
        """In a forked child: this tracker ran in ``parent`` and stays there.

        What it buffered or had open is the parent's, which exports it: the
        child forgets it uncounted. Spans still open lose their recording (their
        end belongs to the parent), their trace's spans are taken so spans the
        child starts under them go out as follow-ups, and everything that
        reports here from now on is forwarded (see :meth:`_forward`).
        """
        self._forked_from = parent
        self._forward_noted = quiet
        self.closed = True
        if self._thread is None:  # the loop ran on the forking thread: the child may run it on
            for task in self._tasks:
                with contextlib.suppress(RuntimeError):
                    task.cancel()
        self._tasks = []
        abandoned, self._lanes = self._lanes, [lane.renewed() for lane in self._lanes]
        for lane in abandoned:
            lane.abandon()
        for root in list(self.open_traces):
            spans = claim(root)
            if spans is not None:
                stop_open(spans)
        self._pending = []
        self._check_timer = None  # the parent's loop's
        self._check_at = 1
        self._handover = HandOver(self._handover.bound, self._release)
        self._loop = None
        self._loop_thread = None
        self._thread = None
        self._thread_stop = None
        self._traces_completed = self._traces_dropped = self._sampled_out = 0
        self._unfinished = self._follow_ups = 0
        self.limits.spans_dropped = self.limits.tags_dropped = self.limits.events_dropped = 0
        self._policy.redacted = self._policy.truncated = 0

    def _emit_unfinished(self, root: Span) -> None:
        spans = claim(root)
        if spans is not None:
            self._emit(root, spans, stop_open(spans))

    async def _sweep(self) -> None:
        """Emits traces older than ``max_trace_age`` with their open spans unfinished,
        and cancels exports that run past ``export_timeout`` (the lanes' watchdog)."""
        timeouts = [lane.timeout for lane in self._lanes]
        interval = max(0.02, min(1.0, self.max_trace_age / 4, *(t / 4 for t in timeouts)))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for lane in self._lanes:
                lane.cancel_if_overdue(now)
            limit = clock.now_ns() - int(self.max_trace_age * 1e9)
            for root in list(self.open_traces):
                # A trace's age: its oldest span's, the first in its list (the
                # root, or a follow-up's first late span).
                spans = root.spans
                if spans and spans[0].start_ns < limit:
                    # All ended: a completion check that never came; emitted whole.
                    self._emit_unfinished(root)

    async def _close_exporters(self, timeout: float | None) -> None:
        timeout = self.close_timeout if timeout is None else timeout
        for lane in self._lanes:
            try:
                with anyio.fail_after(timeout):
                    await lane.exporter.aclose()
            except Exception as error:
                logger.warning("exporter %s failed to close: %r", lane.name, error)


async def _wait_for(future: concurrent.futures.Future[_T]) -> _T:
    """Awaits another thread's future under asyncio (no thread needed) or trio (a worker thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return await anyio.to_thread.run_sync(future.result)
    return await asyncio.wrap_future(future)


async def _wait_in_thread(blocking: Callable[[float | None], None], timeout: float | None) -> None:
    """Runs a blocking call (joining a tracker's thread) in a worker thread, under asyncio or trio."""
    await anyio.to_thread.run_sync(blocking, timeout)


def _unique_name(exporter: object, taken: set[str]) -> str:
    base = getattr(exporter, "name", None) or type(exporter).__name__
    name, number = str(base), 2
    while name in taken:
        name = f"{base}#{number}"
        number += 1
    return name


def resolve_exporters(
    exporters: Iterable[Any] | None, on_error: OnConfigError
) -> tuple[list[Exporter], str | None]:
    """The exporters for ``Tracker(exporters=...)`` and the mistake fallen back from,
    through the installed resolver (``flowtracker.exporters``' URL reader)."""
    if _exporter_resolver is None:
        raise RuntimeError("no exporter resolver installed: import flowtracker")
    return _exporter_resolver(exporters, on_error)


def set_exporter_resolver(resolver: ExporterResolver) -> None:
    """Installs what turns exporter URLs and ``None`` into exporters (see :data:`ExporterResolver`)."""
    global _exporter_resolver
    _exporter_resolver = resolver


def resolve_tracker() -> Tracker:
    """The tracker a new root reports to when none is given or bound: the most
    recently started one that still runs, else the default tracker."""
    while _running:
        latest = _running[-1]
        loop = latest._loop
        if not latest.closed and loop is not None and not loop.is_closed():
            return latest
        _running.pop()
    return default_tracker()


def default_tracker() -> Tracker:
    """The process-wide default tracker, started on first use in a daemon thread.

    Example:
        >>> import flowtracker as ft
        >>> ft.default_tracker().running
        True
    """
    global _default
    tracker = _default
    if tracker is not None and not tracker.closed:
        return tracker
    with _default_lock:
        if _default is None or _default.closed:
            created = Tracker(on_config_error="fallback")  # never fails a span
            created.start_in_thread(name="flowtracker-default")
            _default = created
            _flush_at_process_exit()
            for left in _left_running:  # the trackers this child's new traces would have gone to
                left._note_left_behind()
            _left_running.clear()
        return _default


@atexit.register
def _flush_default_at_exit() -> None:
    tracker = _default
    if tracker is not None:
        tracker.close_thread()


def _flush_at_process_exit() -> None:
    """Has a ``multiprocessing`` child flush the default tracker too: it leaves
    through ``os._exit()``, which skips ``atexit``, after its exit finalizers."""
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        util.Finalize(None, _flush_default_at_exit, exitpriority=10)


# -- fork() (see the module docstring) -------------------------------------------

_fork_holds_default_lock = False
#: In a forked child: the user's trackers that were running in the parent.
_left_running: list[Tracker] = []


def _before_fork() -> None:
    # A child inheriting the lock held (a thread was starting the default
    # tracker) could never start its own: wait for the start to finish.
    global _fork_holds_default_lock
    _fork_holds_default_lock = _default_lock.acquire(timeout=5.0)


def _after_fork_in_parent() -> None:
    global _fork_holds_default_lock
    if _fork_holds_default_lock:
        _fork_holds_default_lock = False
        _default_lock.release()


def _after_fork_in_child() -> None:
    global _default, _default_lock, _fork_holds_default_lock
    _default_lock = threading.Lock()
    _fork_holds_default_lock = False
    left_default, _default = _default, None
    _left_running[:] = [tracker for tracker in _running if tracker is not left_default]
    _running.clear()
    parent = os.getppid()
    for tracker in list(_started):
        tracker._leave_behind(parent, quiet=tracker is left_default)
    _started.clear()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork()
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
    )
set_default_sink_resolver(resolve_tracker)
