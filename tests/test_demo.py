"""The demo: two real aiohttp services on 127.0.0.1, their traces printed, written and returned."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from typing import Any

import aiohttp
import pytest

from flowtracker.demo import run_demo


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_for_stderr(capsys: pytest.CaptureFixture[str], needle: str) -> str:
    seen = ""
    for _ in range(500):
        seen += capsys.readouterr().err
        if needle in seen:
            return seen
        await asyncio.sleep(0.01)
    raise AssertionError(f"{needle!r} never appeared on stderr: {seen!r}")


def flow_log(text: str) -> list[dict[str, Any]]:
    prefix = "FLOW_LOG: "
    return [json.loads(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix)]


class TestRunDemo:
    async def test_the_go_demo_flow_across_two_services(self, tmp_path, capsys):
        """Per request an orders and a shipping record share one trace id, linked by traceparent."""
        path = tmp_path / "traces.jsonl"
        traces = await run_demo(2, traces_path=path)
        assert [t["service"] for t in traces] == ["orders", "shipping", "orders", "shipping"]
        for orders, shipping in (traces[0:2], traces[2:4]):
            assert orders["trace_id"] == shipping["trace_id"]
            spans = {s["name"]: s for s in orders["spans"]}
            root = spans["GET /"]
            client = next(s for s in orders["spans"] if s.get("kind") == "client")
            assert root["kind"] == "server"
            assert root["tags"]["http.status_code"] == 200
            assert spans["Process Payment"]["tags"] == {"currency": "USD"}
            assert spans["DB: Select User"]["tags"]["db.query"].startswith("SELECT * FROM users")
            for name in ("Process Payment", "DB: Select User", "HTTP: Shipping Service"):
                assert spans[name]["parent_id"] == root["span_id"]
            assert client["name"].startswith("HTTP POST 127.0.0.1:")
            assert client["parent_id"] == spans["HTTP: Shipping Service"]["span_id"]
            ship_root, weight = shipping["spans"]
            assert ship_root["name"] == "POST /ship"
            assert ship_root["parent_id"] == client["span_id"]
            assert weight["name"] == "Calculate Weight"
            assert weight["parent_id"] == ship_root["span_id"]
        printed = flow_log(capsys.readouterr().out)
        written = [json.loads(line) for line in path.read_text().splitlines()]
        key = lambda t: (t["trace_id"], t["service"])  # noqa: E731
        assert sorted(printed, key=key) == sorted(written, key=key) == sorted(traces, key=key)

    async def test_zero_requests_returns_nothing(self, tmp_path, capsys):
        """requests=0 serves, sends nothing, prints nothing, returns an empty list."""
        assert await run_demo(0, traces_path=tmp_path / "t.jsonl") == []
        assert "FLOW_LOG" not in capsys.readouterr().out

    async def test_serve_until_cancelled_flushes_visitors_traces(self, tmp_path, capsys):
        """serve=True prints the URL, answers other clients, and when cancelled still writes every trace."""
        path, port = tmp_path / "t.jsonl", free_port()
        task = asyncio.create_task(run_demo(1, serve=True, port=port, traces_path=path))
        err = await wait_for_stderr(capsys, "serving")
        assert f"serving http://127.0.0.1:{port}/" in err
        async with aiohttp.ClientSession() as client, client.get(f"http://127.0.0.1:{port}/") as response:
            assert await response.text() == "Order Processed"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        written = [json.loads(line) for line in path.read_text().splitlines()]
        assert sorted(t["service"] for t in written) == ["orders", "orders", "shipping", "shipping"]

    async def test_serve_returns_the_traces_on_ctrl_c(self, tmp_path, capsys):
        """SIGINT while serving stops the demo cleanly and returns every trace (what the CLI draws)."""
        port, before = free_port(), signal.getsignal(signal.SIGINT)
        task = asyncio.create_task(run_demo(0, serve=True, port=port, traces_path=tmp_path / "t.jsonl"))
        await wait_for_stderr(capsys, "serving")
        async with aiohttp.ClientSession() as client, client.get(f"http://127.0.0.1:{port}/") as response:
            assert response.status == 200
        os.kill(os.getpid(), signal.SIGINT)
        traces = await asyncio.wait_for(task, 30)
        assert [t["service"] for t in traces] == ["orders", "shipping"]
        assert signal.getsignal(signal.SIGINT) is before  # the previous handler is back
