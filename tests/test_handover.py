"""The thread hand-over: traces finished in other threads, counted exactly and bounded.

A trace whose last span ends outside the tracker's loop waits in the
hand-over until the loop takes it. These tests finish traces in real thread
pools while the loop is blocked or busy, and in a sync program at full speed
into a thread tracker, and check that every trace is emitted or dropped
exactly once, that the stats say which, and that a dropped trace is let go at
once instead of being kept until exit.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from doubles import SlowExporter, accounted

import flowtracker as ft


def job(i: int) -> None:
    """A unit of work in a worker thread: one trace of two spans."""
    with ft.span("job", i=i), ft.span("step"):
        pass


def exported_once(memory: ft.MemoryExporter, stats: ft.TrackerStats) -> None:
    """What the memory exporter holds is what the stats call exported, each trace once."""
    assert len(memory.traces) == stats.exporters["memory"].exported
    assert len({trace["trace_id"] for trace in memory.traces}) == len(memory.traces)


class TestBlockedLoop:
    async def test_traces_past_the_bound_are_dropped_once_and_counted(self):
        """20,000 traces finish in threads while the loop is blocked, with room for 2,000:
        2,000 are exported, 18,000 dropped, each counted once, none emitted twice at close."""
        memory = ft.MemoryExporter()
        async with ft.Tracker(exporters=[memory], max_queue=2000) as tracker:
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(ft.bind(job), range(20_000)))  # blocks the loop meanwhile
            assert len(tracker.open_traces) <= 2000 + 4  # dropped traces were let go at once
        stats = tracker.stats
        assert stats.traces_completed == 20_000
        assert stats.exporters["memory"].exported == 2000
        assert stats.traces_dropped == stats.exporters["memory"].dropped == 18_000
        assert stats.traces_unfinished == 0
        exported_once(memory, stats)
        accounted(stats)
        assert tracker.open_traces == set()


class TestBusyLoop:
    async def test_sixteen_threads_every_trace_emitted_or_dropped_once(self):
        """A 16-thread pool finishes 10,000 traces while the loop is busy submitting them:
        completed is 10,000 and equals exported + dropped; what is exported is counted
        exported, and no trace is emitted twice."""
        memory = ft.MemoryExporter()
        async with ft.Tracker(exporters=[memory]) as tracker:
            loop = asyncio.get_running_loop()
            with ThreadPoolExecutor(16) as pool:
                await asyncio.gather(*(loop.run_in_executor(pool, ft.bind(job), i) for i in range(10_000)))
        stats = tracker.stats
        lane = stats.exporters["memory"]
        assert stats.traces_completed == 10_000
        assert lane.exported + lane.dropped == 10_000
        assert stats.traces_dropped == lane.dropped
        exported_once(memory, stats)
        accounted(stats)

    async def test_nothing_dropped_when_the_loop_keeps_up(self):
        """Threads finishing traces while the loop is free: all 5,000 are exported, none dropped."""
        memory = ft.MemoryExporter()
        async with ft.Tracker(exporters=[memory]) as tracker:
            for start in range(0, 5000, 500):
                await asyncio.gather(*(asyncio.to_thread(job, i) for i in range(start, start + 500)))
        stats = tracker.stats
        assert stats.traces_completed == stats.exporters["memory"].exported == 5000
        assert stats.traces_dropped == 0
        exported_once(memory, stats)


class TestSyncProgram:
    @pytest.mark.parametrize("switch_interval", [None, 1e-5], ids=["default", "switching-every-10us"])
    def test_full_speed_into_a_thread_tracker_stays_bounded(self, switch_interval):
        """A sync program makes 200,000 traces at full speed into a thread tracker with a
        slow exporter: the traces held at any moment never pass 2 * max_queue (the hand-over's
        bound, and one hand-over's worth waiting for its completion check; the old hand-over
        kept every dropped trace until exit), and the figures add up exactly at the end.

        Also with the interpreter switching threads every 10 µs, as on a loaded machine: the
        program keeps handing traces over while the loop is taking them, and the bound holds
        because a take holds only what waited when it began and the completion check runs
        before the next take (both broke it: up to 3 × max_queue was seen)."""
        memory, slow = ft.MemoryExporter(), SlowExporter(0.002)
        peak = 0
        interval = sys.getswitchinterval()
        sys.setswitchinterval(switch_interval or interval)
        try:
            with ft.Tracker(exporters=[memory, slow], max_queue=1000) as tracker:
                for i in range(200_000):
                    with ft.span("job"):
                        pass
                    if i % 5 == 0:
                        peak = max(peak, len(tracker.open_traces))
        finally:
            sys.setswitchinterval(interval)
        stats = tracker.stats
        assert peak <= 2 * 1000, peak
        assert stats.traces_completed == 200_000
        for lane in stats.exporters.values():
            assert lane.exported + lane.dropped + lane.failed == 200_000
            assert lane.queued == 0
        exported_once(memory, stats)
        accounted(stats)
        assert tracker.open_traces == set()

    def test_racing_threads_count_exactly(self):
        """Eight threads finishing traces at once into a tracker not started yet (room for
        10): every drop is counted once, the waiting ones are exported once it starts."""
        memory = ft.MemoryExporter()
        tracker = ft.Tracker(exporters=[memory], max_queue=10)
        barrier = threading.Barrier(8)

        def burst() -> None:
            barrier.wait()
            for _ in range(5000):
                with ft.start_root_span("r", tracker=tracker):
                    pass

        threads = [threading.Thread(target=burst) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        waiting = len(tracker.open_traces)
        assert 10 <= waiting <= 10 + 8  # the dropped ones were let go
        assert tracker.stats.traces_dropped == 40_000 - waiting
        with tracker:
            pass
        stats = tracker.stats
        assert stats.traces_completed == 40_000
        assert stats.exporters["memory"].exported == waiting
        exported_once(memory, stats)
        accounted(stats)


class TestLateSpanOfADroppedTrace:
    async def test_goes_out_as_a_follow_up(self):
        """A trace dropped at the full hand-over is let go at once; a span started under its
        root afterwards still goes out, as a follow-up record of the same trace (an earlier
        part of it was taken), counted once as completed and as a follow-up."""
        memory = ft.MemoryExporter()
        async with ft.Tracker(exporters=[memory], max_queue=1) as tracker:
            roots: list[ft.Span] = []

            def finish_two() -> None:  # in a thread, while the loop waits: the second is dropped
                for name in ("kept", "dropped"):
                    root = ft.start_root_span(name, tracker=tracker)
                    roots.append(root)
                    root.finish()

            worker = threading.Thread(target=finish_two)
            worker.start()
            worker.join()
            dropped = roots[1]
            assert tracker.stats.traces_dropped == 1
            assert not dropped.spans  # released at once
            await tracker.flush()  # the kept one out first (the lane holds one trace)
            with dropped, ft.span("late"):
                pass
            await tracker.flush()
        by_name = {trace["spans"][0]["name"]: trace for trace in memory.traces}
        assert set(by_name) == {"kept", "late"}
        assert "follow_up" not in by_name["kept"]
        late = by_name["late"]
        assert (late["follow_up"], late["trace_id"]) == (True, dropped.trace_id)
        assert late["spans"][0]["parent_id"] == dropped.span_id_hex
        stats = tracker.stats
        assert (stats.traces_completed, stats.traces_dropped, stats.traces_follow_up) == (3, 1, 1)
        accounted(stats)
