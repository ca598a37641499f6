"""The event-loop monitor: busy time per span, blocks pinned on the span that blocked.

Blocks are caused for real (``time.sleep``, a CPU loop) in handlers of real
aiohttp and uvicorn servers on 127.0.0.1, among concurrent requests that only
await. Durations are asserted only as lower bounds a blocking call guarantees
(a 300 ms sleep holds the loop for at least 300 ms), or as relations the
monitor's own bookkeeping makes exact whatever the machine's load (a span
ends at the clock reading its time was split at, so in one callback a
parent's own busy time is its duration less its children's, to the
nanosecond).
"""

# ruff: noqa: ASYNC251, ASYNC110  (blocking the loop, and polling across threads, are the point)
from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web
from loop_helpers import (  # noqa: F401  (nothing_left_patched: an autouse fixture)
    PLAIN_ENTER,
    PLAIN_EXIT,
    blocked_events,
    by_name,
    line_in,
    nothing_left_patched,
    patched,
    settle,
    spin,
    spin_frames,
)
from web_helpers import collected, fetch, serve, uvicorn_serve

import flowtracker as ft
from flowtracker._core import Span, activate, deactivate, start_child, start_root_span
from flowtracker.aiohttp import setup
from flowtracker.asgi import FlowTrackerMiddleware
from flowtracker.loop_monitor import BLOCKED_EVENT, MAX_FRAMES, monitor_threshold

THIS_FILE = Path(__file__).resolve()
#: Milliseconds two exact relations may differ by: float rounding of nanosecond sums.
EXACT = 1e-6


def line_of(marker: str) -> int:
    """The line number of the one line of this file ending with ``# <marker>``."""
    return line_in(THIS_FILE, marker)


class TestOff:
    async def test_nothing_patched_by_default(self, tracker, memory):
        """Without a monitor, Handle._run and the span methods are the plain ones; no busy_ms."""
        assert not patched()
        assert Span.__enter__ is PLAIN_ENTER
        async with ft.span("work"):
            spin(0.01)
        await tracker.flush()
        assert "busy_ms" not in memory.traces[0]["spans"][0]

    async def test_stop_undoes_exactly_what_start_did(self, tracker, memory):
        """stop() puts back Handle._run and the span methods; later callbacks and spans are not measured."""
        monitor = ft.monitor_event_loop(0.05)
        assert patched()
        assert Span.__dict__["__exit__"] is not PLAIN_EXIT
        monitor.stop()
        monitor.stop()  # idempotent
        assert not patched()
        assert Span.__dict__["__enter__"] is PLAIN_ENTER
        assert Span.__dict__["__exit__"] is PLAIN_EXIT
        await settle()
        async with ft.span("after"):
            time.sleep(0.06)
        await tracker.flush()
        assert monitor.stats.blocks == 0
        assert "busy_ms" not in memory.traces[0]["spans"][0]

    def test_event_name_defined_once_in_the_wire_layer(self):
        """The monitor and the views take the event's name from one place, the wire layer."""
        from flowtracker._wire import names
        from flowtracker.viz import _loop

        package = Path(ft.__file__).parent
        defined = [
            path.relative_to(package).as_posix()
            for path in package.rglob("*.py")
            if '= "event_loop.blocked"' in path.read_text()
        ]
        assert defined == ["_wire/names.py"]
        assert BLOCKED_EVENT is names.BLOCKED_EVENT is _loop.BLOCKED_EVENT

    def test_option_values(self):
        """monitor_loop=True is the default threshold, a number is seconds, anything else is refused."""
        assert monitor_threshold(True) == 0.1
        assert monitor_threshold(0.5) == 0.5
        assert monitor_threshold(False) is None
        for wrong in (0, -1, "1", None):
            with pytest.raises(ValueError, match="monitor_loop must be"):
                monitor_threshold(wrong)  # type: ignore[arg-type]


class TestApi:
    async def test_one_monitor_per_loop_reconfigured(self):
        """Calling it again on a watched loop returns the same monitor with the new threshold."""
        async with ft.monitor_event_loop(0.2) as monitor:
            again = ft.monitor_event_loop(block_threshold=0.05)
            assert again is monitor
            assert monitor.block_threshold == 0.05
            await settle()
            time.sleep(0.06)
            await settle()
            assert monitor.stats.blocks == 1
        assert not monitor.running

    def test_needs_a_loop(self):
        """Outside a running loop, without loop=, it says what it needs."""
        with pytest.raises(RuntimeError, match="running event loop"):
            ft.monitor_event_loop()

    def test_sync_with_on_a_loop_run_by_hand(self):
        """`with monitor_event_loop(loop=...)` works from sync code for a loop it then runs."""
        loop = asyncio.new_event_loop()
        try:
            with ft.monitor_event_loop(0.05, loop=loop) as monitor:
                loop.run_until_complete(asyncio.sleep(0.01))
                loop.call_soon(time.sleep, 0.06)
                loop.run_until_complete(asyncio.sleep(0.01))
            assert monitor.stats.blocks == 1
            assert monitor.stats.blocks_outside_spans == 1
            assert monitor.stats.max_block_ms >= 60
        finally:
            loop.close()

    async def test_stats_are_an_immutable_snapshot(self):
        """stats is a NamedTuple taken when read: later blocks do not change it."""
        with ft.monitor_event_loop(0.05) as monitor:
            await settle()
            before = monitor.stats
            time.sleep(0.06)
            await settle()
            after = monitor.stats
        assert before.blocks == 0
        assert after.blocks == 1
        assert after.blocked_ms >= 60
        assert after.max_block_ms >= 60
        assert after.watching
        assert after.callbacks > before.callbacks
        with pytest.raises(AttributeError):
            after.blocks = 0  # type: ignore[misc]


class TestBusy:
    async def test_cpu_work_is_busy_waiting_is_not(self, tracker, memory):
        """A span that computes is busy while computing; one that awaits is busy for little of its time."""
        with ft.monitor_event_loop(1.0):
            await settle()
            async with ft.span("request"):
                async with ft.span("crunch"):
                    spin(0.03)
                async with ft.span("wait"):
                    await asyncio.sleep(0.05)
        await tracker.flush()
        spans = by_name(memory.traces)
        crunch, wait = spans["crunch"], spans["wait"]
        assert crunch["busy_ms"] >= 30
        assert crunch["busy_ms"] <= crunch["duration_ms"] + EXACT
        assert wait["duration_ms"] >= 50
        assert wait["busy_ms"] < wait["duration_ms"] / 2

    async def test_self_time_split_at_child_spans_in_one_callback(self, tracker, memory):
        """Parent and child in one callback: each gets its own time; together they fit in the parent."""
        with ft.monitor_event_loop(1.0):
            await settle()
            with ft.span("parent"):
                spin(0.01)
                with ft.span("child"):
                    spin(0.03)
                spin(0.01)
            await settle()
        await tracker.flush()
        spans = by_name(memory.traces)
        parent, child = spans["parent"], spans["child"]
        assert child["busy_ms"] >= 30
        assert parent["busy_ms"] >= 20
        assert parent["busy_ms"] + child["busy_ms"] == pytest.approx(parent["duration_ms"], abs=EXACT)
        # The split is exactly at the child's start and end: the child ends at the
        # very clock reading its time was split at, however late the process ran.
        assert parent["busy_ms"] == pytest.approx(parent["duration_ms"] - child["duration_ms"], abs=EXACT)

    async def test_self_time_split_in_a_deeper_tree(self, tracker, memory):
        """Siblings, then a sibling with a child of its own, in one callback: every span gets its own time."""
        with ft.monitor_event_loop(1.0):
            await settle()
            with ft.span("root"):
                spin(0.005)
                with ft.span("first"):
                    spin(0.01)
                with ft.span("second"):
                    spin(0.005)
                    with ft.span("grandchild"):
                        spin(0.015)
                spin(0.005)
            await settle()
        await tracker.flush()
        spans = by_name(memory.traces)
        root, first, second, grandchild = (spans[n] for n in ("root", "first", "second", "grandchild"))
        assert grandchild["busy_ms"] >= 15
        assert first["busy_ms"] >= 10
        assert second["busy_ms"] >= 5
        assert root["busy_ms"] >= 10
        # Each parent's own time is its duration less its children's, split exactly at their start and end.
        assert second["busy_ms"] == pytest.approx(
            second["duration_ms"] - grandchild["duration_ms"], abs=EXACT
        )
        children = first["duration_ms"] + second["duration_ms"]
        assert root["busy_ms"] == pytest.approx(root["duration_ms"] - children, abs=EXACT)
        own = root["busy_ms"] + first["busy_ms"] + second["busy_ms"] + grandchild["busy_ms"]
        assert own == pytest.approx(root["duration_ms"], abs=EXACT)  # all of it ran in this one callback

    async def test_self_time_split_across_an_await_inside_the_child(self, tracker, memory):
        """A child entered in one callback and ended in a later one: the parent's own time leaves it out."""
        with ft.monitor_event_loop(1.0):
            await settle()
            with ft.span("parent"):
                spin(0.01)
                with ft.span("child"):
                    spin(0.02)
                    await asyncio.sleep(0)
                    spin(0.02)
                spin(0.01)
            await settle()
        await tracker.flush()
        spans = by_name(memory.traces)
        parent, child = spans["parent"], spans["child"]
        assert child["busy_ms"] >= 40
        assert parent["busy_ms"] >= 20
        # The parent's code ran only outside the child (nor while the child awaited).
        assert parent["busy_ms"] == pytest.approx(parent["duration_ms"] - child["duration_ms"], abs=EXACT)

    async def test_self_time_split_under_a_span_made_current_by_activate(self, tracker, memory):
        """A root made current with activate(), as the middlewares do: its own time leaves out its child's."""
        with ft.monitor_event_loop(1.0):
            await settle()
            root = start_root_span("request")
            token = activate(root)
            spin(0.01)
            with ft.span("child"):
                spin(0.02)
            await asyncio.sleep(0)
            spin(0.01)
            deactivate(root, token)
            spin(0.01)  # no span's code: nobody's time
            root.finish()
            await settle()
        await tracker.flush()
        spans = by_name(memory.traces)
        request, child = spans["request"], spans["child"]
        assert child["busy_ms"] >= 20
        assert request["busy_ms"] >= 20
        assert request["busy_ms"] <= request["duration_ms"] - child["duration_ms"] - 10 + EXACT

    async def test_parent_of_a_traced_generator_keeps_its_own_time(self, tracker, memory):
        """A traced generator (activate/deactivate at each item) inside a span: both get their own time."""

        @ft.traced("numbers")
        def numbers() -> Iterator[int]:
            spin(0.01)
            yield 1
            spin(0.01)
            yield 2

        with ft.monitor_event_loop(1.0):
            await settle()
            with ft.span("consumer"):
                spin(0.02)  # before the generator's first item
                for _ in numbers():
                    spin(0.005)
                spin(0.005)
            await settle()
        await tracker.flush()
        spans = by_name(memory.traces)
        consumer, generator = spans["consumer"], spans["numbers"]
        assert generator["busy_ms"] >= 20
        assert consumer["busy_ms"] >= 35
        assert consumer["busy_ms"] + generator["busy_ms"] <= consumer["duration_ms"] + EXACT

    async def test_span_ended_without_being_entered_gets_the_time_between(self, tracker, memory):
        """A client span started and ended in one callback, never current, gets the time that ran between."""
        with ft.monitor_event_loop(1.0):
            await settle()
            with ft.span("handler"):
                call = start_child("SELECT 1", kind="client")
                assert call is not None
                spin(0.02)  # a synchronous driver at work
                call.end()
                query = start_child("SELECT 2", kind="client")
                assert query is not None
                await asyncio.sleep(0.01)  # an asynchronous one: its time is waiting
                query.end()
            await settle()
        await tracker.flush()
        spans = by_name(memory.traces)
        assert spans["SELECT 1"]["busy_ms"] >= 20
        assert spans["SELECT 2"]["busy_ms"] == 0
        assert spans["handler"]["busy_ms"] <= spans["handler"]["duration_ms"] - 20

    async def test_worker_thread_spans_carry_no_busy_time(self, tracker, memory):
        """A span run in a worker thread has no busy_ms; its parent on the loop has."""

        def in_thread() -> None:
            with ft.span("in thread"):
                time.sleep(0.01)

        with ft.monitor_event_loop(1.0):
            await settle()
            async with ft.span("on loop"):
                await asyncio.to_thread(in_thread)
        await tracker.flush()
        spans = by_name(memory.traces)
        assert "busy_ms" in spans["on loop"]
        assert "busy_ms" not in spans["in thread"]

    async def test_c_tasks_task_groups_and_anyio(self, tracker, memory):
        """Spans in C-accelerated tasks, asyncio task groups (3.11+) and anyio task groups get busy time."""

        async def work(name: str) -> None:
            async with ft.span(name):
                spin(0.005)
                await asyncio.sleep(0)

        names = ["gathered", "anyio"]
        with ft.monitor_event_loop(1.0):
            await settle()
            async with ft.span("root"):
                await asyncio.gather(work("gathered"))
                async with anyio.create_task_group() as group:
                    group.start_soon(work, "anyio")
                if sys.version_info >= (3, 11):
                    names.append("task group")
                    async with asyncio.TaskGroup() as task_group:
                        task_group.create_task(work("task group"))
        await tracker.flush()
        spans = by_name(memory.traces)
        for name in names:
            assert spans[name]["busy_ms"] >= 5, name
        import _asyncio

        assert asyncio.Task is _asyncio.Task  # the C tasks are the ones measured


class TestBlocksOnServers:
    async def test_aiohttp_sleep_pinned_on_the_guilty_request_only(self, memory):
        """One handler sleeps among awaiting requests: only its span gets the event, naming the line."""
        tracker = ft.Tracker(exporters=[memory])

        async def slow(request: web.Request) -> web.Response:
            async with ft.span("render"):
                time.sleep(0.3)  # sleeps here
            return web.Response(text="slow")

        async def fast(request: web.Request) -> web.Response:
            async with ft.span("query"):
                await asyncio.sleep(0.2)
            return web.Response(text="fast")

        app = web.Application()
        app.router.add_get("/slow", slow)
        app.router.add_get("/fast", fast)
        setup(app, tracker, monitor_loop=0.1)
        async with serve(app) as url:
            fast_calls = [asyncio.ensure_future(fetch(url + "/fast")) for _ in range(5)]
            await asyncio.sleep(0.05)
            await fetch(url + "/slow")
            await asyncio.gather(*fast_calls)
            traces = await collected(tracker, memory, 6)
        assert not patched()  # cleanup stopped the app's monitor
        found = blocked_events(traces)
        assert [name for name, _ in found] == ["render"]
        event = found[0][1]["attributes"]
        assert event["duration_ms"] >= 300
        first = event["stack"].splitlines()[0]
        assert first == f"{THIS_FILE}:{line_of('sleeps here')} in slow"
        for trace in traces:
            for span in trace["spans"]:
                assert "busy_ms" in span, span["name"]

    async def test_aiohttp_cpu_loop_pinned_with_the_spinning_line(self, memory):
        """A CPU loop in a handler is pinned on the request's root, its stack naming the spinning line."""
        tracker = ft.Tracker(exporters=[memory])

        async def crunch(request: web.Request) -> web.Response:
            spin(0.3)  # crunches here
            return web.Response(text="done")

        async def fast(request: web.Request) -> web.Response:
            await asyncio.sleep(0.2)
            return web.Response(text="fast")

        app = web.Application()
        app.router.add_get("/crunch", crunch)
        app.router.add_get("/fast", fast)
        setup(app, tracker, monitor_loop=True)
        async with serve(app) as url:
            fast_calls = [asyncio.ensure_future(fetch(url + "/fast")) for _ in range(3)]
            await asyncio.sleep(0.05)
            await fetch(url + "/crunch")
            await asyncio.gather(*fast_calls)
            traces = await collected(tracker, memory, 4)
        found = blocked_events(traces)
        assert [name for name, _ in found] == ["GET /crunch"]
        lines = found[0][1]["attributes"]["stack"].splitlines()
        assert lines[0] in spin_frames()
        assert lines[1] == f"{THIS_FILE}:{line_of('crunches here')} in crunch"
        assert len(lines) <= MAX_FRAMES

    async def test_uvicorn_sleep_pinned_on_the_guilty_request_only(self, memory):
        """The ASGI middleware under uvicorn: only the sleeping request's span carries the event."""
        tracker = ft.Tracker(exporters=[memory])

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    await send({"type": message["type"] + ".complete"})
                    if message["type"] == "lifespan.shutdown":
                        return
            if scope["path"] == "/slow":
                async with ft.span("legacy client"):
                    time.sleep(0.3)  # blocks uvicorn
            else:
                await asyncio.sleep(0.2)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        wrapped = FlowTrackerMiddleware(app, tracker=tracker, monitor_loop=0.1)
        async with uvicorn_serve(wrapped) as url:
            assert wrapped.loop_monitor is not None
            fast_calls = [asyncio.ensure_future(fetch(url + "/fast")) for _ in range(4)]
            await asyncio.sleep(0.05)
            await fetch(url + "/slow")
            await asyncio.gather(*fast_calls)
            traces = await collected(tracker, memory, 5)
        assert wrapped.loop_monitor is None
        assert not patched()
        found = blocked_events(traces)
        assert [name for name, _ in found] == ["legacy client"]
        first = found[0][1]["attributes"]["stack"].splitlines()[0]
        assert first == f"{THIS_FILE}:{line_of('blocks uvicorn')} in app"


class TestBlocks:
    def test_span_ending_in_the_blocking_callback_with_the_default_tracker_thread(self, memory):
        """The guilty span ends in the very callback that blocked and its trace is assembled on the
        tracker's own thread: the event is in the exported trace."""

        async def main() -> None:
            with ft.monitor_event_loop(0.05):
                await settle()
                with start_root_span("job", tracker=tracker):  # no await: ends in the blocking callback
                    time.sleep(0.12)  # the job blocks
                await settle()

        with ft.Tracker(exporters=[memory]) as tracker:  # runs in a thread of its own
            asyncio.run(main())
        found = blocked_events(memory.traces)
        assert [name for name, _ in found] == ["job"]
        stack = found[0][1]["attributes"]["stack"]
        assert stack.startswith(f"{THIS_FILE}:{line_of('the job blocks')} in main")

    async def test_block_in_a_child_still_open_when_the_callback_ends(self, tracker, memory):
        """The child that blocked, entered in the blocking callback and open at its end, gets the event."""
        with ft.monitor_event_loop(0.05):
            await settle()
            async with ft.span("outer"), ft.span("inner"):
                time.sleep(0.08)  # inner blocks
                await asyncio.sleep(0)
            await settle()
        await tracker.flush()
        found = blocked_events(memory.traces)
        assert [name for name, _ in found] == ["inner"]
        assert found[0][1]["attributes"]["stack"].startswith(f"{THIS_FILE}:{line_of('inner blocks')} in ")

    async def test_stack_head_survives_the_value_length_limit(self, memory):
        """With a tiny max_value_length the stack is cut at its tail: the innermost frame stays."""
        async with ft.Tracker(exporters=[memory], max_value_length=120) as tracker:
            with ft.monitor_event_loop(0.05):
                await settle()
                async with ft.span("tight"):
                    time.sleep(0.08)  # tight block
                await settle()
            await tracker.flush()
        stack = blocked_events(memory.traces)[0][1]["attributes"]["stack"]
        assert stack.startswith(f"{THIS_FILE}:{line_of('tight block')} in ")
        assert "truncated" in stack

    async def test_block_event_obeys_the_per_span_event_limit(self, memory):
        """The block event goes through the span's one event path: over max_events_per_span it is
        not kept and is counted in events_dropped, once, while the block itself is still counted."""
        async with ft.Tracker(exporters=[memory], max_events_per_span=1) as tracker:
            with ft.monitor_event_loop(0.05) as monitor:
                await settle()
                async with ft.span("full"):
                    ft.add_event("first")
                    time.sleep(0.08)  # blocks a span whose events are full
                await settle()
            await tracker.flush()
        span = by_name(memory.traces)["full"]
        assert [event["name"] for event in span["events"]] == ["first"]
        assert "busy_ms" in span
        assert tracker.stats.events_dropped == 1
        assert monitor.stats.blocks == 1

    async def test_block_outside_spans_counted_and_logged_once_per_location(self, caplog):
        """Two blocks at one line outside any span: both counted, one log record (per location per minute)."""
        caplog.set_level(logging.WARNING, "flowtracker.loop_monitor")
        with ft.monitor_event_loop(0.05) as monitor:
            await settle()
            for _ in range(2):
                time.sleep(0.06)  # unowned block
                await settle()
        assert monitor.stats.blocks == 2
        assert monitor.stats.blocks_outside_spans == 2
        records = [r for r in caplog.records if r.name == "flowtracker.loop_monitor"]
        assert len(records) == 1
        assert f"{THIS_FILE}:{line_of('unowned block')}" in records[0].getMessage()

    async def test_block_outside_spans_logged_as_one_line_naming_user_and_library_frames(self, caplog):
        """A block outside spans deep in the standard library is one log line: the duration, the
        user's line and the innermost library frame; the full stack rides in the record's ``stack``."""
        caplog.set_level(logging.WARNING, "flowtracker.loop_monitor")
        with ft.monitor_event_loop(0.05):
            await settle()
            threading.Event().wait(0.08)  # waits in the standard library
            await settle()
        [record] = [r for r in caplog.records if r.name == "flowtracker.loop_monitor"]
        message = record.getMessage()
        assert "\n" not in message
        assert message.startswith("the event loop was blocked for ")
        user = f"{THIS_FILE}:{line_of('waits in the standard library')} in "
        assert f" outside any span, at {user}" in message
        assert message.endswith(" in wait)")
        assert f"(innermost: {threading.__file__}:" in message
        stack = record.stack  # type: ignore[attr-defined]
        assert stack.splitlines()[0].startswith(f"{threading.__file__}:")
        assert user in stack

    async def test_exceptions_in_callbacks_propagate_as_before(self):
        """A callback that raises reaches the loop's exception handler; a task's error stays the task's."""
        loop = asyncio.get_running_loop()
        seen: list[BaseException] = []
        loop.set_exception_handler(lambda _loop, context: seen.append(context["exception"]))
        try:
            with ft.monitor_event_loop(1.0) as monitor:
                loop.call_soon(lambda: 1 / 0)
                await settle()
                await settle()

                async def fails() -> None:
                    raise ValueError("task error")

                with pytest.raises(ValueError, match="task error"):
                    await asyncio.create_task(fails())
        finally:
            loop.set_exception_handler(None)
        assert [type(error) for error in seen] == [ZeroDivisionError]
        assert monitor.stats.callbacks >= 2


class TestLoops:
    def test_two_loops_in_two_threads(self, memory):
        """Two threads, each loop watched by its own monitor: each counts and pins only its own blocks."""
        results: dict[str, Any] = {}

        def run(name: str, block: bool) -> None:
            async def main() -> None:
                with ft.monitor_event_loop(0.05) as monitor:
                    await settle()
                    async with ft.span(name):
                        await asyncio.sleep(0.05)
                        if block:
                            time.sleep(0.1)
                        await asyncio.sleep(0.05)
                    await settle()
                results[name] = monitor.stats

            asyncio.run(main())

        with ft.Tracker(exporters=[memory]) as tracker:
            with ft.span("unwatched") as unwatched:  # no loop, no monitor here
                pass
            assert unwatched.sampled
            threads = [threading.Thread(target=run, args=(n, n == "blocker")) for n in ("blocker", "calm")]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            del tracker
        assert results["blocker"].blocks == 1
        assert results["calm"].blocks == 0
        spans = by_name(memory.traces)
        assert [name for name, _ in blocked_events(memory.traces)] == ["blocker"]
        assert "busy_ms" in spans["calm"]
        assert "busy_ms" in spans["blocker"]
        assert "busy_ms" not in spans["unwatched"]

    def test_other_loops_are_untouched(self, memory):
        """A loop in another thread, not watched, records nothing while this loop is watched."""
        ready, done = threading.Event(), threading.Event()

        def other() -> None:
            async def main() -> None:
                async with ft.Tracker(exporters=[memory]):
                    ready.wait()
                    await asyncio.sleep(0)
                    async with ft.span("elsewhere"):
                        time.sleep(0.08)
                        await asyncio.sleep(0)
                done.set()

            asyncio.run(main())

        async def main() -> ft.LoopMonitorStats:
            with ft.monitor_event_loop(0.05) as monitor:
                ready.set()
                while not done.is_set():
                    await asyncio.sleep(0.01)
            return monitor.stats

        thread = threading.Thread(target=other)
        thread.start()
        stats = asyncio.run(main())
        thread.join()
        span = by_name(memory.traces)["elsewhere"]
        assert "busy_ms" not in span
        assert "events" not in span
        assert stats.blocks == 0

    def test_closed_loop_stops_its_monitor(self):
        """A monitor whose loop was closed stops itself (and unpatches, being the last)."""
        loop = asyncio.new_event_loop()
        monitor = ft.monitor_event_loop(0.05, loop=loop)
        loop.run_until_complete(asyncio.sleep(0.01))
        loop.close()
        for _ in range(200):
            if not monitor.running:
                break
            time.sleep(0.01)
        assert not monitor.running
        assert not patched()


class TestWatchdog:
    async def test_watchdog_is_a_daemon_and_ends_with_stop(self):
        """The watchdog thread is a daemon, and stop() ends it."""
        monitor = ft.monitor_event_loop(0.05)
        watchdogs = [t for t in threading.enumerate() if t.name == "flowtracker-loop-watchdog"]
        assert watchdogs
        assert all(t.daemon for t in watchdogs)
        monitor.stop()
        assert not any(t.is_alive() for t in watchdogs)

    def test_never_keeps_the_process_alive(self):
        """A process whose loop ended with its monitor never stopped exits at once."""
        code = textwrap.dedent(
            """
            import asyncio, flowtracker as ft
            async def main():
                ft.monitor_event_loop(0.05)
                await asyncio.sleep(0.01)
            asyncio.run(main())
            print("exited")
            """
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "exited"
