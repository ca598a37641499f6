"""Trackers across fork(): real os.fork(), multiprocessing and gunicorn --preload.

A tracker stays with the process that started it. In a child, the trackers
started before the fork are left behind, nothing the parent buffered is
exported twice, and the child's traces go to a fresh default tracker that is
flushed when the child exits. Each test runs its scenario in a fresh
interpreter (the default tracker is per process) with a JSON Lines file as
the exporter, and bounds every wait: a hung child fails the test instead of
hanging the suite.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from postgres_server import free_port
from scripts import run_python


def read_traces(path: Path) -> list[dict[str, Any]]:
    """Every trace in a JSON Lines file (each line must parse)."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def names(traces: list[dict[str, Any]]) -> list[str]:
    return sorted(span["name"] for trace in traces for span in trace["spans"])


class TestOsFork:
    def test_the_child_exports_its_traces_and_the_parent_keeps_working(self, tmp_path):
        """The issue's reproduction: a default tracker started at import, then fork(). The
        child's 100 traces are written (101 lines, not 1), once each, and the parent's
        traces after the fork are too."""
        target = tmp_path / "traces.jsonl"
        result = run_python(
            """
            import os
            import flowtracker as ft

            with ft.span("at import"):
                pass
            pid = os.fork()
            if pid == 0:
                for i in range(100):
                    with ft.span("in child", i=i):
                        pass
                raise SystemExit(0)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            for i in range(5):
                with ft.span("parent after", i=i):
                    pass
            """,
            FLOWTRACKER_EXPORTERS=f"file://{target}",
        )
        assert result.returncode == 0, result.stderr
        traces = read_traces(target)
        assert names(traces) == sorted(["at import"] + ["in child"] * 100 + ["parent after"] * 5)
        assert len({trace["trace_id"] for trace in traces}) == 106
        child = [t for t in traces if t["spans"][0]["name"] == "in child"]
        assert sorted(t["spans"][0]["tags"]["i"] for t in child) == list(range(100))

    def test_spans_under_a_span_open_at_the_fork_are_a_follow_up(self, tmp_path):
        """fork() inside a span: the span is exported once, by the parent; the child's spans
        under it go out as a follow-up record of the same trace, parented to it."""
        target = tmp_path / "traces.jsonl"
        result = run_python(
            """
            import os
            import flowtracker as ft

            with ft.span("job") as job:
                with ft.span("before fork"):
                    pass
                pid = os.fork()
                if pid == 0:
                    with ft.span("in child"):
                        pass
            if pid == 0:
                raise SystemExit(0)
            os.waitpid(pid, 0)
            """,
            FLOWTRACKER_EXPORTERS=f"file://{target}",
        )
        assert result.returncode == 0, result.stderr
        traces = read_traces(target)
        assert len({t["trace_id"] for t in traces}) == 1
        whole = next(t for t in traces if not t.get("follow_up"))
        follow_up = next(t for t in traces if t.get("follow_up"))
        assert names([whole]) == ["before fork", "job"]
        job = next(s for s in whole["spans"] if s["name"] == "job")
        assert job["status"] == "ok"
        assert [s["name"] for s in follow_up["spans"]] == ["in child"]
        assert follow_up["spans"][0]["parent_id"] == job["span_id"]
        assert len(traces) == 2

    def test_a_tracker_started_in_a_thread_is_left_behind(self, tmp_path):
        """A user's `with Tracker()` running when the process forks stays in the parent: the
        child's traces go to the child's default tracker (said once), a root given that
        tracker explicitly is forwarded there too, and start() on it is a clear error."""
        mine, default = tmp_path / "mine.jsonl", tmp_path / "default.jsonl"
        result = run_python(
            f"""
            import asyncio, os
            import flowtracker as ft

            with ft.Tracker(exporters=[ft.FileExporter({str(mine)!r})], service="orders") as tracker:
                with ft.span("parent before"):
                    pass
                pid = os.fork()
                if pid == 0:
                    with ft.span("child root"):
                        pass
                    with ft.start_root_span("child explicit", tracker=tracker):
                        pass
                    try:
                        asyncio.run(tracker.start())
                    except RuntimeError as error:
                        print("start:", error, flush=True)  # os._exit() flushes nothing
                    os._exit(0 if ft.default_tracker().close_thread() is None else 1)
                os.waitpid(pid, 0)
                with ft.span("parent after"):
                    pass
            """,
            FLOWTRACKER_EXPORTERS=f"file://{default}",
        )
        assert result.returncode == 0, result.stderr
        assert names(read_traces(mine)) == ["parent after", "parent before"]
        assert names(read_traces(default)) == ["child explicit", "child root"]
        assert result.stderr.count("Tracker(service='orders') was started in process") == 1
        assert "before fork(); it does not run in this child process" in result.stderr
        assert "start: this Tracker was started in process" in result.stdout
        assert "create a new Tracker in this process" in result.stdout

    def test_a_fork_never_cuts_the_tracker_thread_mid_import(self, tmp_path):
        """An exporter imports a slow module on first use, on the tracker's thread; the main
        thread forks while that import runs. The child imports the same module and traces:
        it must not hang on the import lock the parent's thread held (it did, for good)."""
        (tmp_path / "slow_module.py").write_text("import time\ntime.sleep(0.5)\nVALUE = 1\n")
        target = tmp_path / "traces.jsonl"
        result = run_python(
            f"""
            import os, sys, threading, time
            sys.path.insert(0, {str(tmp_path)!r})
            import flowtracker as ft

            importing = threading.Event()

            class LazyExporter(ft.FileExporter):
                async def export(self, traces):
                    importing.set()
                    import slow_module  # on the tracker's thread, 0.5 s
                    await super().export(traces)

            with ft.Tracker(exporters=[LazyExporter({str(target)!r})]):
                with ft.span("in parent"):
                    pass
                assert importing.wait(5)
                time.sleep(0.1)  # the thread is inside the import now
                pid = os.fork()
                if pid == 0:
                    import slow_module
                    with ft.span("in child"):
                        pass
                    ft.default_tracker().close_thread()
                    os._exit(0)
                _, status = os.waitpid(pid, 0)
                assert os.waitstatus_to_exitcode(status) == 0
            """,
            timeout=30,
            FLOWTRACKER_EXPORTERS=f"file://{target}",
        )
        assert result.returncode == 0, result.stderr
        assert names(read_traces(target)) == ["in child", "in parent"]


class TestMultiprocessing:
    def test_fork_start_method_processes_and_pool(self, tmp_path):
        """Processes and a Pool started with the fork method after the default tracker ran:
        every trace made in a worker is written (their exit skips atexit: the tracker
        flushes through multiprocessing's exit finalizers), once, and the parent's too."""
        target = tmp_path / "traces.jsonl"
        result = run_python(
            """
            import multiprocessing
            import flowtracker as ft

            def work(n):
                for i in range(20):
                    with ft.span("work", n=n, i=i), ft.span("step"):
                        pass
                return n

            if __name__ == "__main__":
                with ft.span("at import"):
                    pass
                context = multiprocessing.get_context("fork")
                processes = [context.Process(target=work, args=(n,)) for n in range(3)]
                for process in processes:
                    process.start()
                for process in processes:
                    process.join(30)
                    assert process.exitcode == 0
                pool = context.Pool(2)
                assert sorted(pool.map(work, range(3, 7))) == [3, 4, 5, 6]
                pool.close()
                pool.join()
                with ft.span("parent after"):
                    pass
            """,
            FLOWTRACKER_EXPORTERS=f"file://{target}",
        )
        assert result.returncode == 0, result.stderr
        traces = read_traces(target)
        roots = [t["spans"][0] for t in traces if len(t["spans"]) == 2]
        work = sorted((root["tags"]["n"], root["tags"]["i"]) for root in roots)
        assert work == [(n, i) for n in range(7) for i in range(20)]
        assert len(traces) == 7 * 20 + 2
        assert all(len(t["spans"]) == 2 for t in traces if t["spans"][0]["name"] == "work")


#: The apps gunicorn imports once in the arbiter (--preload), each with a span at import.
APPS = {
    "sync": """
        import os, time
        import flowtracker as ft

        with ft.span("at import"):
            pass

        def app(environ, start_response):
            with ft.span("GET /r", **{"http.target": environ["PATH_INFO"]}):
                time.sleep(0.01)
            body = str(os.getpid()).encode()
            start_response("200 OK", [("Content-Length", str(len(body)))])
            return [body]
        """,
    "uvicorn_worker.UvicornWorker": """
        import asyncio, os
        import flowtracker as ft
        from flowtracker.asgi import FlowTrackerMiddleware

        with ft.span("at import"):
            pass

        async def inner(scope, receive, send):
            await asyncio.sleep(0.01)
            body = str(os.getpid()).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        app = FlowTrackerMiddleware(inner)
        """,
    "aiohttp.GunicornWebWorker": """
        import asyncio, os
        from aiohttp import web
        import flowtracker as ft
        from flowtracker.aiohttp import setup

        with ft.span("at import"):
            pass

        async def handle(request):
            await asyncio.sleep(0.01)
            return web.Response(text=str(os.getpid()))

        app = web.Application()
        app.router.add_get("/r/{i}", handle)
        setup(app)
        """,
}


def worker_pids(arbiter: int) -> set[int]:
    """The arbiter's child processes (its workers), from /proc."""
    try:
        text = Path(f"/proc/{arbiter}/task/{arbiter}/children").read_text()
    except OSError:
        return set()
    return {int(pid) for pid in text.split()}


def get(url: str) -> int:
    """One request with its own connection; the answering worker's pid. Bounded."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return int(response.read())


def boot_and_load(tmp_path: Path, worker_class: str, boot: int, workers: int = 2) -> tuple[int, set[int]]:
    """Boots gunicorn --preload, sends requests (16 at a time, the first ones queue in the
    listen backlog until a worker is up) until every worker answered and at least 48 were
    sent, stops it with SIGTERM; returns the number of requests and the pids that answered."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "--preload", "--workers", str(workers),
               "--worker-class", worker_class, "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "10",
               "--chdir", str(tmp_path), "--log-level", "warning", "preloaded:app"]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sent, answered = 0, set()
    try:
        deadline = time.monotonic() + 60
        while len(worker_pids(server.pid)) < workers:
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
            assert time.monotonic() < deadline, f"boot {boot}: gunicorn did not come up"
            time.sleep(0.05)
        with ThreadPoolExecutor(8) as pool:
            while sent < 48 or answered != worker_pids(server.pid):
                assert time.monotonic() < deadline, f"boot {boot}: workers {worker_pids(server.pid)} "
                urls = [f"http://127.0.0.1:{port}/r/{boot}-{sent + n}" for n in range(16)]
                answered |= set(pool.map(get, urls))  # a hung worker fails here (timeout)
                sent += 16
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            _, errors = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    assert server.returncode == 0, errors.decode()
    return sent, answered


@pytest.mark.slow
class TestGunicornPreload:
    @pytest.mark.parametrize("worker_class", list(APPS))
    def test_every_worker_answers_and_every_request_is_traced(self, tmp_path, worker_class, monkeypatch):
        """gunicorn --preload imports the app, with a span at import, once in the arbiter,
        then forks the workers. Over three boots, every worker answers (none hangs on a
        lock the fork cut), every request is traced exactly once, and the span at import
        is written once per boot, by the arbiter."""
        (tmp_path / "preloaded.py").write_text(textwrap.dedent(APPS[worker_class]))
        target = tmp_path / "traces.jsonl"
        monkeypatch.setenv("FLOWTRACKER_EXPORTERS", f"file://{target}")
        requests = 0
        for boot in range(3):
            sent, answered = boot_and_load(tmp_path, worker_class, boot)
            assert len(answered) == 2
            requests += sent
        traces = read_traces(target)
        roots = [t["spans"][0] for t in traces]
        assert sum(root["name"] == "at import" for root in roots) == 3
        targets = [root["tags"]["http.target"] for root in roots if root["name"] != "at import"]
        assert len(targets) == len(set(targets)) == requests


@pytest.fixture(autouse=True)
def _no_inherited_exporters(monkeypatch):
    """The scripts choose their own exporters."""
    monkeypatch.delenv("FLOWTRACKER_EXPORTERS", raising=False)
