"""The event-loop monitor on uvloop, whose callbacks cannot be hooked: blocks found by the heartbeat.

Real uvloop loops (``uvloop.run``), a real ``uvicorn --loop uvloop`` process
and a real aiohttp server on a uvloop loop. One handler blocks (``time.sleep``
or a CPU loop) among concurrent requests that only await; only the guilty
span carries ``event_loop.blocked``, its stack names the offending line, and
``stats.watching`` is True while ``stats.busy_time`` is False.
"""

# ruff: noqa: ASYNC251  (blocking the loop is the point)
from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import uvloop
from aiohttp import web
from loop_helpers import (  # noqa: F401  (nothing_left_patched: an autouse fixture)
    blocked_events,
    by_name,
    line_in,
    nothing_left_patched,
    patched,
    spin,
    spin_frames,
)
from postgres_server import free_port
from web_helpers import collected, fetch, serve

import flowtracker as ft
from flowtracker.aiohttp import setup

THIS_FILE = Path(__file__).resolve()
START_UP = (
    "uvloop: blocking calls are watched; busy time per span needs the asyncio loop (uvicorn --loop asyncio)"
)


def here(marker: str) -> str:
    """``file:line`` of the one line of this file ending with ``# <marker>``."""
    return f"{THIS_FILE}:{line_in(THIS_FILE, marker)}"


def start_up_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The monitor's log lines that talk about uvloop."""
    messages = [record.getMessage() for record in caplog.records if record.name == "flowtracker.loop_monitor"]
    return [message for message in messages if message.startswith("uvloop")]


class TestUvloopRun:
    def test_block_pinned_on_the_guilty_span_only(self, memory, caplog):
        """``uvloop.run``: a span that sleeps among four that await gets the event, naming its line;
        the monitor watches, records no busy time, says so in one line, and measures the loop's lag."""
        caplog.set_level(logging.WARNING, "flowtracker.loop_monitor")

        async def innocent(number: int) -> None:
            async with ft.span(f"request {number}"), ft.span("query"):
                await asyncio.sleep(0.5)

        async def guilty() -> None:
            await asyncio.sleep(0.1)
            async with ft.span("report"), ft.span("render_pdf"):
                time.sleep(0.3)  # blocks uvloop

        async def main() -> ft.LoopMonitorStats:
            assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
            async with ft.Tracker(exporters=[memory]):
                with ft.monitor_event_loop(0.1) as monitor:
                    await asyncio.sleep(0.02)
                    await asyncio.gather(*(innocent(n) for n in range(4)), guilty())
                    await asyncio.sleep(0.02)
                    assert not patched()  # no hook on asyncio's callbacks: uvloop never runs them
            return monitor.stats

        stats = uvloop.run(main())
        found = blocked_events(memory.traces)
        assert [name for name, _ in found] == ["render_pdf"]
        attributes = found[0][1]["attributes"]
        assert attributes["duration_ms"] >= 300
        assert attributes["stack"].splitlines()[0] == f"{here('blocks uvloop')} in guilty"
        assert stats.watching
        assert not stats.busy_time
        assert (stats.blocks, stats.blocks_outside_spans, stats.callbacks, stats.busy_ms) == (1, 0, 0, 0.0)
        assert stats.max_block_ms >= 300
        assert stats.lag_max_ms >= 250
        assert stats.lag_p50_ms < 50
        assert all("busy_ms" not in span for trace in memory.traces for span in trace["spans"])
        assert start_up_lines(caplog) == [START_UP]

    def test_guilty_span_open_across_an_await(self, memory):
        """The blocking span is still open when the blocking callback ends: the event is pinned when
        the next heartbeat finds the stall over, with the whole block's duration."""

        async def main() -> ft.LoopMonitorStats:
            async with ft.Tracker(exporters=[memory]):
                with ft.monitor_event_loop(0.05) as monitor:
                    await asyncio.sleep(0.02)
                    async with ft.span("crunch"):
                        spin(0.15)
                        await asyncio.sleep(0.05)
                    await asyncio.sleep(0.02)
            return monitor.stats

        stats = uvloop.run(main())
        found = blocked_events(memory.traces)
        assert [name for name, _ in found] == ["crunch"]
        attributes = found[0][1]["attributes"]
        assert 150 <= attributes["duration_ms"] <= by_name(memory.traces)["crunch"]["duration_ms"]
        assert attributes["stack"].splitlines()[0] in spin_frames()
        assert stats.blocks == 1

    def test_block_outside_any_span_is_counted_and_logged_in_one_line(self, caplog):
        """A bare callback that blocks: counted outside spans, logged as one line with the user's frame."""
        caplog.set_level(logging.WARNING, "flowtracker.loop_monitor")

        def legacy() -> None:
            time.sleep(0.12)  # a bare callback blocks

        async def main() -> ft.LoopMonitorStats:
            with ft.monitor_event_loop(0.05) as monitor:
                await asyncio.sleep(0.02)
                asyncio.get_running_loop().call_soon(legacy)
                await asyncio.sleep(0.2)
            return monitor.stats

        stats = uvloop.run(main())
        assert (stats.blocks, stats.blocks_outside_spans) == (1, 1)
        [record] = [r for r in caplog.records if "outside any span" in r.getMessage()]
        assert "\n" not in record.getMessage()
        assert f"{here('a bare callback blocks')} in legacy" in record.getMessage()


class TestUvloopServers:
    def test_aiohttp_on_uvloop(self, memory):
        """aiohttp on a uvloop loop with ``setup(app, monitor_loop=True)``: only the sleeping
        request's span carries the event, with its line."""
        found_stats: list[ft.LoopMonitorStats] = []

        async def slow(request: web.Request) -> web.Response:
            async with ft.span("render"):
                time.sleep(0.3)  # sleeps in aiohttp
            return web.Response(text="slow")

        async def fast(request: web.Request) -> web.Response:
            async with ft.span("query"):
                await asyncio.sleep(0.3)
            return web.Response(text="fast")

        async def main() -> list[dict[str, Any]]:
            tracker = ft.Tracker(exporters=[memory])
            app = web.Application()
            app.router.add_get("/slow", slow)
            app.router.add_get("/fast", fast)
            setup(app, tracker, monitor_loop=True)

            async def keep_stats(app: web.Application) -> None:
                found_stats.append(ft.monitor_event_loop().stats)

            app.on_shutdown.append(keep_stats)
            async with serve(app) as url:
                fast_calls = [asyncio.ensure_future(fetch(url + "/fast")) for _ in range(4)]
                await asyncio.sleep(0.1)
                await fetch(url + "/slow")
                await asyncio.gather(*fast_calls)
                return await collected(tracker, memory, 5)

        traces = uvloop.run(main())
        found = blocked_events(traces)
        assert [name for name, _ in found] == ["render"]
        assert found[0][1]["attributes"]["stack"].splitlines()[0] == f"{here('sleeps in aiohttp')} in slow"
        [stats] = found_stats
        assert stats.watching
        assert not stats.busy_time
        assert stats.blocks == 1
        assert "busy_ms" not in by_name(traces)["query"]

    async def test_uvicorn_loop_uvloop(self, tmp_path):
        """A real ``uvicorn --loop uvloop`` process with ``FlowTrackerMiddleware(monitor_loop=0.1)``: a
        CPU loop in one request among four awaiting ones is pinned on that request's span, with its
        line; the start-up message is one line on stderr."""
        out = tmp_path / "traces.jsonl"
        (tmp_path / "uvloop_app.py").write_text(
            textwrap.dedent(
                f"""
                import asyncio, time
                import flowtracker as ft
                from flowtracker.asgi import FlowTrackerMiddleware

                async def handler(scope, receive, send):
                    assert scope["type"] == "http"  # the middleware answers lifespan
                    if scope["path"] == "/slow":
                        async with ft.span("legacy client"):
                            deadline = time.perf_counter() + 0.3
                            while time.perf_counter() < deadline:  # spins in uvicorn
                                pass
                    else:
                        async with ft.span("query"):
                            await asyncio.sleep(0.4)
                    await send({{"type": "http.response.start", "status": 200, "headers": []}})
                    await send({{"type": "http.response.body", "body": b"ok"}})

                app = FlowTrackerMiddleware(
                    handler, ft.Tracker(exporters=[ft.FileExporter({str(out)!r})]), monitor_loop=0.1
                )
                """
            )
        )
        app_source = (tmp_path / "uvloop_app.py").read_text().splitlines()
        spin_line = next(n for n, text in enumerate(app_source, 1) if text.endswith("# spins in uvicorn"))
        port = free_port()
        server = subprocess.Popen(  # noqa: ASYNC220  (started once; the test then only awaits it)
            [sys.executable, "-m", "uvicorn", "--loop", "uvloop", "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "warning", "--app-dir", str(tmp_path), "uvloop_app:app"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(500):
                try:
                    await fetch(url + "/warm-up")
                    break
                except OSError:
                    assert server.poll() is None, server.communicate()[1]
                    await asyncio.sleep(0.02)
            fast_calls = [asyncio.ensure_future(fetch(url + "/fast")) for _ in range(4)]
            await asyncio.sleep(0.1)
            await fetch(url + "/slow")
            await asyncio.gather(*fast_calls)
        finally:
            server.send_signal(signal.SIGINT)
            _, stderr = server.communicate(timeout=30)
        traces = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(traces) == 6, stderr
        found = blocked_events(traces)
        assert [name for name, _ in found] == ["legacy client"]
        stack = found[0][1]["attributes"]["stack"].splitlines()
        app_file = tmp_path / "uvloop_app.py"
        assert stack[0] in {f"{app_file}:{n} in handler" for n in (spin_line, spin_line + 1)}
        assert found[0][1]["attributes"]["duration_ms"] >= 300
        assert START_UP in stderr.splitlines()
        assert "Traceback" not in stderr
        assert "RuntimeWarning" not in stderr
