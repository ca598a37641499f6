"""Whole-trace assembly, the export pipeline, limits and stats."""

from __future__ import annotations

import asyncio

import pytest
import trio
from doubles import RaisingExporter, SlowExporter, StalledExporter, accounted
from scripts import run_python

import flowtracker as ft


class TestAssembly:
    async def test_fire_and_forget_child_joins_trace(self, tracker, memory):
        """A task created in the root that starts after the root ended is in the same, single trace."""

        async def background():
            async with ft.span("background"):
                await asyncio.sleep(0.01)

        async with ft.span("root"):
            asyncio.create_task(background())  # noqa: RUF006 - fire and forget, on purpose
        await asyncio.sleep(0.05)
        await tracker.flush()
        (trace,) = memory.traces
        by_name = {s["name"]: s for s in trace["spans"]}
        assert by_name["background"]["parent_id"] == by_name["root"]["span_id"]
        assert by_name["background"]["end_time"] > by_name["root"]["end_time"]

    async def test_trace_waits_for_every_child(self, tracker, memory):
        """Nothing is emitted while any span of the trace is open."""
        gate = asyncio.Event()

        async def worker():
            async with ft.span("worker"):
                await gate.wait()

        async with ft.span("root"):
            task = asyncio.create_task(worker())
            await asyncio.sleep(0)
        await tracker.flush()
        assert memory.traces == []
        gate.set()
        await task
        await tracker.flush()
        assert len(memory.traces[0]["spans"]) == 2

    async def test_late_span_goes_out_as_follow_up(self, tracker, memory):
        """A span that starts after its trace was emitted is exported as a follow-up, same trace id."""

        async def late():
            await asyncio.sleep(0.02)
            async with ft.span("late"):
                pass

        async with ft.span("root"):
            task = asyncio.create_task(late())
        await tracker.flush()
        await task
        await tracker.flush()
        first, follow_up = memory.traces
        assert "follow_up" not in first
        assert follow_up["follow_up"] is True
        assert follow_up["trace_id"] == first["trace_id"]
        assert follow_up["spans"][0]["parent_id"] == first["spans"][0]["span_id"]
        accounted(tracker.stats)

    async def test_concurrent_roots_never_mix(self, tracker, memory):
        """1,000 concurrent requests with children across tasks give 1,000 separate, whole trees."""

        async def request(i: int) -> None:
            async with ft.span("root", i=i):
                await asyncio.sleep(0)
                async with ft.span("db", i=i):
                    await asyncio.sleep(0)
                await asyncio.gather(*(leaf(i, n) for n in range(2)))

        async def leaf(i: int, n: int) -> None:
            async with ft.span("leaf", i=i, n=n):
                await asyncio.sleep(0)

        await asyncio.gather(*(request(i) for i in range(1000)))
        await tracker.flush()
        assert len(memory.traces) == 1000
        seen = set()
        for trace in memory.traces:
            tags = {s["tags"]["i"] for s in trace["spans"]}
            assert len(tags) == 1
            assert len(trace["spans"]) == 4
            seen |= tags
            ids = {s["span_id"] for s in trace["spans"]}
            assert all(s.get("parent_id") in ids for s in trace["spans"] if s["name"] != "root")
        assert seen == set(range(1000))
        assert len({t["trace_id"] for t in memory.traces}) == 1000

    async def test_completion_delay_waits_for_slow_starters(self, memory):
        """completion_delay keeps a finished trace open for children that start a bit later."""
        async with ft.Tracker(exporters=[memory], completion_delay=0.2) as tracker:

            async def late():
                await asyncio.sleep(0.02)
                async with ft.span("late"):
                    pass

            async with ft.span("root"):
                asyncio.create_task(late())  # noqa: RUF006 - fire and forget, on purpose
            await asyncio.sleep(0.3)
            await tracker.flush()
        assert len(memory.traces) == 1
        assert {s["name"] for s in memory.traces[0]["spans"]} == {"root", "late"}


class TestLimits:
    async def test_max_spans_per_trace(self, memory):
        """Spans over max_spans_per_trace are counted in the trace and stats, not kept."""
        async with ft.Tracker(exporters=[memory], max_spans_per_trace=10) as tracker, ft.span("root"):
            for _ in range(25):
                with ft.span("child"):
                    pass
        (trace,) = memory.traces
        assert len(trace["spans"]) == 10
        assert trace["dropped_spans"] == 16
        assert tracker.stats.spans_dropped == 16

    async def test_max_tags_and_events(self, memory):
        """Tags and events over their limits are dropped and counted."""
        async with ft.Tracker(exporters=[memory], max_tags_per_span=3, max_events_per_span=2) as tracker:  # noqa: SIM117
            async with ft.span("root", a=1) as root:
                for key in "bcdef":
                    root.set_tag(key, 1)
                root.set_tag("a", 2)  # an existing key may still change
                for n in range(4):
                    root.add_event(f"e{n}")
        span = memory.traces[0]["spans"][0]
        assert span["tags"] == {"a": 2, "b": 1, "c": 1}
        assert span["dropped_tags"] == 3
        assert [e["name"] for e in span["events"]] == ["e0", "e1"]
        assert tracker.stats.tags_dropped == 3
        assert tracker.stats.events_dropped == 2

    async def test_max_trace_age_emits_unfinished(self, memory):
        """A span that never ends is exported after max_trace_age, marked unfinished; no leak."""
        async with ft.Tracker(exporters=[memory], max_trace_age=0.2) as tracker:
            async with ft.span("root"):
                leaked = ft.start_span("never-finished")
            await asyncio.sleep(0.5)
            await tracker.flush()
            (trace,) = memory.traces
            by_name = {s["name"]: s for s in trace["spans"]}
            assert by_name["never-finished"]["status"] == "unfinished"
            assert by_name["root"]["status"] == "ok"
            assert trace["unfinished_spans"] == 1
            assert tracker.open_traces == set()
            leaked.finish()  # a late end of a swept span is harmless
            await tracker.flush()
        assert len(memory.traces) == 1
        assert tracker.stats.traces_unfinished == 1

    async def test_open_spans_at_close_are_exported_unfinished(self, memory):
        """Closing the tracker exports still-open traces with their open spans unfinished."""
        tracker = ft.Tracker(exporters=[memory])
        await tracker.start()
        root = ft.start_root_span("still-running", tracker=tracker)
        await tracker.aclose()
        assert memory.traces[0]["spans"][0]["status"] == "unfinished"
        root.finish()
        accounted(tracker.stats)


class TestPipeline:
    async def test_exporters_are_isolated(self):
        """A raising and a slow exporter neither delay nor starve a fast one."""
        fast, slow = ft.MemoryExporter(), SlowExporter(0.3)
        async with ft.Tracker(exporters=[RaisingExporter(), slow, fast]) as tracker:
            for _ in range(5):
                async with ft.span("root"):
                    pass
            for _ in range(50):  # the fast one gets everything while the slow one sleeps
                await asyncio.sleep(0.005)
                if len(fast.traces) == 5:
                    break
            assert len(fast.traces) == 5
            assert slow.batches == []
        stats = tracker.stats
        assert stats.exporters["raising"].failed == 5
        assert stats.exporters["slow"].exported == 5
        assert stats.exporters["memory"].exported == 5
        accounted(stats)

    async def test_hanging_exporter_times_out(self):
        """An export that hangs past export_timeout fails its batch and the lane moves on."""
        stalled, fast = StalledExporter(), ft.MemoryExporter()
        async with ft.Tracker(exporters=[stalled, fast], export_timeout=0.1) as tracker:
            async with ft.span("one"):
                pass
            await asyncio.sleep(0.3)
            async with ft.span("two"):
                pass
        stats = tracker.stats
        assert stats.exporters["stalled"].failed == 2
        assert stats.exporters["memory"].exported == 2
        accounted(stats)

    async def test_full_lane_drops_and_counts_never_blocks(self):
        """With a stalled exporter the request path never waits; overflow is dropped and counted."""
        stalled = StalledExporter()
        memory = ft.MemoryExporter()
        tracker = ft.Tracker(exporters=[stalled, memory], max_queue=10, max_batch=5)
        await tracker.start()
        for _ in range(200):
            with ft.start_root_span("r", tracker=tracker):
                pass
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        stats = tracker.stats
        assert stats.traces_completed == 200
        assert stats.exporters["stalled"].dropped >= 200 - 10 - 5
        assert stats.traces_dropped == stats.exporters["stalled"].dropped
        assert stats.exporters["memory"].exported + stats.exporters["memory"].queued == 200
        accounted(stats)
        stalled.release.set()
        await tracker.aclose()
        accounted(tracker.stats)
        assert tracker.stats.exporters["stalled"].queued == 0

    async def test_flush_on_close_loses_nothing(self):
        """Closing right after a burst exports every trace: zero loss on clean shutdown."""
        memory, slow = ft.MemoryExporter(), SlowExporter(0.01)
        async with ft.Tracker(exporters=[memory, slow], max_batch=64) as tracker:
            for i in range(3000):
                with ft.span("root", i=i):
                    pass
        assert len(memory.traces) == 3000
        assert sum(slow.batches) == 3000
        assert max(slow.batches) <= 64
        stats = tracker.stats
        assert stats.traces_completed == 3000
        assert stats.exporters["memory"].exported == 3000
        accounted(stats)

    async def test_close_closes_exporters_even_if_one_fails(self, caplog):
        """aclose() closes every exporter; a failing aclose() is logged, not raised."""
        closed = []

        class Closing(ft.MemoryExporter):
            async def aclose(self) -> None:
                closed.append(True)

        async with ft.Tracker(exporters=[RaisingExporter(), Closing()]):
            pass
        assert closed == [True]
        assert "close failed too" in caplog.text

    async def test_tail_sampler(self, memory):
        """The tail sampler sees whole traces: keep errors and slow ones, drop the rest (counted)."""

        def keep(trace: ft.Trace) -> bool:
            return any(s.status == "error" for s in trace.spans)

        async with ft.Tracker(exporters=[memory], tail_sampler=keep) as tracker:
            with ft.span("fine"):
                pass
            with pytest.raises(ValueError, match="boom"), ft.span("broken"):
                raise ValueError("boom")
        assert [t["spans"][0]["name"] for t in memory.traces] == ["broken"]
        assert tracker.stats.traces_sampled_out == 1
        assert tracker.stats.traces_completed == 1

    async def test_head_sampling_rate_zero_records_nothing(self, memory):
        """sample_rate=0 records no trace, but spans still work and propagate their ids."""
        async with ft.Tracker(exporters=[memory], sample_rate=0.0) as tracker:  # noqa: SIM117
            async with ft.span("root") as root:
                with ft.span("child") as child:
                    child.set_tag("k", 1)
                assert not root.sampled
                assert root.trace_id is not None
        assert memory.traces == []
        assert tracker.stats.traces_completed == 0

    async def test_head_sampling_rate_half(self, memory):
        """sample_rate=0.5 keeps about half of the traces, whole."""
        async with ft.Tracker(exporters=[memory], sample_rate=0.5):
            for _ in range(2000):
                with ft.span("root"), ft.span("child"):
                    pass
        assert 800 < len(memory.traces) < 1200
        assert all(len(t["spans"]) == 2 for t in memory.traces)

    def test_invalid_options_fail_fast(self):
        """Nonsense settings are a clear ValueError at construction."""
        with pytest.raises(ValueError, match="sample_rate"):
            ft.Tracker(exporters=[], sample_rate=2)
        with pytest.raises(ValueError, match="max_queue"):
            ft.Tracker(exporters=[], max_queue=0)

    async def test_started_on_two_loops_is_an_error(self):
        """A tracker belongs to one loop; starting it from another is a clear error."""
        tracker = ft.Tracker(exporters=[])
        tracker.start_in_thread()
        try:
            with pytest.raises(RuntimeError, match="another event loop"):
                await tracker.start()
        finally:
            tracker.close_thread()

    async def test_aclose_in_a_task_being_cancelled_still_closes_exporters(self):
        """aclose() in the `finally:` of a cancelled task flushes and closes the exporters."""
        closed = []

        class Closing(ft.MemoryExporter):
            async def aclose(self) -> None:
                closed.append(True)

        exporter = Closing()
        tracker = ft.Tracker(exporters=[exporter])

        async def app() -> None:
            await tracker.start()
            try:
                with ft.start_root_span("request", tracker=tracker):
                    pass
                await asyncio.sleep(10)
            finally:
                await tracker.aclose()

        task = asyncio.create_task(app())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert closed == [True]
        assert len(exporter.traces) == 1
        assert not tracker.running

    async def test_traces_after_close_are_counted_dropped(self, memory):
        """A trace completing on a closed tracker is counted as dropped, never silently lost."""
        tracker = ft.Tracker(exporters=[memory])
        await tracker.start()
        await tracker.aclose()
        with ft.start_root_span("after", tracker=tracker):
            pass
        stats = tracker.stats
        assert stats.traces_completed == 1
        assert stats.traces_dropped == 1
        accounted(stats)


class TestStats:
    def test_stats_is_an_immutable_snapshot(self):
        """stats is a NamedTuple snapshot; its exporters mapping cannot be changed."""
        tracker = ft.Tracker(exporters=[ft.MemoryExporter(), ft.MemoryExporter()])
        stats = tracker.stats
        assert isinstance(stats, ft.TrackerStats)
        assert set(stats.exporters) == {"memory", "memory#2"}
        with pytest.raises(TypeError):
            stats.exporters["x"] = None  # type: ignore[index]
        with pytest.raises(AttributeError):
            stats.traces_completed = 5  # type: ignore[misc]


class TestDefaultTracker:
    def test_zero_setup_prints_flow_log_and_flushes_at_exit(self):
        """With no setup at all, traces go to stdout as FLOW_LOG lines, all flushed at exit."""
        result = run_python(
            """
            import asyncio, flowtracker as ft

            async def main():
                for i in range(200):
                    async with ft.span("root", i=i):
                        async with ft.span("child"):
                            pass

            asyncio.run(main())
            asyncio.run(main())  # a second loop: the default tracker keeps working
            with ft.span("sync"):
                pass
            """
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert len(lines) == 401
        assert all(line.startswith("FLOW_LOG: {") for line in lines)
        assert result.stderr == ""

    def test_env_var_selects_exporters(self, tmp_path):
        """FLOWTRACKER_EXPORTERS configures the default tracker (here a JSONL file)."""
        target = tmp_path / "out.jsonl"
        result = run_python(
            """
            import flowtracker as ft
            for _ in range(3):
                with ft.span("job"):
                    pass
            """,
            FLOWTRACKER_EXPORTERS=f"file://{target}",
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == ""
        assert len(target.read_text().splitlines()) == 3

    def test_loop_ending_without_aclose_still_exports(self, tmp_path):
        """asyncio.run() ending with a tracker never closed: queued traces still go out."""
        target = tmp_path / "out.jsonl"
        result = run_python(
            f"""
            import asyncio, flowtracker as ft

            async def main():
                tracker = ft.Tracker(exporters=[ft.FileExporter({str(target)!r})])
                await tracker.start()
                for i in range(500):
                    with ft.start_root_span("job", {{"i": i}}, tracker=tracker):
                        pass
                await asyncio.sleep(0)  # completions decided, export not yet done

            asyncio.run(main())
            """
        )
        assert result.returncode == 0, result.stderr
        assert len(target.read_text().splitlines()) == 500

    def test_unknown_scheme_fails_clearly(self):
        """An unknown exporter scheme fails at start-up with a message naming the known ones."""
        with pytest.raises(ValueError, match=r"unknown flowtracker exporter 'bogus://x'.*console"):
            ft.exporter_from_url("bogus://x")


class TestLongLivedRoot:
    async def test_children_after_the_age_limit_go_out_as_follow_ups(self, memory):
        """A root that outlives max_trace_age (a consumer loop) is exported unfinished once;
        every child started after that still goes out, in follow-up records with the same
        trace id, counted in traces_follow_up: none is silently discarded."""
        async with ft.Tracker(exporters=[memory], max_trace_age=0.2) as tracker:  # noqa: SIM117
            async with ft.span("consume") as root:
                for i in range(600):
                    async with ft.span("message", i=i):
                        with ft.span("handle"):
                            pass
                    await asyncio.sleep(0.001)
                await asyncio.sleep(0.01)
                await tracker.flush()
                assert memory.traces[0]["spans"][0]["status"] == "unfinished"
        first, *follow_ups = memory.traces
        assert {t["trace_id"] for t in memory.traces} == {root.trace_id}
        assert first["unfinished_spans"] == 1
        assert "follow_up" not in first
        assert follow_ups
        assert all(t["follow_up"] is True for t in follow_ups)
        messages = [s["tags"]["i"] for t in memory.traces for s in t["spans"] if s["name"] == "message"]
        assert sorted(messages) == list(range(600))  # each exactly once
        handles = [s for t in memory.traces for s in t["spans"] if s["name"] == "handle"]
        assert len(handles) == 600
        stats = tracker.stats
        assert stats.traces_unfinished == 1
        assert stats.traces_follow_up == len(follow_ups)
        assert stats.traces_completed == len(memory.traces)
        accounted(stats)

    async def test_a_long_child_of_a_swept_root_is_swept_again(self, memory):
        """A child of a swept root that itself stays open past the age limit is exported
        unfinished in a follow-up: follow-ups are bounded by the age limit too."""
        async with ft.Tracker(exporters=[memory], max_trace_age=0.15) as tracker:  # noqa: SIM117
            async with ft.span("websocket"):
                await asyncio.sleep(0.4)  # swept
                async with ft.span("long message"):
                    await asyncio.sleep(0.5)  # swept again, as a follow-up
                await tracker.flush()
        names = [(t.get("follow_up", False), [s["name"] for s in t["spans"]]) for t in memory.traces]
        assert names == [(False, ["websocket"]), (True, ["long message"])]
        assert memory.traces[1]["spans"][0]["status"] == "unfinished"
        assert tracker.stats.traces_unfinished == 2
        accounted(tracker.stats)


class TestTrio:
    def test_async_with_tracker_runs_under_trio(self, memory):
        """Under trio, `async with Tracker()` runs the pipeline on a loop of its own in a
        thread: spans across trio tasks form one trace, flush() and leaving the block
        export everything."""
        async def main() -> ft.Tracker:
            async with ft.Tracker(exporters=[memory], service="trio-app") as tracker:
                async with ft.span("request"):

                    async def child(n: int) -> None:
                        async with ft.span("child", n=n):
                            await trio.sleep(0.01)

                    async with trio.open_nursery() as nursery:
                        for n in range(3):
                            nursery.start_soon(child, n)
                assert await tracker.flush(timeout=5)
                assert len(memory.traces) == 1
                for _ in range(50):
                    with ft.span("sync work"):
                        pass
            return tracker

        tracker = trio.run(main)
        first = memory.traces[0]
        root = next(s for s in first["spans"] if s["name"] == "request")
        assert sorted(s.get("tags", {}).get("n", -1) for s in first["spans"]) == [-1, 0, 1, 2]
        assert all(s.get("parent_id") == root["span_id"] for s in first["spans"] if s is not root)
        assert len(memory.traces) == 51
        assert not tracker.running
        accounted(tracker.stats)
