"""Context propagation: children find their parent across tasks and threads."""

from __future__ import annotations

import asyncio
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import anyio
import pytest

import flowtracker as ft


def assert_children_of_root(trace: dict, names: set[str]) -> None:
    by_name = {s["name"]: s for s in trace["spans"]}
    root_id = by_name["root"]["span_id"]
    for name in names:
        assert by_name[name]["parent_id"] == root_id, name


async def child(name: str) -> None:
    async with ft.span(name):
        await asyncio.sleep(0)


def sync_child(name: str) -> None:
    with ft.span(name):
        pass


class TestAcrossTasks:
    async def test_create_task(self, tracker, memory):
        """A span in a task created inside a span is that span's child."""
        async with ft.span("root"):
            await asyncio.create_task(child("task"))
        await tracker.flush()
        assert_children_of_root(memory.traces[0], {"task"})

    async def test_gather(self, tracker, memory):
        """Coroutines run by gather() become children of the span around it."""
        async with ft.span("root"):
            await asyncio.gather(child("a"), child("b"), child("c"))
        await tracker.flush()
        assert_children_of_root(memory.traces[0], {"a", "b", "c"})

    @pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.TaskGroup is Python 3.11+")
    async def test_asyncio_task_group(self, tracker, memory):
        """asyncio.TaskGroup children link to the enclosing span."""
        async with ft.span("root"), asyncio.TaskGroup() as group:
            group.create_task(child("a"))
            group.create_task(child("b"))
        await tracker.flush()
        assert_children_of_root(memory.traces[0], {"a", "b"})

    async def test_anyio_task_group(self, tracker, memory):
        """anyio task groups copy the context too."""
        async with ft.span("root"), anyio.create_task_group() as group:
            group.start_soon(child, "a")
            group.start_soon(child, "b")
        await tracker.flush()
        assert_children_of_root(memory.traces[0], {"a", "b"})

    async def test_span_exited_in_another_task(self, tracker, memory, caplog):
        """A span entered in one task and exited in another ends cleanly, no error logged."""
        entered = ft.span("handed-over")
        entered.__enter__()

        async def finisher():
            entered.__exit__(None, None, None)

        await asyncio.create_task(finisher())
        assert ft.current_span() is entered  # this task's context still names it
        await tracker.flush()
        assert memory.traces[0]["spans"][0]["status"] == "ok"
        assert not [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")]


class TestAcrossThreads:
    async def test_asyncio_to_thread(self, tracker, memory):
        """asyncio.to_thread copies the context into the worker thread."""
        async with ft.span("root"):
            await asyncio.to_thread(sync_child, "thread")
        await tracker.flush()
        assert_children_of_root(memory.traces[0], {"thread"})

    async def test_anyio_to_thread(self, tracker, memory):
        """anyio.to_thread.run_sync copies the context too."""
        async with ft.span("root"):
            await anyio.to_thread.run_sync(sync_child, "thread")
        await tracker.flush()
        assert_children_of_root(memory.traces[0], {"thread"})

    async def test_run_in_executor_with_bind(self, tracker, memory):
        """run_in_executor does not copy the context; ft.bind() carries the span over."""
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1) as pool:
            async with ft.span("root"):
                await loop.run_in_executor(pool, ft.bind(sync_child), "executor")
        await tracker.flush()
        assert_children_of_root(memory.traces[0], {"executor"})

    async def test_raw_thread_with_bind_outliving_root(self, tracker, memory):
        """A raw thread bound to the root, still working after the root ended, lands in the trace."""
        release = threading.Event()

        def worker():
            release.wait(5)
            sync_child("thread")

        async with ft.span("root"):
            thread = threading.Thread(target=ft.bind(worker))
            thread.start()
        await tracker.flush()
        # The root had no open child when it ended, so it went out alone ...
        assert [s["name"] for s in memory.traces[0]["spans"]] == ["root"]
        release.set()
        await asyncio.to_thread(thread.join)
        await tracker.flush()
        # ... and the thread's late span follows as a follow-up record of the same trace.
        first, follow_up = memory.traces
        assert follow_up["follow_up"] is True
        assert follow_up["trace_id"] == first["trace_id"]
        assert follow_up["spans"][0]["name"] == "thread"
        assert follow_up["spans"][0]["parent_id"] == first["spans"][0]["span_id"]

    async def test_span_open_in_thread_keeps_trace_open(self, tracker, memory):
        """A child open in a thread while the root ends keeps the trace open until it ends."""
        started, release = threading.Event(), threading.Event()

        def worker():
            with ft.span("thread"):
                started.set()
                release.wait(5)

        async with ft.span("root"):
            thread = threading.Thread(target=ft.bind(worker))
            thread.start()
            await asyncio.to_thread(started.wait, 5)
        await tracker.flush()
        assert memory.traces == []
        release.set()
        await asyncio.to_thread(thread.join)
        await tracker.flush()
        (trace,) = memory.traces
        assert_children_of_root(trace, {"thread"})

    async def test_thread_without_loop_reports_to_running_tracker(self, tracker, memory):
        """A root span in a plain thread (no loop, no binding) is exported by the running tracker."""
        thread = threading.Thread(target=sync_child, args=("lonely",))
        thread.start()
        await asyncio.to_thread(thread.join)
        await tracker.flush()
        assert [s["name"] for s in memory.traces[0]["spans"]] == ["lonely"]
