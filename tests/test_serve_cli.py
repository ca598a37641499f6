"""``flowtracker serve`` as a real process: start-up lines, FILEs, signals, restarts, ports in use."""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from serve_helpers import ROOT, ServeProcess, get_json, post, protobuf_body, wire_span

from flowtracker.serve.command import Options, _announce


def record(number: int, service: str = "files") -> dict[str, Any]:
    span = wire_span(f"{number:016x}", f"job {number}", start_us=number * 1000)
    return {"trace_id": f"{number:032x}", "service": service, "spans": [span]}


class TestCommandLine:
    def test_start_up_lines_and_files_loaded(self, tmp_path: Path) -> None:
        """FILEs (JSON Lines and gzip) load at start; the start-up lines say where everything is."""
        plain = tmp_path / "a.jsonl"
        plain.write_bytes(b"".join(orjson.dumps(record(n)) + b"\n" for n in (1, 2)) + b"a log line\n")
        packed = tmp_path / "b.jsonl.gz"
        packed.write_bytes(gzip.compress(orjson.dumps(record(3)) + b"\n"))
        db = tmp_path / "store.db"
        serve = ServeProcess(
            str(plain), str(packed), "--port", "0", "--grpc-port", "0", "--db", str(db)
        ).start()
        try:
            text = "\n".join(serve.lines)
            assert "loaded 3 spans of 3 trace records from 2 files; 1 other lines skipped" in text
            port = serve.port
            assert f"watch traces live at http://127.0.0.1:{port}/" in text
            assert f"OTLP/HTTP  http://127.0.0.1:{port}/v1/traces" in text
            assert f"FLOWTRACKER_EXPORTERS=otlp+http://127.0.0.1:{port}" in text
            assert f"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{port}" in text
            assert serve.value("OTLP/gRPC").startswith("127.0.0.1:")
            assert f"store: {db}" in text
            _, listing = asyncio.run(get_json(port, "/api/traces"))
            assert [summary["name"] for summary in listing["traces"]] == ["job 3", "job 2", "job 1"]
        finally:
            code, _ = serve.stop()
        assert code == 0

    @pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
    def test_signal_stops_within_seconds_with_open_feeds_and_nothing_acknowledged_lost(
        self, tmp_path: Path, signum: int
    ) -> None:
        """SIGINT or SIGTERM with two live feeds open: exit 0 within seconds, every answered span stored."""
        db = str(tmp_path / "store.db")
        serve = ServeProcess("--port", "0", "--no-grpc", "--db", db).start()
        port = serve.port

        async def load_and_watch() -> int:
            async with aiohttp.ClientSession() as session:
                feeds = [await session.get(f"http://127.0.0.1:{port}/api/live") for _ in range(2)]
                answered = 0
                for number in range(1, 41):
                    status, _ = await post(port, protobuf_body([record(number)]))
                    answered += status == 200
                code, seconds = await asyncio.to_thread(serve.stop, signum)
                assert (code, seconds < 8) == (0, True), seconds
                for feed in feeds:  # each feed ended with the server
                    await asyncio.wait_for(feed.content.read(), 5)
                    feed.release()
                return answered

        answered = asyncio.run(load_and_watch())
        assert answered == 40
        assert "stopped; 40 traces in the store" in serve.lines[-1]
        again = ServeProcess("--port", "0", "--no-grpc", "--db", db).start()
        try:
            assert "40 now" in again.value("store:")
        finally:
            again.stop()

    def test_max_traces_holds_across_a_restart(self, tmp_path: Path) -> None:
        """``--max-traces 5``: after a restart with more traces, the store holds the newest five."""
        db = str(tmp_path / "store.db")
        first = ServeProcess("--port", "0", "--no-grpc", "--db", db, "--max-traces", "5").start()
        for number in range(1, 8):
            asyncio.run(post(first.port, protobuf_body([record(number)])))
        first.stop()
        second = ServeProcess("--port", "0", "--no-grpc", "--db", db, "--max-traces", "5").start()
        try:
            asyncio.run(post(second.port, protobuf_body([record(8)])))
            _, listing = asyncio.run(get_json(second.port, "/api/traces"))
            assert [summary["name"] for summary in listing["traces"]] == [f"job {n}" for n in range(8, 3, -1)]
        finally:
            second.stop()

    @pytest.mark.parametrize("option", ["--port", "--grpc-port"])
    def test_port_in_use_is_one_line_and_exit_2(self, tmp_path: Path, option: str) -> None:
        """A port in use (HTTP or gRPC) is one clear line on stderr and exit code 2, never a traceback."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            other = "--grpc-port" if option == "--port" else "--port"
            result = subprocess.run(
                [sys.executable, "-m", "flowtracker", "serve", option, str(port), other, "0",
                 "--db", str(tmp_path / "s.db")],
                capture_output=True, text=True, timeout=60, cwd=ROOT,
            )  # fmt: skip
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert lines == [
            f"flowtracker: cannot listen on 127.0.0.1:{port}: the port is in use (another flowtracker "
            f"serve, or a collector?); pick another with {option}"
        ]

    def test_without_grpcio_http_only_in_one_line(self, tmp_path: Path) -> None:
        """Without the grpc extra, serve runs OTLP/HTTP only and says so on the gRPC line."""
        code = (
            "import sys; sys.modules['grpc'] = None; from flowtracker.cli import run; "
            f"sys.exit(run(['serve', '--port', '0', '--db', {str(tmp_path / 's.db')!r}]))"
        )
        with subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT
        ) as process:
            assert process.stdout is not None
            lines = [process.stdout.readline().strip() for _ in range(3)]
            process.send_signal(signal.SIGINT)
            process.communicate(timeout=30)
        assert process.returncode == 0
        assert lines[2] == (
            "OTLP/gRPC  off: gRPC needs grpcio, pip install 'flowtracker[grpc]'; OTLP/HTTP works without it"
        )

    def test_refused_store_exits_4(self, tmp_path: Path) -> None:
        """A ``--db`` that is not a store is refused in one line, exit 4, the file untouched."""
        path = tmp_path / "notes.txt"
        path.write_text("my notes\n")
        result = subprocess.run(
            [sys.executable, "-m", "flowtracker", "serve", "--port", "0", "--no-grpc", "--db", str(path)],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
        assert result.returncode == 4
        assert "is not a SQLite database" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert path.read_text() == "my notes\n"

    def test_open_starts_the_browser_on_the_page(self, tmp_path: Path) -> None:
        """``--open`` hands the page URL to the browser (``$BROWSER`` here, a script that writes it down)."""
        seen = tmp_path / "seen.txt"
        browser = tmp_path / "browser.sh"
        browser.write_text(f'#!/bin/sh\necho "$1" > {seen}\n')
        browser.chmod(0o755)
        serve = ServeProcess(
            "--port", "0", "--no-grpc", "--db", ":memory:", "--open", env={"BROWSER": str(browser)}
        )
        serve.start()
        try:
            for _ in range(100):
                if seen.exists() and seen.read_text().strip():
                    break
                asyncio.run(asyncio.sleep(0.05))
            assert seen.read_text().strip() == f"http://127.0.0.1:{serve.port}/"
            assert "temporary, deleted at exit" in serve.value("store:")
        finally:
            serve.stop()

    def test_another_host_prints_the_warning(self) -> None:
        """Any non-loopback ``--host`` warns that anyone who can reach the port can read and fake traces."""

        class Stored:
            path = "/tmp/x.db"
            trace_count = 0

        err = io.StringIO()
        real, sys.stderr = sys.stderr, err
        try:
            _announce(Options(host="0.0.0.0"), 4318, "off", Stored(), io.StringIO())
            _announce(Options(host="127.0.0.1"), 4318, "off", Stored(), io.StringIO())
        finally:
            sys.stderr = real
        assert err.getvalue().splitlines() == [
            "flowtracker serve: warning: listening on 0.0.0.0: anyone who can reach this port can read the "
            "traces and send fake ones"
        ]

    def test_page_is_a_text_only_placeholder(self, tmp_path: Path) -> None:
        """``GET /`` is the placeholder page, loading nothing from outside; a foreign Host is refused."""
        serve = ServeProcess("--port", "0", "--no-grpc", "--db", ":memory:").start()

        async def fetch() -> None:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{serve.port}/") as page:
                    assert page.status == 200
                    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
                    assert "placeholder" in await page.text()
                headers = {"Host": f"rebound.example:{serve.port}"}
                async with session.get(
                    f"http://127.0.0.1:{serve.port}/api/traces", headers=headers
                ) as denied:
                    assert denied.status == 403

        try:
            asyncio.run(fetch())
        finally:
            serve.stop()


class TestBenchmark:
    @pytest.mark.slow
    def test_serve_suite_smoke(self, tmp_path: Path) -> None:
        """``benchmarks serve --smoke`` runs: every span sent is stored, queries answer, RSS is sampled."""
        env = {**os.environ, "FLOWTRACKER_EXPORTERS": "none", "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks", "serve", "--smoke", "--cpu", "-2", "--out", str(tmp_path)],
            capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        result = orjson.loads((tmp_path / "serve-smoke.json").read_bytes())
        [run] = result["ingest"]["details"]["flowtracker"]
        assert run["stored"] == run["sent"] > 0
        assert all(count > 0 for label, count in result["queries"]["answered"].items() if label != "no match")
        assert len(result["rss"]["curve"]) >= 10
        assert result["rss"]["kept_traces"] <= 10_000
        assert "spans stored and queryable per second" in done.stdout
