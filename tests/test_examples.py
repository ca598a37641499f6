"""The examples, run as a user runs them: real processes serving on 127.0.0.1, stopped with Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from asyncio.subprocess import PIPE
from pathlib import Path
from typing import Any

import aiohttp

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def console_env(**extra: str) -> dict[str, str]:
    """The environment of a user who configured nothing: FLOWTRACKER_EXPORTERS unset (console)."""
    env = {k: v for k, v in os.environ.items() if k != "FLOWTRACKER_EXPORTERS"}
    env.update(extra)
    return env


def flow_log(stdout: bytes) -> list[dict[str, Any]]:
    prefix = "FLOW_LOG: "
    lines = stdout.decode().splitlines()
    return [json.loads(line[len(prefix) :]) for line in lines if line.startswith(prefix)]


async def stop(process: asyncio.subprocess.Process) -> tuple[bytes, bytes]:
    """Ctrl-C, then everything the process wrote."""
    process.send_signal(signal.SIGINT)
    return await asyncio.wait_for(process.communicate(), 60)


class TestAiohttpExample:
    async def test_serves_the_demo_and_prints_its_traces(self, tmp_path):
        """The aiohttp example answers `Order Processed`, prints two records a request, exits 0 on Ctrl-C."""
        traces = tmp_path / "traces.jsonl"
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(EXAMPLES / "aiohttp_app.py"), "--port", "0", "--requests", "1",
            "--traces", str(traces), env=console_env(), stdout=PIPE, stderr=PIPE,
        )  # fmt: skip
        assert process.stderr is not None
        try:
            line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
            url = line.split("serving ", 1)[1].split()[0]
            async with aiohttp.ClientSession() as client, client.get(url) as response:
                assert await response.text() == "Order Processed"
            stdout, _ = await stop(process)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.returncode == 0
        records = flow_log(stdout)
        assert sorted(r["service"] for r in records) == ["orders", "orders", "shipping", "shipping"]
        assert len(traces.read_text().splitlines()) == 4


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_until_serving(url: str, process: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as client:
        for _ in range(300):
            if process.returncode is not None:
                raise AssertionError("the example exited early")
            try:
                async with client.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never answered")


class TestStarletteExample:
    async def test_routes_traced_under_uvicorn_and_flushed_at_ctrl_c(self):
        """Each route prints one trace (streams, errors, websockets too); /health none; logs carry ids."""
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(EXAMPLES / "starlette_app.py"),
            env=console_env(PORT=str(port)), stdout=PIPE, stderr=PIPE,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            await wait_until_serving(base + "/health", process)
            async with aiohttp.ClientSession() as client:
                async with client.get(base + "/orders/42") as response:
                    assert (await response.json())["order"] == "42"
                    order_trace_id = response.headers["X-Trace-Id"]
                async with client.get(base + "/stream") as response:
                    assert await response.text() == "line 0\nline 1\nline 2\n"
                async with client.get(base + "/fail") as response:
                    assert response.status == 500
                async with client.ws_connect(base + "/ws") as ws:
                    await ws.send_str("ping")
                    assert (await ws.receive()).data == "ping"
            stdout, stderr = await stop(process)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.returncode == 0
        roots = {r["spans"][0]["name"]: r for r in flow_log(stdout)}
        assert set(roots) == {"GET /orders/{order_id}", "GET /stream", "GET /fail", "WEBSOCKET /ws"}
        assert roots["GET /orders/{order_id}"]["trace_id"] == order_trace_id
        assert roots["GET /fail"]["spans"][0]["status"] == "error"
        assert [s["name"] for s in roots["GET /stream"]["spans"]].count("Render Line") == 3
        assert f"[trace={order_trace_id} " in stderr.decode()
