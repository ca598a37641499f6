"""A configuration mistake never breaks the host: it raises where it is written, else it falls back.

Trackers built in code (``Tracker(...)``, ``setup(app)``) raise at start-up;
the trackers flowtracker makes on its own (the default tracker, the
middlewares') fall back to the console exporter and name the mistake once.
The servers run as real processes on 127.0.0.1, as a user runs them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import textwrap
import uuid
from asyncio.subprocess import PIPE
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import flowtracker as ft
from flowtracker.aiohttp import middleware, setup
from flowtracker.asgi import FlowTrackerMiddleware

FALLBACK_LINE = "flowtracker: ignoring FLOWTRACKER_EXPORTERS="

# Serve the app on a socket bound to port 0, print the port, stop when stdin closes.
AIOHTTP_APP = """
import asyncio, socket, sys
from aiohttp import web
import flowtracker as ft
from flowtracker.aiohttp import middleware

async def hello(request):
    async with ft.span("work"):
        pass
    return web.Response(text="ok")

async def main():
    app = web.Application(middlewares=[middleware()])
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    print("PORT", sock.getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()

asyncio.run(main())
"""

UVICORN_APP = """
import asyncio, socket, sys
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
import flowtracker as ft
from flowtracker.asgi import FlowTrackerMiddleware

async def hello(request):
    async with ft.span("work"):
        pass
    return PlainTextResponse("ok")

app = Starlette(routes=[Route("/", hello)])
app.add_middleware(FlowTrackerMiddleware)

async def main():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    print("PORT", sock.getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    server.should_exit = True
    await task

asyncio.run(main())
"""


def env_with(exporters: str) -> dict[str, str]:
    return {**os.environ, "FLOWTRACKER_EXPORTERS": exporters}


async def serve_requests(script: str, exporters: str, count: int = 3) -> tuple[list[int], str, str]:
    """Runs ``script``, sends ``count`` GETs, closes its stdin; the statuses and its whole output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, env=env_with(exporters), stdin=PIPE, stdout=PIPE, stderr=PIPE
    )
    assert process.stdout is not None
    try:
        first = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
        if not first.startswith("PORT "):
            _, stderr = await asyncio.wait_for(process.communicate(), 60)
            raise AssertionError(f"the app did not start: {first!r} {stderr.decode()}")
        url = f"http://127.0.0.1:{int(first.split()[1])}/"
        statuses = []
        async with aiohttp.ClientSession() as client:
            for _ in range(count):
                async with client.get(url) as response:
                    statuses.append(response.status)
        stdout, stderr = await asyncio.wait_for(process.communicate(b""), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    return statuses, stdout.decode(), stderr.decode()


def flow_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("FLOW_LOG: {")]


class TestZeroConfigFallsBack:
    async def test_aiohttp_bare_middleware_answers_200(self) -> None:
        """A bare aiohttp middleware() under a typo answers 200, names the value once, traces to stdout."""
        statuses, stdout, stderr = await serve_requests(AIOHTTP_APP, "otlp+htp://collector:4318")
        assert statuses == [200, 200, 200]
        assert stderr.count(FALLBACK_LINE) == 1
        assert "'otlp+htp://collector:4318'" in stderr
        assert "otlp+http" in stderr  # what is accepted
        assert "Traceback" not in stderr
        assert len(flow_lines(stdout)) == 3

    async def test_asgi_middleware_under_uvicorn_answers_200(self) -> None:
        """FlowTrackerMiddleware without a tracker, under uvicorn with a typo: 200s, one message, traces."""
        statuses, stdout, stderr = await serve_requests(UVICORN_APP, "consle")
        assert statuses == [200, 200, 200]
        assert stderr.count(FALLBACK_LINE) == 1
        assert "'consle'" in stderr
        assert "console" in stderr.split("'consle'", 2)[-1]  # the known names follow
        assert "Traceback" not in stderr
        assert len(flow_lines(stdout)) == 3

    async def test_bare_script_spans_survive_a_typo(self) -> None:
        """A script using the default tracker runs to the end; stats say it fell back."""
        script = textwrap.dedent(
            """
            import asyncio, sys
            import flowtracker as ft

            async def main():
                async with ft.span("async-job"):
                    pass

            with ft.span("job"):
                pass
            asyncio.run(main())
            error = ft.default_tracker().stats.config_error
            print("STATS", "consle" in (error or ""), file=sys.stderr)
            """
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, env=env_with("consle"), stdout=PIPE, stderr=PIPE
        )
        raw_out, raw_err = await asyncio.wait_for(process.communicate(), 60)
        stdout, stderr = raw_out.decode(), raw_err.decode()
        assert process.returncode == 0, stderr
        assert stderr.count(FALLBACK_LINE) == 1
        assert "STATS True" in stderr
        assert "Traceback" not in stderr
        assert len(flow_lines(stdout)) == 2


class TestFallbackTracker:
    def test_fallback_uses_console_and_says_so_in_stats(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """on_config_error='fallback': one ConsoleExporter, and stats.config_error names the value and fix."""
        bad = f"consle-{uuid.uuid4().hex[:8]}"
        monkeypatch.setenv("FLOWTRACKER_EXPORTERS", bad)
        tracker = ft.Tracker(on_config_error="fallback")
        assert [type(e) for e in tracker.exporters] == [ft.ConsoleExporter]
        error = tracker.stats.config_error
        assert error is not None
        assert repr(bad) in error
        assert "known schemes and names: " in error
        assert "unset it" in error

    def test_mistake_is_logged_once(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The same mistake, met by two trackers, is logged once at ERROR on the flowtracker logger."""
        bad = f"file://host-{uuid.uuid4().hex[:8]}/x.jsonl"
        monkeypatch.setenv("FLOWTRACKER_EXPORTERS", bad)
        with caplog.at_level(logging.ERROR, logger="flowtracker"):
            ft.Tracker(on_config_error="fallback")
            ft.Tracker(on_config_error="fallback")
        records = [r for r in caplog.records if r.name == "flowtracker" and bad in r.getMessage()]
        assert len(records) == 1
        assert records[0].levelno == logging.ERROR

    def test_a_good_configuration_has_no_config_error(self) -> None:
        """A tracker that did not fall back reports config_error None."""
        assert ft.Tracker(exporters=[], on_config_error="fallback").stats.config_error is None

    def test_unknown_on_config_error_is_refused(self) -> None:
        """on_config_error takes 'raise' or 'fallback' only."""
        with pytest.raises(ValueError, match="on_config_error"):
            ft.Tracker(exporters=[], on_config_error="ignore")  # type: ignore[arg-type]


class TestRaisesWhereWritten:
    def test_setup_raises_at_startup(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """setup(app) with a bad FLOWTRACKER_EXPORTERS raises at that line, before anything is served."""
        monkeypatch.setenv("FLOWTRACKER_EXPORTERS", "consle")
        with pytest.raises(ValueError, match=r"'consle'.*known schemes"):
            setup(web.Application())

    def test_tracker_in_code_raises(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Tracker() written in code raises on a bad environment value (its default is 'raise')."""
        monkeypatch.setenv("FLOWTRACKER_EXPORTERS", "otlp+htp://collector")
        with pytest.raises(ValueError, match=r"otlp\+htp"):
            ft.Tracker()


class TestExportersArgument:
    async def test_strings_are_exporter_urls(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """exporters=["file:///…", "console"] builds both exporters, and a trace reaches both."""
        target = tmp_path / "traces.jsonl"
        async with ft.Tracker(exporters=[f"file://{target}", "console"]) as tracker:
            with ft.span("job"):
                pass
        assert [type(e) for e in tracker.exporters] == [ft.FileExporter, ft.ConsoleExporter]
        assert len(target.read_text().splitlines()) == 1
        assert capsys.readouterr().out.startswith("FLOW_LOG: {")

    def test_unknown_string_lists_known_schemes(self) -> None:
        """An unknown string raises ValueError listing the known schemes."""
        with pytest.raises(ValueError, match=r"'nonsense'.*console.*file.*kafka.*otlp"):
            ft.Tracker(exporters=["nonsense"])

    def test_object_without_export_names_it(self) -> None:
        """An object without export/aclose raises TypeError naming the object."""

        class HalfExporter:
            async def export(self, traces: object) -> None:
                pass

        with pytest.raises(TypeError, match=r"HalfExporter.*export.*aclose"):
            ft.Tracker(exporters=[HalfExporter()])  # type: ignore[list-item]
        with pytest.raises(TypeError, match="int"):
            ft.Tracker(exporters=[42])  # type: ignore[list-item]

    def test_one_string_is_not_a_list(self) -> None:
        """exporters="console" (a string, not a list) raises instead of reading its letters."""
        with pytest.raises(TypeError, match="list"):
            ft.Tracker(exporters="console")


MISSPELT_UNDER_UVICORN = """
import sys
import uvicorn
from starlette.applications import Starlette
from flowtracker.asgi import FlowTrackerMiddleware

app = Starlette()
app.add_middleware(FlowTrackerMiddleware, exclude_paths=["/health"])
uvicorn.run(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning")
"""


class TestMisspeltOptions:
    @pytest.mark.parametrize(
        ("build", "caller"),
        [
            (lambda **kw: middleware(**kw), "middleware()"),
            (lambda **kw: setup(web.Application(), ft.Tracker(exporters=[]), **kw), "setup()"),
            (lambda **kw: FlowTrackerMiddleware(asgi_app, **kw), "FlowTrackerMiddleware()"),
        ],
        ids=["middleware", "setup", "asgi"],
    )
    def test_names_the_option_and_the_closest_known_one(self, build, caller) -> None:
        """A misspelt option raises TypeError where the middleware is built: the mistake and the fix."""
        with pytest.raises(TypeError) as raised:
            build(exclude_paths=["/health"])
        message = str(raised.value)
        assert message.startswith(f"{caller} got an unknown option 'exclude_paths'; ")
        assert "did you mean 'excluded_paths'?" in message
        assert "Known options: excluded_paths, " in message

    @pytest.mark.parametrize(
        ("build", "misspelt", "meant"),
        [
            (lambda **kw: setup(web.Application(), **kw), "monitor_loops", "monitor_loop"),
            (lambda **kw: FlowTrackerMiddleware(asgi_app, **kw), "trackr", "tracker"),
            (lambda **kw: middleware(**kw), "record_header", "record_headers"),
        ],
        ids=["setup-monitor_loop", "asgi-tracker", "middleware-record_headers"],
    )
    def test_the_callers_own_keywords_are_suggested_too(self, build, misspelt, meant) -> None:
        """tracker and monitor_loop are options like the HTTP ones: a typo in them is named the same way."""
        with pytest.raises(TypeError, match=f"'{misspelt}'; did you mean '{meant}'"):
            build(**{misspelt: True})

    def test_nothing_close_lists_what_is_known(self) -> None:
        """An option like no known one gets no guess, only the list of known options."""
        with pytest.raises(TypeError) as raised:
            middleware(colour="blue")  # type: ignore[call-arg]
        assert "did you mean" not in str(raised.value)
        assert str(raised.value).startswith("middleware() got an unknown option 'colour'; Known options:")

    def test_zero_configuration_has_nothing_to_misspell(self) -> None:
        """No arguments never raises: the zero-config path cannot take an app down this way."""
        middleware()
        FlowTrackerMiddleware(asgi_app)

    async def test_under_starlette_the_app_refuses_to_start_with_the_message(self) -> None:
        """add_middleware builds it at lifespan startup: uvicorn stops there, naming the option."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", MISSPELT_UNDER_UVICORN, stdout=PIPE, stderr=PIPE
        )
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode != 0
        assert "got an unknown option 'exclude_paths'; did you mean 'excluded_paths'?" in stderr.decode()


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app that is never called."""
