"""The demo: two real aiohttp services on 127.0.0.1, their traces printed, written and returned.

``TestDemoCommand`` runs ``python -m flowtracker demo`` as a user does: a real
process serving the demo on loopback, in a scratch directory.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import flowtracker as ft
from flowtracker.demo import overview_text, run_demo


@pytest.fixture(autouse=True)
def _uninstrument_after() -> Any:
    """run_demo() instruments SQLAlchemy and httpx for the process, as a service would: undone per test."""
    yield
    ft.uninstrument()


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


def demo_command(*args: str, cwd: Path, code: int = 0) -> tuple[list[str], str]:
    """Runs ``python -m flowtracker demo ARGS`` in ``cwd``; its stdout lines and its stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "flowtracker", "demo", "--color", "never", *args],
        capture_output=True,
        cwd=cwd,
        timeout=120,
        check=False,
        text=True,
    )
    assert result.returncode == code, result.stderr
    return result.stdout.splitlines(), result.stderr


def records_in(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


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
            client = next(s for s in orders["spans"] if s["name"].startswith("HTTP POST"))
            assert root["kind"] == "server"
            assert root["tags"]["http.status_code"] == 200
            assert spans["Process Payment"]["tags"] == {"currency": "USD"}
            assert spans["DB: Select User"]["tags"]["db.query"] == "SELECT id, name FROM users WHERE id = :id"
            for name in ("Process Payment", "DB: Select User", "HTTP: Shipping Service"):
                assert spans[name]["parent_id"] == root["span_id"]
            # The query and the shipping call are recorded by ft.instrument(), not by hand.
            query = spans["SELECT users"]
            assert query["parent_id"] == spans["DB: Select User"]["span_id"]
            assert query["kind"] == "client"
            assert query["tags"]["db.system"] == "sqlite"
            assert query["tags"]["db.statement"] == "SELECT id, name FROM users WHERE id = ?"
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

    async def test_console_false_prints_nothing_and_a_stream_gets_the_lines(self, tmp_path, capsys):
        """console=False prints no FLOW_LOG line; console=stream sends every record's line there instead."""
        stream = io.StringIO()
        quiet = await run_demo(1, traces_path=tmp_path / "quiet.jsonl", console=False)
        sent = await run_demo(1, traces_path=tmp_path / "sent.jsonl", console=stream)
        assert capsys.readouterr().out == ""
        assert len(quiet) == 2
        assert sorted(flow_log(stream.getvalue()), key=str) == sorted(sent, key=str)

    async def test_an_existing_traces_file_is_emptied_first(self, tmp_path, capsys):
        """traces_path ends up holding this run's records only, and keeps its permissions."""
        path = tmp_path / "traces.jsonl"
        path.write_text('{"trace_id": "old", "spans": []}\n')
        path.chmod(0o640)
        traces = await run_demo(1, traces_path=path)
        assert sorted(records_in(path), key=str) == sorted(traces, key=str)
        assert path.stat().st_mode & 0o777 == 0o640


class TestOverviewText:
    """overview_text(): what the demo command prints first."""

    def test_no_records_no_text(self):
        """Without records there is nothing to show."""
        assert overview_text([]) == ""

    def test_records_of_one_trace_are_one_request_and_a_failure_shows(self):
        """The orders and shipping records of one trace are one request; its line says when it failed."""
        orders = {"trace_id": "ab", "service": "orders", "spans": [
            {"span_id": "1", "name": "GET /", "duration_ms": 20.0, "status": "error",
             "tags": {"http.status_code": 500, "http.method": "GET"}},
        ]}  # fmt: skip
        shipping = {"trace_id": "ab", "service": "shipping", "spans": [
            {"span_id": "2", "parent_id": "1", "name": "POST /ship", "duration_ms": 5.0},
        ]}  # fmt: skip
        assert overview_text([orders, shipping]).splitlines() == [
            "1 request, one trace across the orders and shipping services.",
            "",
            "Request 1:",
            "GET /  20.0 ms  ✗ error  http.status_code=500",
            "└─ POST /ship  5.0 ms  25%",
            "",
            "One line per request:",
            "  1  GET /  500  20.0 ms  2 spans  error  trace ab",
        ]


class TestDemoCommand:
    """``flowtracker demo`` as a person runs it: readable first, raw lines on request, this run's files."""

    def test_prints_one_tree_and_a_line_per_request_without_raw_lines(self, tmp_path):
        """Without --raw: the first request's tree, one line per request (by trace id), no FLOW_LOG line."""
        out, err = demo_command("--requests", "3", cwd=tmp_path)
        assert not any('FLOW_LOG: {"' in line for line in out + err.splitlines())
        records = records_in(tmp_path / "traces.jsonl")
        assert len(records) == 6  # two services per request
        trace_ids = list(dict.fromkeys(record["trace_id"] for record in records))
        request_lines = [line for line in out if line.startswith("  ") and line.split()[0].isdigit()]
        assert [line.split()[0] for line in request_lines] == ["1", "2", "3"]
        assert sorted(line.split()[-1] for line in request_lines) == sorted(trace_ids)
        assert sum(line.startswith("GET /  ") for line in out) == 1  # one tree
        assert any(line.startswith("├─ DB: Select User") for line in out)
        assert any(line.lstrip(" │").startswith("└─ Calculate Weight") for line in out)
        assert len(out) < 20  # fits a terminal
        assert (tmp_path / "report.html").read_text(encoding="utf-8").startswith("<!doctype html>")

    def test_raw_lines_come_only_with_raw_and_after_the_readable_output(self, tmp_path):
        """--raw adds each record's FLOW_LOG line, after the tree and the request lines."""
        out, _ = demo_command("--requests", "2", "--raw", cwd=tmp_path)
        raw = [index for index, line in enumerate(out) if line.startswith("FLOW_LOG: ")]
        readable = [index for index, line in enumerate(out) if line.startswith(("GET /", "  1  ", "  2  "))]
        assert len(raw) == 4
        assert len(readable) == 3
        assert max(readable) < min(raw)
        printed = flow_log("\n".join(out))
        assert sorted(printed, key=str) == sorted(records_in(tmp_path / "traces.jsonl"), key=str)

    def test_a_second_run_replaces_the_first_runs_traces(self, tmp_path):
        """Two runs in a row: traces.jsonl holds only the second run's records, the ones it printed."""
        first, _ = demo_command("--requests", "1", cwd=tmp_path)
        second, _ = demo_command("--requests", "1", cwd=tmp_path)
        records = records_in(tmp_path / "traces.jsonl")
        assert len(records) == 2
        trace_id = records[0]["trace_id"]
        assert {record["trace_id"] for record in records} == {trace_id}
        assert any(line.endswith(f"trace {trace_id}") for line in second)
        assert not any(trace_id in line for line in first)

    def test_the_closing_message_says_where_the_files_are_and_what_next(self, tmp_path):
        """The run ends on stderr with what it wrote, requests and records counted apart (one record
        per service), then three next steps that work as printed: the ``flowtracker tree`` command
        for the file as named, the report's file:// URL, and the one line for one's own app."""
        (tmp_path / "out").mkdir()
        _, err = demo_command(
            "--requests", "2", "--traces", "out/t.jsonl", "--report", "out/r.html", cwd=tmp_path
        )
        lines = err.splitlines()
        assert lines[0] == ""
        assert (
            lines[1]
            == f"2 requests → 4 trace records (one per service), written to {tmp_path / 'out' / 't.jsonl'}"
        )
        steps = lines[2:]
        assert len(steps) == 3
        tree_command, report_url, app_line = (
            line.removeprefix("next:").strip().split("  ")[0] for line in steps
        )
        assert tree_command == "flowtracker tree out/t.jsonl"
        assert report_url == (tmp_path / "out" / "r.html").as_uri()
        assert app_line == "flowtracker.aiohttp.setup(app)"
        assert "app.add_middleware(FlowTrackerMiddleware)" in steps[2]
        trees = subprocess.run(
            [sys.executable, "-m", "flowtracker", *tree_command.split()[1:], "--color", "never"],
            capture_output=True,
            cwd=tmp_path,
            timeout=60,
            check=True,
            text=True,
        ).stdout
        assert sum(line.startswith("trace ") and "service=orders" in line for line in trees.splitlines()) == 2

    def test_an_unwritable_traces_path_is_named_before_anything_runs(self, tmp_path):
        """--traces in a missing folder: exit 4 with the path named, no traceback, nothing written."""
        out, err = demo_command("--traces", "missing/t.jsonl", cwd=tmp_path, code=4)
        assert err == "flowtracker: cannot write 'missing/t.jsonl': No such file or directory\n"
        assert out == []
        assert not (tmp_path / "report.html").exists()
