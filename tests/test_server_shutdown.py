"""Stopping a real server under load loses no trace, whether or not it runs the app's hooks.

Each test starts a real server process (uvicorn with ``--lifespan on`` and
``off``, one worker and two; aiohttp apps whose startup never runs), keeps a
few hundred requests in flight, stops it with SIGTERM or SIGINT, and counts
the lines written. The app appends one line to an ``entered`` file as each
request reaches it (one ``write`` with ``O_APPEND``), which is the count every
output must match exactly; every trace id a client received in
``traceresponse`` must be among those written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import textwrap
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from http_receiver import Receiver

from flowtracker.exporters.webhook import DELIVERY_HEADER

# The app both uvicorn matrices serve: Starlette, the middleware added as users do.
STARLETTE_APP = """
import asyncio, os
import flowtracker as ft
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from flowtracker.asgi import FlowTrackerMiddleware

ENTERED = os.open(os.environ["ENTERED"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)

async def item(request):
    os.write(ENTERED, b"x\\n")
    async with ft.span("work"):
        await asyncio.sleep(0.1)
    return PlainTextResponse("ok")

async def ready(request):
    return PlainTextResponse("ready")

given = os.environ.get("GIVEN_TRACKER_FILE")
tracker = ft.Tracker(exporters=[f"file://{given}"]) if given else None
app = Starlette(routes=[Route("/items/{item_id}", item), Route("/ready", ready)])
app.add_middleware(FlowTrackerMiddleware, tracker=tracker, excluded_paths=["/ready"])
"""

# An aiohttp app; SERVE picks how it is served: "run_app" with a bare middleware
# given an unstarted tracker (no hook of flowtracker's ever runs), "no-startup"
# with setup() behind aiohttp's low-level server (the app's startup and cleanup
# signals never fire; graceful stop on SIGTERM/SIGINT), "no-signals" the same
# with no signal handling at all (SIGTERM's default action ends it). Both stop
# with shutdown_timeout=SHUTDOWN_TIMEOUT: aiohttp leaves a connection whose
# request arrives after its shutdown began unanswered until that timeout (60 s
# by default), then closes it; the request never reached the app either way.
AIOHTTP_APP = """
import asyncio, os, signal, socket, sys
from aiohttp import web
import flowtracker as ft
from flowtracker.aiohttp import middleware, setup

ENTERED = os.open(os.environ["ENTERED"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)

async def item(request):
    os.write(ENTERED, b"x\\n")
    async with ft.span("work"):
        await asyncio.sleep(0.1)
    return web.Response(text="ok")

async def ready(request):
    return web.Response(text="ready")

exporter = os.environ.get("EXPORTER") or f"file://{os.environ['GIVEN_TRACKER_FILE']}"
tracker = ft.Tracker(exporters=[exporter], close_timeout=float(os.environ["CLOSE_TIMEOUT"]))
mode = os.environ["SERVE"]
GRACE = float(os.environ["SHUTDOWN_TIMEOUT"])
if mode == "run_app":
    app = web.Application(middlewares=[middleware(tracker, excluded_paths=["/ready"])])
else:
    app = web.Application()
    setup(app, tracker, excluded_paths=["/ready"])
app.router.add_get("/items/{id}", item)
app.router.add_get("/ready", ready)
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
print("PORT", sock.getsockname()[1], file=sys.stderr, flush=True)

async def serve_without_startup():
    # The app's own request handler behind the low-level server, as a server that
    # embeds an aiohttp app does: on_startup and on_cleanup never run.
    app.freeze()
    server = web.Server(app._handle, request_factory=app._make_request)
    runner = web.ServerRunner(server, shutdown_timeout=GRACE)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    stop = asyncio.Event()
    if mode == "no-startup":
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()  # graceful: waits for the requests in flight

if mode == "run_app":
    web.run_app(app, sock=sock, print=None, access_log=None, shutdown_timeout=GRACE)
else:
    asyncio.run(serve_without_startup())
"""


@dataclass
class Stopped:
    """What one stop under load left behind."""

    entered: int
    in_flight_at_signal: int
    received_ids: list[str] = field(default_factory=list)
    received_before_signal: list[str] = field(default_factory=list)
    returncode: int | None = None
    stderr: str = ""


class Server:
    """A server process whose stderr is read as it comes (a full pipe would stall it)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stderr: list[str] = []
        self._line = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            self.stderr.append(line.decode(errors="replace"))
            self._line.set()

    async def line_matching(self, pattern: str) -> re.Match[str]:
        """The first stderr line matching ``pattern`` (bounded wait)."""
        for _ in range(600):
            for line in self.stderr:
                if found := re.search(pattern, line):
                    return found
            if self._reader.done():
                break
            self._line.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._line.wait(), 0.1)
        raise AssertionError(f"no line matching {pattern!r}: {''.join(self.stderr)[-2000:]}")

    async def ready(self, url: str) -> None:
        """Waits until ``url``/ready answers 200."""
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as client:
            for _ in range(300):
                if self.process.returncode is not None:
                    raise AssertionError(f"the server exited: {''.join(self.stderr)[-2000:]}")
                try:
                    async with client.get(url + "/ready") as response:
                        if response.status == 200:
                            return
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"the server never answered /ready: {''.join(self.stderr)[-2000:]}")

    async def exited(self) -> tuple[int, str]:
        """Waits (bounded) for the process to end; its return code and whole stderr."""
        await asyncio.wait_for(self.process.wait(), 60)
        await asyncio.wait_for(self._reader, 10)
        assert self.process.returncode is not None
        return self.process.returncode, "".join(self.stderr)


def load_client(concurrency: int) -> aiohttp.ClientSession:
    """A client keeping ``concurrency`` requests in flight, each on a connection of its own."""
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=True)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60))


def count_lines(path: Path) -> int:
    return len(path.read_bytes().splitlines()) if path.exists() else 0


# CPython's own race in asyncio.Server.close (python/cpython#109564, 3.12+): a
# transport accepted while the server closes is collected unclosed, and its
# __del__ wakes the server's waiters a second time, after they were cleared.
# Printed by the interpreter, from asyncio's frames alone; nothing of the app's.
_SERVER_CLOSE_RACE = re.compile(
    r"Exception ignored (?:in|while calling deallocator):? <function _SelectorTransport\.__del__ at \w+>:?\n"
    r"Traceback \(most recent call last\):\n"
    r"(?:  File \"[^\"]*/asyncio/\w+\.py\", line \d+, in \w+\n    .*\n)+"
    r"TypeError: 'NoneType' object is not iterable\n"
)


def tracebacks(stderr: str) -> str:
    """``stderr`` without the interpreter's reports of CPython's server-close race (see above)."""
    return _SERVER_CLOSE_RACE.sub("", stderr)


def written_ids(lines: list[str]) -> list[str]:
    """The trace ids of JSON trace lines (any prefix before the object is ignored)."""
    return [json.loads(line[line.index("{") :])["trace_id"] for line in lines]


async def stop_under_load(
    url: str,
    server: Server,
    entered_file: Path,
    signum: int,
    requests: int = 600,
    concurrency: int = 300,
) -> Stopped:
    """Sends ``requests`` GETs, ``concurrency`` at a time; signals the server once a
    quarter are answered; waits (bounded) for it to exit."""
    done = 0
    signalled = asyncio.Event()
    result = Stopped(entered=0, in_flight_at_signal=0)

    async def one(client: aiohttp.ClientSession, number: int) -> None:
        nonlocal done
        try:
            async with client.get(f"{url}/items/{number}") as response:
                await response.read()
                if response.status == 200:
                    trace_id = response.headers["traceresponse"].split("-")[1]
                    result.received_ids.append(trace_id)
                    if not signalled.is_set():
                        result.received_before_signal.append(trace_id)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass  # refused, cut or left unanswered once the server stops
        finally:
            done += 1
            if done == requests // 4:
                result.in_flight_at_signal = count_lines(entered_file) - len(result.received_ids)
                signalled.set()
                server.process.send_signal(signum)

    async with load_client(concurrency) as client:
        await asyncio.wait_for(asyncio.gather(*(one(client, number) for number in range(requests))), 120)
    result.returncode, result.stderr = await server.exited()
    result.entered = count_lines(entered_file)
    return result


@pytest.fixture
async def servers() -> AsyncIterator[list[Server]]:
    """Server processes started by a test; killed if the test left one running."""
    started: list[Server] = []
    yield started
    for server in started:
        if server.process.returncode is None:
            server.process.kill()
            await server.process.wait()


async def start_uvicorn(
    tmp_path: Path, servers: list[Server], env: dict[str, str], *options: str, stdout: int | None = None
) -> tuple[str, Server]:
    """``uvicorn shop:app`` (the Starlette app) on a free port; its URL once it answers."""
    (tmp_path / "shop.py").write_text(STARLETTE_APP)
    command = [sys.executable, "-m", "uvicorn", "shop:app", "--host", "127.0.0.1", "--port", "0"]
    process = await asyncio.create_subprocess_exec(
        *command, "--no-access-log", *options, cwd=tmp_path, env=env, stdout=stdout, stderr=PIPE
    )
    server = Server(process)
    servers.append(server)
    url = (await server.line_matching(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")).group(1)
    await server.ready(url)
    return url, server


def base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FLOWTRACKER_EXPORTERS"}
    env["ENTERED"] = str(tmp_path / "entered")
    return env


class TestUvicornStopUnderLoad:
    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
    @pytest.mark.parametrize("workers", [1, 2])
    @pytest.mark.parametrize("lifespan", ["off", "on"])
    @pytest.mark.parametrize("configured", ["tracker-given", "zero-config"])
    async def test_every_request_that_reached_the_app_is_written(
        self, tmp_path, servers, configured, lifespan, workers, signum
    ):
        """A signal under load: one trace line per request that reached the app, whatever the settings.

        With a Tracker given and ``--lifespan off`` no startup hook starts it:
        the first request does. With zero configuration requests go to the
        default tracker on its own thread (its exporter from
        FLOWTRACKER_EXPORTERS). Either way the traces are flushed before
        uvicorn finishes, though it then re-raises the signal (no ``atexit``
        hook runs after SIGTERM's default action).
        """
        out = tmp_path / "traces.jsonl"
        env = base_env(tmp_path)
        if configured == "tracker-given":
            env["GIVEN_TRACKER_FILE"] = str(out)
        else:
            env["FLOWTRACKER_EXPORTERS"] = f"file://{out}"
        options = ("--lifespan", lifespan, "--workers", str(workers))
        url, server = await start_uvicorn(tmp_path, servers, env, *options)
        stopped = await stop_under_load(url, server, tmp_path / "entered", signum)
        assert stopped.in_flight_at_signal >= 100, stopped  # really under load
        lines = out.read_text().splitlines()
        assert len(lines) == stopped.entered, (len(lines), stopped.entered, stopped.stderr[-2000:])
        assert set(stopped.received_ids) <= set(written_ids(lines))
        assert "Traceback" not in tracebacks(stopped.stderr), stopped.stderr[-3000:]


class TestZeroConfigConsole:
    @pytest.mark.parametrize("lifespan", ["off", "on"])
    async def test_sigterm_flushes_the_default_tracker_to_a_slow_stdout(self, tmp_path, servers, lifespan):
        """No configuration at all: FLOW_LOG lines on stdout, one per request, though stdout stalls.

        Nobody reads the server's stdout until a second after the signal, so
        the console exporter falls far behind (the default tracker's thread
        waits on the pipe; requests keep being served). SIGTERM then flushes
        every trace before uvicorn re-raises the signal: without that, its
        default action killed the process with the backlog unwritten.
        """
        env = base_env(tmp_path)
        url, server = await start_uvicorn(tmp_path, servers, env, "--lifespan", lifespan, stdout=PIPE)
        async with load_client(300) as client:

            async def one(number: int) -> str:
                async with client.get(f"{url}/items/{number}") as response:
                    await response.read()
                    return response.headers["traceresponse"].split("-")[1]

            received = await asyncio.wait_for(asyncio.gather(*(one(number) for number in range(900))), 120)
        server.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(1)  # stdout still stalls: only a flush that waits for it loses nothing
        assert server.process.stdout is not None
        stdout = await asyncio.wait_for(server.process.stdout.read(), 60)
        _, stderr = await server.exited()
        lines = [line for line in stdout.decode().splitlines() if line.startswith("FLOW_LOG: ")]
        assert len(lines) == count_lines(tmp_path / "entered") == 900, stderr[-2000:]
        assert set(written_ids(lines)) == set(received)


async def start_aiohttp(
    tmp_path: Path,
    servers: list[Server],
    serve: str,
    exporter: str = "",
    shutdown_timeout: float = 5,
    close_timeout: float = 10,
) -> tuple[str, Server, Path]:
    """The aiohttp app served as ``serve`` says, on a free port; its URL once it answers.

    Its tracker writes a JSON Lines file (the path returned), or goes to ``exporter``;
    ``close_timeout`` is the tracker's. ``shutdown_timeout``: how long the server's
    graceful stop waits for requests in flight.
    """
    out = tmp_path / "traces.jsonl"
    env = {**base_env(tmp_path), "GIVEN_TRACKER_FILE": str(out), "SERVE": serve, "EXPORTER": exporter,
           "SHUTDOWN_TIMEOUT": str(shutdown_timeout), "CLOSE_TIMEOUT": str(close_timeout)}  # fmt: skip
    script = tmp_path / "server.py"
    script.write_text(textwrap.dedent(AIOHTTP_APP))
    process = await asyncio.create_subprocess_exec(sys.executable, str(script), env=env, stderr=PIPE)
    server = Server(process)
    servers.append(server)
    port = (await server.line_matching(r"^PORT (\d+)")).group(1)
    url = f"http://127.0.0.1:{port}"
    await server.ready(url)
    return url, server, out


class TestAiohttpWithoutStartup:
    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
    @pytest.mark.parametrize("serve", ["run_app", "no-startup"])
    async def test_first_request_starts_the_tracker_and_a_stop_loses_nothing(
        self, tmp_path, servers, serve, signum
    ):
        """A tracker no startup hook starts is started by the first request; a stop loses nothing.

        The hook never runs for a bare ``middleware(tracker)`` under
        ``web.run_app``, nor for ``setup()`` on a server that never fires the
        app's signals. A graceful stop under load leaves one line per request
        that reached the app.
        """
        url, server, out = await start_aiohttp(tmp_path, servers, serve)
        stopped = await stop_under_load(url, server, tmp_path / "entered", signum)
        assert stopped.in_flight_at_signal >= 100, stopped
        lines = out.read_text().splitlines() if out.exists() else []
        assert len(lines) == stopped.entered, (len(lines), stopped.entered, stopped.stderr[-2000:])
        assert set(stopped.received_ids) <= set(written_ids(lines))
        assert "Traceback" not in tracebacks(stopped.stderr), stopped.stderr[-3000:]

    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
    async def test_a_slow_exporter_gets_every_trace_once(self, tmp_path, servers, signum):
        """``web.run_app`` with a bare ``middleware(tracker)``, exporting to a collector that
        answers in 50 ms: each request that finishes during the graceful stop flushes before it
        ends, so when ``run_app`` cancels what is left on its loop no export is in flight, and no
        batch is sent a second time (while only the signal flushed, the batch in flight was sent
        again: here nearly every trace arrived twice). The collector receives one record per
        request that reached the app. (A POST the webhook exporter retried after a timeout
        carries the same delivery id, which a receiver drops: counted once here too.) On a
        loaded machine a POST can go unanswered for the webhook's attempt timeout (10 s), so
        a flush may wait 25 s here (``close_timeout``), within the server's graceful stop
        (30 s). An export still in flight when the loop ends anyway is sent again before
        the process exits, with the same delivery id (a digest of the body): dropped too."""
        async with Receiver(latency=0.05) as collector:
            hook = f"{collector.url}/hook"
            url, server, _ = await start_aiohttp(
                tmp_path, servers, "run_app", hook, shutdown_timeout=30, close_timeout=25
            )
            stopped = await stop_under_load(url, server, tmp_path / "entered", signum)
            deliveries = {request.headers[DELIVERY_HEADER]: request for request in collector.delivered}
            ids = [trace["trace_id"] for request in deliveries.values() for trace in request.json()]
        assert stopped.in_flight_at_signal >= 100, stopped
        assert len(ids) == len(set(ids)) == stopped.entered, (len(ids), len(set(ids)), stopped.entered)
        assert set(stopped.received_ids) <= set(ids)
        assert "Traceback" not in tracebacks(stopped.stderr), stopped.stderr[-3000:]

    async def test_sigterm_default_action_still_ends_the_process_after_the_flush(self, tmp_path, servers):
        """A server that handles no signal: SIGTERM flushes first, then ends the process by that very signal.

        Requests in flight die with the process, as SIGTERM's default action
        has them do; every request answered before the signal was sent is written.
        """
        url, server, out = await start_aiohttp(tmp_path, servers, "no-signals")
        stopped = await stop_under_load(url, server, tmp_path / "entered", signal.SIGTERM)
        assert stopped.returncode == -signal.SIGTERM
        assert stopped.received_before_signal
        assert set(stopped.received_before_signal) <= set(written_ids(out.read_text().splitlines()))
