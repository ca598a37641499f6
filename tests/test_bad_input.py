"""Bad input never crashes the host app: each case has a safe, documented outcome."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from web_helpers import serve

import flowtracker as ft
from flowtracker.aiohttp import middleware


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


async def _hello(request: web.Request) -> web.Response:
    return web.Response(text="hi")


async def _raw_get(port: int, user_agent: bytes) -> bytes:
    """A raw HTTP/1.1 client: sends the header bytes exactly as given; returns the status line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: " + user_agent + b"\r\nConnection: close\r\n\r\n"
    )
    status = await reader.readline()
    await reader.read()
    writer.close()
    await writer.wait_closed()
    return status


class TestHostileStrings:
    """Bytes that are not UTF-8 reach spans as lone surrogates; they are escaped, and cost no trace."""

    async def test_a_bad_header_byte_among_200_requests_loses_nothing(self, tmp_path: Path) -> None:
        """Real aiohttp with ``record_headers``, a raw client sending ``User-Agent: curl/\\xff`` among 200
        ordinary requests: all 201 traces are written, the bad byte as the text ``\\xff``."""
        path = tmp_path / "traces.jsonl"
        async with ft.Tracker(exporters=[ft.FileExporter(path)]) as tracker:
            app = web.Application(middlewares=[middleware(tracker, record_headers=["User-Agent"])])
            app.router.add_get("/x", _hello)
            async with serve(app) as url, aiohttp.ClientSession() as client:

                async def ordinary(index: int) -> int:
                    async with client.get(url + "/x", headers={"User-Agent": f"ok/{index}"}) as response:
                        await response.read()
                        return response.status

                port = int(url.rsplit(":", 1)[1])
                answers = await asyncio.gather(_raw_get(port, b"curl/\xff"), *map(ordinary, range(200)))
                for _ in range(200):  # roots end once the reply is written: wait for all 201
                    await tracker.flush()
                    if tracker.stats.traces_completed >= 201:
                        break
                    await asyncio.sleep(0.01)
        assert answers[0].startswith(b"HTTP/1.1 200")
        assert answers[1:] == [200] * 200
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        agents = [line["spans"][0]["tags"]["http.request.header.user-agent"] for line in lines]
        assert len(lines) == 201
        assert agents.count("curl/\\xff") == 1
        assert tracker.stats.exporters["file"] == (201, 0, 0, 0)

    def test_argv_and_environment_bytes_in_a_script(self, tmp_path: Path) -> None:
        """A script naming spans after ``sys.argv`` and tagging ``os.environ`` values holding bad bytes
        (the default tracker, exporters from ``FLOWTRACKER_EXPORTERS``): every trace is written."""
        path = tmp_path / "traces.jsonl"
        code = textwrap.dedent(
            """
            import os, sys, flowtracker as ft
            with ft.span(sys.argv[1], home=os.environ["BAD_HOME"], file=os.fsdecode(b"f\\xe9.txt")):
                pass
            for i in range(50):
                with ft.span("ordinary", i=i):
                    pass
            """
        )
        env = {**os.environ, "FLOWTRACKER_EXPORTERS": f"file://{path}"}
        env_bytes = {key.encode(): value.encode() for key, value in env.items()}
        env_bytes[b"BAD_HOME"] = b"/home/\xfe"
        done = subprocess.run(
            [sys.executable, "-c", code, b"job-\xff"], env=env_bytes, capture_output=True, check=False
        )
        assert done.returncode == 0, done.stderr
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assert len(lines) == 51
        first = lines[0]["spans"][0]
        assert first["name"] == "job-\\xff"
        assert first["tags"] == {"home": "/home/\\xfe", "file": "f\\xe9.txt"}


@pytest.mark.parametrize("bad", [-1, 0])
def test_invalid_limits_rejected(bad):
    """Limits that make no sense are rejected at construction, not at the first request."""
    with pytest.raises(ValueError, match="at least 1"):
        ft.Tracker(exporters=[], max_queue=bad)
