"""The app lifecycle both middlewares share: startup, shutdown, and stop signals without hooks.

Real trackers, real exporters, real signals raised in this process (the
handlers in place before each test are put back after it: conftest's
``stop_signal_handlers_restored``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from doubles import StalledExporter, accounted

import flowtracker as ft
from flowtracker.integrations.lifecycle import AppLifecycle
from flowtracker.integrations.stop_signals import STOP_SIGNALS, arm


class OrderedExporter(ft.MemoryExporter):
    """Records, in ``events``, each export (after ``delay`` seconds) beside the signals it saw."""

    def __init__(self, events: list[str], delay: float = 0.0) -> None:
        super().__init__()
        self.events, self.delay = events, delay

    async def export(self, traces: Sequence[ft.Trace]) -> None:
        await asyncio.sleep(self.delay)
        await super().export(traces)
        self.events.append(f"exported {len(traces)}")


def recording_handler(events: list[str]) -> Any:
    def handler(signum: int, frame: Any) -> None:
        events.append(f"handler {signal.Signals(signum).name}")

    return handler


async def armed_with_one_trace(signum: int, events: list[str], delay: float) -> AppLifecycle:
    """An app started by its first request under a recording ``signum`` handler, one trace
    finished and not yet exported (its exporter takes ``delay`` seconds)."""
    signal.signal(signum, recording_handler(events))
    tracker = ft.Tracker(exporters=[OrderedExporter(events, delay=delay)])
    app = AppLifecycle(tracker)
    await app.start_from_request()
    with ft.start_root_span("GET /", {}, tracker=tracker):
        pass
    return app


async def until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


class TestStartupAndShutdown:
    async def test_startup_starts_and_shutdown_closes_a_tracker_it_started(self, memory):
        """An unstarted tracker starts on the app's loop at startup; shutdown exports and closes it."""
        tracker = ft.Tracker(exporters=[memory])
        app = AppLifecycle(tracker)
        await app.startup()
        assert tracker.running
        with ft.start_root_span("GET /", {}, tracker=tracker):
            pass
        await app.shutdown()
        assert not tracker.running
        assert len(memory.traces) == 1

    async def test_a_running_tracker_is_flushed_not_closed(self, tracker, memory):
        """A tracker that already ran is not the app's to close: shutdown only flushes it."""
        app = AppLifecycle(tracker)
        await app.startup()
        with ft.start_root_span("GET /", {}, tracker=tracker):
            pass
        await app.shutdown()
        assert tracker.running
        assert len(memory.traces) == 1

    async def test_zero_config_flushes_the_tracker_in_effect(self, tracker, memory):
        """With no tracker given, shutdown flushes the tracker requests report to (here the test's)."""
        app = AppLifecycle(None)
        await app.startup()
        with ft.start_root_span("GET /", {}):
            pass
        await app.shutdown()
        assert len(memory.traces) == 1

    async def test_a_tracker_on_another_thread_is_flushed_there(self):
        """A tracker running on its own thread (as the default one does) is flushed on that thread."""
        memory = ft.MemoryExporter()
        events: list[str] = []
        with ft.Tracker(exporters=[OrderedExporter(events, delay=0.3), memory]) as threaded:
            app = AppLifecycle(threaded)
            await app.startup()
            with ft.start_root_span("GET /", {}, tracker=threaded):
                pass
            started = time.monotonic()
            await app.shutdown()
            assert events == ["exported 1"]  # flushed before shutdown returned
            assert time.monotonic() - started < 2  # woken by that thread, not by chance
            assert threaded.running

    async def test_shutdown_waits_at_most_close_timeout_and_counts_what_it_could_not_export(self):
        """A stalled exporter holds shutdown for close_timeout (and as long to close), no more."""
        stalled = StalledExporter()
        tracker = ft.Tracker(exporters=[stalled], close_timeout=0.2)
        app = AppLifecycle(tracker)
        await app.startup()
        with ft.start_root_span("GET /", {}, tracker=tracker):
            pass
        started = time.monotonic()
        await app.shutdown()
        assert time.monotonic() - started < 1.5
        assert not tracker.running
        accounted(tracker.stats)
        lane = tracker.stats.exporters["stalled"]
        assert lane.exported == 0
        assert lane.failed + lane.dropped == 1

    async def test_a_cancelled_shutdown_finishes_then_raises(self):
        """Cancelling the task that runs shutdown (Ctrl-C again) waits for the export, then cancels."""
        events: list[str] = []
        tracker = ft.Tracker(exporters=[OrderedExporter(events, delay=0.3)])
        app = AppLifecycle(tracker)
        await app.startup()
        with ft.start_root_span("GET /", {}, tracker=tracker):
            pass
        task = asyncio.create_task(app.shutdown())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert events == ["exported 1"]
        assert not tracker.running

    async def test_a_tracker_that_cannot_start_is_logged_and_the_app_starts(self, caplog):
        """A closed tracker cannot start: startup logs why and returns (tracing never stops an app)."""
        tracker = ft.Tracker(exporters=[])
        await tracker.aclose()
        with caplog.at_level(logging.ERROR, "flowtracker"):
            await AppLifecycle(tracker).startup()
        assert "could not start the tracker" in caplog.text
        assert "this Tracker was closed" in caplog.text


class TestWithoutStartupHook:
    async def test_first_request_starts_the_tracker_and_arms_the_stop_signals(self, memory):
        """start_from_request() runs startup once and puts flowtracker's handler on SIGTERM and SIGINT."""
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        tracker = ft.Tracker(exporters=[memory])
        app = AppLifecycle(tracker)
        await app.start_from_request()
        await app.start_from_request()
        assert app.started
        assert tracker.running
        for signum in STOP_SIGNALS:
            assert signal.getsignal(signum) not in (signal.SIG_DFL, signal.default_int_handler)
        await app.shutdown()

    async def test_signal_waits_for_the_flush_then_reaches_the_handler_it_replaced(self):
        """SIGTERM flushes the armed app's tracker first; only then does the server's handler run."""
        events: list[str] = []
        app = await armed_with_one_trace(signal.SIGTERM, events, delay=0.2)
        signal.raise_signal(signal.SIGTERM)
        assert app.stopping
        assert events == []  # held while the flush runs
        await until(lambda: len(events) == 2)
        assert events == ["exported 1", "handler SIGTERM"]
        await app.shutdown()

    async def test_a_second_signal_passes_both_on_at_once(self):
        """A second signal while the first waits for a slow flush reaches the handler twice, at once."""
        events: list[str] = []
        app = await armed_with_one_trace(signal.SIGINT, events, delay=1.0)
        signal.raise_signal(signal.SIGINT)
        await asyncio.sleep(0.05)
        assert events == []
        signal.raise_signal(signal.SIGINT)
        assert events == ["handler SIGINT", "handler SIGINT"]
        await until(lambda: "exported 1" in events)
        await asyncio.sleep(0.05)
        assert events == ["handler SIGINT", "handler SIGINT", "exported 1"]  # not passed on a third time
        await app.shutdown()

    async def test_an_ignored_signal_is_left_alone(self, memory):
        """A signal set to SIG_IGN stays ignored; the other one is still armed."""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        app = AppLifecycle(ft.Tracker(exporters=[memory]))
        await app.start_from_request()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN, signal.default_int_handler)
        await app.shutdown()

    def test_off_the_main_thread_it_says_once_what_it_cannot_do(self, caplog, memory):
        """A server on another thread gets its tracker started, and one warning: no flush at a stop."""
        before = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
        tracker = ft.Tracker(exporters=[memory])
        app = AppLifecycle(tracker)

        async def serve() -> None:
            await app.start_from_request()
            await app.start_from_request()
            await app.shutdown()

        with caplog.at_level(logging.WARNING, "flowtracker"):
            thread = threading.Thread(target=asyncio.run, args=(serve(),))
            thread.start()
            thread.join(10)
        warnings = [r for r in caplog.records if "cannot flush" in r.getMessage()]
        assert len(warnings) == 1
        assert "startup/shutdown hooks" in warnings[0].getMessage()
        assert {signum: signal.getsignal(signum) for signum in STOP_SIGNALS} == before

    async def test_arm_refuses_off_the_main_thread(self):
        """arm() is False off the main thread: only the main thread can set signal handlers."""
        app = AppLifecycle(None)
        result: list[bool] = []
        thread = threading.Thread(target=lambda: result.append(arm(app)))
        thread.start()
        thread.join(5)
        assert result == [False]
