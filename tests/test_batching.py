"""The pipeline batches by time as well as by count.

Finished traces are gathered for ``batch_interval`` seconds (or until
``max_batch`` wait) and handed to the lanes together, so traffic spaced by
I/O wakes the pipeline once per interval, not once per trace; ``flush()``,
close and the loop ending take what is gathering at once, and an idle
``flush()`` returns without awaiting. These tests assert what happens in
which order on a real loop (real loopback sockets, real threads, real
processes), never how long it took: an interval of 60 s stands for "has not
fired yet", and waiting for the interval itself is ordered on the loop's own
timers.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence

import pytest
from doubles import accounted
from scripts import run_python

import flowtracker as ft

NEVER = 60.0  # a batch_interval that does not fire during a test


class Batches:
    """An exporter that keeps each batch's trace names and the loop time it arrived at."""

    name = "batches"

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.arrived: list[float] = []

    async def export(self, traces: Sequence[ft.Trace]) -> None:
        self.arrived.append(asyncio.get_running_loop().time())
        self.batches.append([trace.spans[0].name for trace in traces])

    async def aclose(self) -> None:
        pass

    @property
    def traces(self) -> int:
        return sum(len(batch) for batch in self.batches)


@pytest.fixture
async def echo() -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A connection to a loopback echo server: one round trip spaces two traces by real I/O."""

    served: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.append(writer)
        while data := await reader.read(1024):
            writer.write(data)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    yield reader, writer
    writer.close()
    await writer.wait_closed()
    for peer in served:
        peer.close()
        await peer.wait_closed()
    server.close()
    await server.wait_closed()


async def round_trip(echo: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    reader, writer = echo
    writer.write(b"x")
    await reader.readexactly(1)


async def turns(count: int = 5) -> None:
    """Lets the loop run ``count`` times (callbacks already due, the lanes' tasks)."""
    for _ in range(count):
        await asyncio.sleep(0)


class TestTimeBatching:
    async def test_spaced_traces_go_out_as_one_batch(self, echo):
        """Twenty traces, each after a real loopback round trip, all end within one interval:
        none is exported per trace, and the flush hands them to the exporter as one batch."""
        batches = Batches()
        async with ft.Tracker(exporters=[batches], batch_interval=NEVER) as tracker:
            for i in range(20):
                await round_trip(echo)
                async with ft.span(f"request-{i}"), ft.span("db"):
                    pass
            await round_trip(echo)
            assert batches.batches == []
            assert await tracker.flush()
            assert batches.batches == [[f"request-{i}" for i in range(20)]]
        accounted(tracker.stats)

    async def test_a_trace_reaches_the_exporter_once_the_interval_has_passed(self, echo):
        """Without any flush, a trace is exported by the loop's own timer once batch_interval
        has passed since it ended: a sleep of that length, started after the trace ended,
        ends after the trace was handed to the exporter, never before the trace ended."""
        batches = Batches()
        async with ft.Tracker(exporters=[batches], batch_interval=0.05):
            loop = asyncio.get_running_loop()
            async with ft.span("request"):
                await round_trip(echo)
            ended = loop.time()
            await asyncio.sleep(0.05)
            await turns()
            assert batches.batches == [["request"]]
            assert batches.arrived[0] >= ended

    @pytest.mark.parametrize(
        ("options", "at_once"),
        [({"max_batch": 8}, 8), ({}, 64)],
        ids=["a full batch of max_batch=8", "64 with the default max_batch"],
    )
    async def test_a_burst_is_exported_without_waiting_for_the_timer(self, options, at_once):
        """With an interval that never fires, at_once - 1 finished traces wait and the next
        sends all of them to the exporter within a few turns of the loop: a full batch
        (max_batch=8), or 64 traces with the default max_batch. A burst is not held for
        the interval (its spans would outlive the garbage collector's youngest generation)."""
        batches = Batches()
        async with ft.Tracker(exporters=[batches], batch_interval=NEVER, **options):
            for i in range(at_once - 1):
                with ft.span(f"t{i}"):
                    pass
            await turns()
            assert batches.batches == []
            with ft.span(f"t{at_once - 1}"):
                pass
            await turns()
            assert batches.batches == [[f"t{i}" for i in range(at_once)]]

    async def test_flush_takes_what_is_gathering_at_once(self):
        """flush() does not wait for the interval: the trace gathering is exported and
        flush returns True (with an interval of 60 s, waiting for it would time out)."""
        batches = Batches()
        async with ft.Tracker(exporters=[batches], batch_interval=NEVER) as tracker:
            with ft.span("request"):
                pass
            assert await asyncio.wait_for(tracker.flush(), 30)
            assert batches.batches == [["request"]]

    async def test_threads_hand_over_between_checks_without_waking_the_loop(self):
        """Traces finished in other threads wait for the next check: after a whole burst
        from a thread and turns of the loop nothing is exported; the flush exports them
        as one batch, every one counted once."""
        batches = Batches()
        async with ft.Tracker(exporters=[batches], batch_interval=NEVER) as tracker:

            def work() -> None:
                for i in range(10):
                    with ft.span(f"thread-{i}"):
                        pass

            worker = threading.Thread(target=ft.bind(work))
            worker.start()
            await asyncio.to_thread(worker.join)
            await turns()
            assert batches.batches == []
            assert await tracker.flush()
            assert batches.batches == [[f"thread-{i}" for i in range(10)]]
        assert tracker.stats.traces_completed == 10
        accounted(tracker.stats)

    async def test_interval_zero_exports_on_the_next_turns(self):
        """batch_interval=0: each trace is checked on the loop's next turn and exported
        without a flush, as before time batching."""
        batches = Batches()
        async with ft.Tracker(exporters=[batches], batch_interval=0):
            with ft.span("request"):
                pass
            await turns()
            assert batches.batches == [["request"]]

    def test_a_negative_interval_is_refused(self):
        """batch_interval must be 0 or more seconds: a negative one raises ValueError."""
        with pytest.raises(ValueError, match="batch_interval"):
            ft.Tracker(exporters=[], batch_interval=-1)


def completes_at_once(tracker: ft.Tracker) -> bool:
    """Whether ``tracker.flush()`` finishes on its first step (never suspends), and returned True."""
    step = tracker.flush()
    try:
        step.send(None)
    except StopIteration as done:
        return bool(done.value)
    step.close()
    return False


class TestIdleFlush:
    async def test_idle_flush_returns_without_awaiting(self, tracker, memory):
        """With nothing gathering, handed over, queued or in export, flush() completes on its
        first step (the coroutine never suspends) and returns True; also right after a trace
        was exported."""

        assert completes_at_once(tracker)
        with ft.span("request"):
            pass
        await tracker.flush()
        assert memory.traces
        assert completes_at_once(tracker)

    def test_idle_flush_of_a_thread_tracker_returns_without_awaiting(self):
        """A tracker running in its own thread (`with tracker`), flushed from this thread: idle,
        flush() completes on its first step, with no event loop running here at all; after a
        trace ended here (handed over to the tracker's thread) it is a real flush that exports
        it, and idle again afterwards."""
        memory = ft.MemoryExporter()
        with ft.Tracker(exporters=[memory], batch_interval=NEVER) as tracker:
            assert completes_at_once(tracker)
            with ft.start_root_span("job", tracker=tracker):
                pass
            assert asyncio.run(tracker.flush())
            assert len(memory.traces) == 1
            assert completes_at_once(tracker)

    async def test_flush_with_a_trace_gathering_does_wait(self, tracker, memory):
        """A trace gathering makes flush() a real wait: it suspends, and by its end the
        trace is exported."""
        with ft.span("request"):
            pass
        step = tracker.flush()
        try:
            step.send(None)
        except StopIteration:
            raise AssertionError("flush() returned with a trace still gathering") from None
        step.close()  # suspended, as it must be; the real flush follows
        assert await tracker.flush()
        assert len(memory.traces) == 1


class TestNothingLost:
    async def test_close_exports_what_is_gathering(self):
        """Leaving `async with tracker` with traces gathering under a long interval exports
        every one of them."""
        batches = Batches()
        async with ft.Tracker(exporters=[batches], batch_interval=NEVER) as tracker:
            for i in range(100):
                with ft.span(f"t{i}"):
                    pass
        assert batches.traces == 100
        accounted(tracker.stats)

    def test_loop_ending_without_aclose_exports_what_is_gathering(self, tmp_path):
        """asyncio.run() ending while traces are still gathering (interval of 60 s, tracker
        never closed): the lanes' last export takes them, and every line is in the file."""
        target = tmp_path / "out.jsonl"
        result = run_python(
            f"""
            import asyncio, flowtracker as ft

            async def main():
                tracker = ft.Tracker(exporters=[ft.FileExporter({str(target)!r})], batch_interval=60)
                await tracker.start()
                for i in range(300):
                    with ft.start_root_span("job", {{"i": i}}, tracker=tracker):
                        pass

            asyncio.run(main())
            """
        )
        assert result.returncode == 0, result.stderr
        assert len(target.read_text().splitlines()) == 300

    def test_default_tracker_flushes_what_is_gathering_at_exit(self, tmp_path):
        """A sync program ends right after its spans: the default tracker (a thread) still
        holds them in its interval, and the exit hook exports them all."""
        target = tmp_path / "out.jsonl"
        result = run_python(
            """
            import flowtracker as ft
            for i in range(50):
                with ft.span("job", i=i):
                    pass
            """,
            FLOWTRACKER_EXPORTERS=f"file://{target}",
        )
        assert result.returncode == 0, result.stderr
        assert len(target.read_text().splitlines()) == 50
