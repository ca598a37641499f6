"""Stalled time: spans that waited while another span's code blocked the loop say so, and name it.

Each scenario runs on both kinds of loop: asyncio (callbacks timed one by
one, exact block times) and uvloop (blocks found by the heartbeat). One
request blocks the loop (``time.sleep``) among concurrent ones that await a
real PostgreSQL query (``pg_sleep``) or a sleep. Durations are asserted as
relations the monitor makes exact (a waiting span's ``stalled_ms`` is the
block's duration) or as lower bounds a blocking call guarantees.
"""

# ruff: noqa: ASYNC251  (blocking the loop is the point)
from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import uvloop
from loop_helpers import (  # noqa: F401  (nothing_left_patched: an autouse fixture)
    blocked_events,
    by_name,
    events_named,
    line_in,
    nothing_left_patched,
)

import flowtracker as ft
from flowtracker.instrumentation import asyncpg as instrument_asyncpg
from flowtracker.loop_monitor import STALLED_EVENT
from tests.postgres_server import PostgresServer, postgres  # noqa: F401

THIS_FILE = Path(__file__).resolve()
Runner = Callable[[Coroutine[Any, Any, Any]], Any]
LOOPS: dict[str, tuple[Runner, str]] = {"asyncio": (asyncio.run, "full"), "uvloop": (uvloop.run, "blocks")}


def here(marker: str) -> str:
    """``file:line`` of the one line of this file ending with ``# <marker>``."""
    return f"{THIS_FILE}:{line_in(THIS_FILE, marker)}"


def stalls(span: dict[str, Any], by: str = "") -> list[dict[str, Any]]:
    """The attributes of a span's ``event_loop.stalled`` events (``by``: only those whose culprit's
    name, or line for a block outside spans, starts so: on a loaded machine the process may be
    descheduled in the middle of any callback, which is a block too)."""
    return [
        event["attributes"]
        for event in span.get("events", ())
        if event["name"] == STALLED_EVENT
        and str(event["attributes"].get("by_name", event["attributes"].get("at"))).startswith(by)
    ]


@pytest.fixture(params=sorted(LOOPS))
def loop_kind(request: pytest.FixtureRequest) -> str:
    """The kind of loop a scenario runs on: ``asyncio`` or ``uvloop``."""
    return str(request.param)


@pytest.fixture
def instrumented() -> Iterator[None]:
    """asyncpg instrumented for the test (its queries are client spans), restored afterwards."""
    instrument_asyncpg.install()
    yield
    instrument_asyncpg.uninstall()


class TestStalledByAnotherRequest:
    def test_queries_waiting_on_postgres_name_the_request_that_blocked(
        self,
        loop_kind: str,
        postgres: PostgresServer,  # noqa: F811
        instrumented: None,
        memory: ft.MemoryExporter,
    ) -> None:
        """Four requests await a real PostgreSQL query while a fifth renders a PDF with a blocking
        call: each query's span is stalled for the block, naming the guilty span and line; their
        parents do not count it again, and the guilty span and its ancestors are not stalled."""
        run, mode = LOOPS[loop_kind]

        async def innocent(number: int, connection: asyncpg.Connection) -> None:
            async with ft.span(f"GET /users/{number}"):
                await connection.fetch("SELECT pg_sleep(0.6), name FROM users WHERE id = 1")

        async def guilty() -> None:
            await asyncio.sleep(0.15)
            async with ft.span("GET /report"):
                with ft.span("render_pdf"):
                    time.sleep(0.3)  # renders the PDF

        async def main() -> ft.LoopMonitorStats:
            async with ft.Tracker(exporters=[memory]) as tracker:
                connections = [await asyncpg.connect(postgres.dsn) for _ in range(4)]
                await connections[0].execute(
                    "CREATE TABLE IF NOT EXISTS users (id int PRIMARY KEY, name text);"
                    "INSERT INTO users VALUES (1, 'ada') ON CONFLICT DO NOTHING"
                )
                try:
                    with ft.monitor_event_loop(0.1) as monitor:
                        await asyncio.sleep(0.02)
                        await asyncio.gather(*(innocent(n, c) for n, c in enumerate(connections)), guilty())
                        await asyncio.sleep(0.02)
                finally:
                    for connection in connections:
                        await connection.close()
                await tracker.flush()
            return monitor.stats

        stats = run(main())
        assert stats.blocks == 1
        traces = {trace["spans"][0]["name"]: trace for trace in memory.traces if "loop_monitor" in trace}
        assert {trace["loop_monitor"] for trace in traces.values()} == {mode}
        report = by_name([traces["GET /report"]])
        guilty_span = report["render_pdf"]
        assert [name for name, _ in blocked_events(memory.traces)] == ["render_pdf"]
        for number in range(4):
            spans = by_name([traces[f"GET /users/{number}"]])
            query, request = spans["SELECT users"], spans[f"GET /users/{number}"]
            [stall] = stalls(query, "GET /report")
            assert stall == {
                "duration_ms": pytest.approx(stats.max_block_ms, abs=0.01),
                "by_trace_id": traces["GET /report"]["trace_id"],
                "by_span_id": guilty_span["span_id"],
                "by_name": "GET /report › render_pdf",
                "at": f"{here('renders the PDF')} in guilty",
            }
            assert query["stalled_ms"] >= stall["duration_ms"]
            assert not stalls(request, "GET /report")  # its waiting was its query's: not counted twice
            assert query["duration_ms"] >= query["stalled_ms"] + query.get("busy_ms", 0)
        assert not stalls(guilty_span, "GET /report")
        assert not stalls(report["GET /report"], "GET /report")


class TestWhoIsStalled:
    def test_the_rules(self, loop_kind: str, memory: ft.MemoryExporter) -> None:
        """Traces assembled on the tracker's own thread, one blocking callback: a task woken by the
        blocker is stalled, a sibling task of the guilty trace is stalled, a span in a worker thread
        and its waiting parent are not, a span that started and ended inside the block is not."""
        run, _ = LOOPS[loop_kind]
        names: dict[str, str] = {}

        def in_thread(running: Callable[[], None]) -> None:
            with ft.span("in thread"):
                running()
                time.sleep(0.4)

        async def offload(running: asyncio.Event) -> None:
            loop = asyncio.get_running_loop()
            async with ft.span("offload"):
                await asyncio.to_thread(in_thread, lambda: loop.call_soon_threadsafe(running.set))

        async def woken(event: asyncio.Event) -> None:
            async with ft.span("woken"):
                await event.wait()

        async def guilty(event: asyncio.Event, running: asyncio.Event) -> None:
            await running.wait()  # the worker thread's span has started
            await asyncio.sleep(0.02)
            async with ft.span("GET /report") as root:
                names["trace"] = root.trace_id or ""

                async def sibling() -> None:
                    async with ft.span("sibling"):
                        await asyncio.sleep(0.3)

                task = asyncio.create_task(sibling())
                await asyncio.sleep(0.01)
                with ft.span("prep"):  # started and ended inside the blocking callback
                    pass
                event.set()
                with ft.span("render"):
                    time.sleep(0.15)  # blocks with the event set
                await task

        async def main() -> ft.LoopMonitorStats:
            event, running = asyncio.Event(), asyncio.Event()
            with ft.monitor_event_loop(0.1) as monitor:
                await asyncio.sleep(0.02)
                await asyncio.gather(offload(running), woken(event), guilty(event, running))
                await asyncio.sleep(0.02)
            return monitor.stats

        with ft.Tracker(exporters=[memory]):  # traces assembled on the tracker's thread
            stats = run(main())
        assert stats.blocks == 1
        spans = by_name(memory.traces)
        block = stats.max_block_ms
        for name in ("woken", "sibling"):
            [stall] = stalls(spans[name], "GET /report")
            assert stall["duration_ms"] == pytest.approx(block, abs=0.01), name
            assert stall["by_name"] == "GET /report › render"
            assert stall["by_trace_id"] == names["trace"]
            assert stall["at"] == f"{here('blocks with the event set')} in guilty"
        assert "stalled_ms" not in spans["in thread"]  # a worker thread's: never stalled
        for name in ("offload", "prep", "render", "GET /report"):
            assert not stalls(spans[name], "GET /report"), name


class TestBlocksOutsideSpansAndBounds:
    def test_a_bare_callback_stalls_with_its_line_and_no_culprit_span(
        self, loop_kind: str, memory: ft.MemoryExporter
    ) -> None:
        """A callback outside any span blocks: the waiting span's event has ``at`` and no ``by_*``."""
        run, _ = LOOPS[loop_kind]

        def legacy() -> None:
            time.sleep(0.12)  # a bare callback blocks

        async def main() -> None:
            async with ft.Tracker(exporters=[memory]):
                with ft.monitor_event_loop(0.05):
                    await asyncio.sleep(0.02)
                    async with ft.span("waiting"):
                        # In an empty context: a callback runs in the context it was scheduled from.
                        asyncio.get_running_loop().call_later(0.02, legacy, context=contextvars.Context())
                        await asyncio.sleep(0.3)

        run(main())
        span = by_name(memory.traces)["waiting"]
        at = f"{here('a bare callback blocks')} in legacy"
        [stall] = stalls(span, at)
        assert set(stall) == {"duration_ms", "at"}
        assert stall["duration_ms"] >= 115

    def test_events_bounded_to_the_longest_and_counted_after_the_monitor_stopped(
        self, loop_kind: str, memory: ft.MemoryExporter
    ) -> None:
        """A span stalled by seven blocks keeps the five longest events (in time order) and counts the
        other two; its stalled_ms is all seven. It ends after the monitor stopped: the record outlives it."""
        run, _ = LOOPS[loop_kind]

        async def blocker() -> None:
            for number in range(7):
                async with ft.span(f"chunk {number}"):
                    time.sleep(0.1 if number < 2 else 0.16)  # the first two are the shortest
                await asyncio.sleep(0.02)

        async def main() -> ft.LoopMonitorStats:
            async with ft.Tracker(exporters=[memory]) as tracker:
                with ft.monitor_event_loop(0.08) as monitor:
                    await asyncio.sleep(0.02)

                    async def patient() -> None:
                        async with ft.span("patient"):
                            await asyncio.sleep(1.2)

                    waiting = asyncio.create_task(patient())
                    await asyncio.sleep(0.02)
                    await blocker()
                monitor_stats = monitor.stats
                await waiting  # ends after the monitor stopped
                await tracker.flush()
            return monitor_stats

        stats = run(main())
        assert stats.blocks >= 7
        span = by_name(memory.traces)["patient"]
        kept = stalls(span, "chunk")
        assert [stall["by_name"] for stall in kept] == [f"chunk {n}" for n in range(2, 7)]
        assert len(stalls(span)) == 5
        assert span["stalled_dropped"] >= 2
        assert span["stalled_ms"] >= sum(stall["duration_ms"] for stall in kept) + 2 * 100


class TestOtherLoopsAndThreads:
    def test_a_block_on_one_loop_stalls_nothing_on_another(self, memory: ft.MemoryExporter) -> None:
        """Two loops in two threads, each watched: a block on one stalls no span of the other."""
        ready = threading.Barrier(2)

        def run(name: str, block: bool) -> None:
            async def main() -> None:
                with ft.monitor_event_loop(0.05):
                    ready.wait()
                    async with ft.span(name):
                        await asyncio.sleep(0.05)
                        if block:
                            time.sleep(0.15)
                        await asyncio.sleep(0.2)

            asyncio.run(main())

        with ft.Tracker(exporters=[memory]):
            threads = [threading.Thread(target=run, args=(n, n == "blocker")) for n in ("blocker", "calm")]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        spans = by_name(memory.traces)
        assert [name for name, _ in blocked_events(memory.traces)] == ["blocker"]
        assert not stalls(spans["calm"], "blocker")

    def test_no_monitor_no_field(self, memory: ft.MemoryExporter) -> None:
        """A trace recorded while no monitor watched its loop has no loop_monitor field."""

        async def main() -> None:
            async with ft.Tracker(exporters=[memory]), ft.span("unwatched"):
                await asyncio.sleep(0)

        asyncio.run(main())
        assert "loop_monitor" not in memory.traces[0]
