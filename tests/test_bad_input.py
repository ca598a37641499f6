"""Bad input never crashes the host app: each case has a safe, documented outcome."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flowtracker as ft


class TestMisuse:
    async def test_finish_twice_and_from_another_thread(self, tracker, memory):
        """finish() is idempotent, also when a second call races in from another thread."""
        span = ft.start_span("manual")
        threads = [threading.Thread(target=span.finish) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        span.finish()
        end = span.end_ns
        span.finish()
        assert span.end_ns == end
        await tracker.flush()
        assert len(memory.traces) == 1
        assert len(memory.traces[0]["spans"]) == 1

    async def test_exit_without_enter_and_double_exit(self, tracker, memory):
        """Leaving a span twice, or one never entered, is harmless."""
        span = ft.span("odd")
        span.__exit__(None, None, None)  # never entered: nothing happens
        with ft.span("twice") as twice:
            pass
        twice.__exit__(None, None, None)
        await tracker.flush()
        assert [t["spans"][0]["name"] for t in memory.traces] == ["twice"]

    async def test_ten_thousand_deep_nesting_exports(self, memory):
        """10,000 nested spans export as one trace, no RecursionError anywhere."""
        sink = io.StringIO()
        async with ft.Tracker(exporters=[memory, ft.ConsoleExporter(stream=sink)]):
            with contextlib.ExitStack() as stack:
                for depth in range(10_000):
                    stack.enter_context(ft.span(f"level-{depth}"))
        (trace,) = memory.traces
        spans = trace["spans"]
        assert len(spans) == 10_000
        assert json.loads(sink.getvalue()[len("FLOW_LOG: ") :]) == trace
        for parent, child in itertools.pairwise(spans):
            assert child["parent_id"] == parent["span_id"]

    async def test_many_unique_tag_keys_are_bounded(self, memory):
        """A loop adding unique tag keys cannot grow a span without bound."""
        async with ft.Tracker(exporters=[memory]) as tracker:
            with ft.span("loop") as span:
                for n in range(100_000):
                    span.set_tag(f"key-{n}", n)
        assert len(memory.traces[0]["spans"][0]["tags"]) == 128
        assert memory.traces[0]["spans"][0]["dropped_tags"] == 100_000 - 128
        assert tracker.stats.tags_dropped == 100_000 - 128

    async def test_add_tag_from_finished_task_context(self, tracker, memory):
        """A task that outlives its span and keeps tagging hits a finished span: ignored."""
        done = asyncio.Event()

        async def straggler():
            await done.wait()
            ft.add_tag("late", True)  # the span in this context has ended

        async with ft.span("root"):
            task = asyncio.create_task(straggler())
        done.set()
        await task
        await tracker.flush()
        assert "tags" not in memory.traces[0]["spans"][0]


class TestFuzzedSpans:
    @settings(max_examples=150, deadline=None)
    @given(
        name=st.one_of(st.text(max_size=5000), st.integers(), st.none(), st.binary(max_size=20)),
        tags=st.dictionaries(
            st.one_of(st.text(max_size=20), st.integers(), st.booleans()),
            st.one_of(st.text(), st.floats(), st.integers(), st.binary(), st.lists(st.integers()), st.none()),
            max_size=8,
        ),
    )
    def test_any_name_and_tags_export_as_json(self, name, tags):
        """Any span name and any tags (odd keys and values included) export as valid JSON."""
        from flowtracker.testing import capture_traces

        with capture_traces() as traces:
            span = ft.start_span(name, **{"base": 1})
            for key, value in tags.items():
                span.set_tag(key, value)
            span.finish()
        (trace,) = traces
        exported = trace["spans"][0]
        assert isinstance(exported["name"], str)
        assert exported["name"]
        json.dumps(trace)  # plain JSON, nothing exotic left


@pytest.mark.parametrize("bad", [-1, 0])
def test_invalid_limits_rejected(bad):
    """Limits that make no sense are rejected at construction, not at the first request."""
    with pytest.raises(ValueError, match="at least 1"):
        ft.Tracker(exporters=[], max_queue=bad)
