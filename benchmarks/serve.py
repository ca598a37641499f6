"""Suite ``serve``: ``flowtracker serve`` ingest, queries and memory, with Arize Phoenix beside it.

* **Ingest** (spans stored and queryable per second). Traces of 10 spans are
  made with the OpenTelemetry SDK and encoded with its own OTLP encoder
  (``encode_spans``) into requests of 500 spans: all untimed. Then the
  requests are POSTed to ``/v1/traces`` as protobuf over 4 connections at
  once (timed), the server pinned to CPU 0 and this load generator to CPU 1.
  flowtracker answers 200 only once a request's spans are committed, so the
  clock stops at the last answer; Phoenix stores after it answers, so its
  clock stops when its database holds every span. Beside the rate: the
  server process's CPU time (user and system, from ``/proc``) per span
  stored, over the same interval. Phoenix (``arize-phoenix``,
  a pip-installable OTLP trace server with a UI) is far too big for any extra
  CI installs: the suite installs it into ``.venv-phoenix`` on first use.
  Phoenix gets fewer spans (it stores a few hundred per second; the same
  load shape) so the run ends in minutes. Goal: >= 50,000 spans/s.
* **Query**: a store with 100,000 traces (500,000 spans), the server's
  ``GET /api/traces`` with each filter; the median of 20 answers. Goal: < 100 ms.
  Then the live page in Chromium against that store (``serve_page.py``):
  the list painted, the newest trace drawn, a new trace listed. Goal: < 1 s.
* **RSS**: 1,000,000 spans sent to a server with ``--max-traces 10000``; its
  RSS after every 100,000 spans (the curve), and the traces it keeps.

Example:
    python -m benchmarks serve --quick
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._harness import Settings, format_table, interleaved, median
from .serve_page import page_timings

ROOT = Path(__file__).resolve().parent.parent
PHOENIX_VENV = ROOT / ".venv-phoenix"
SPANS_PER_TRACE = 10
SPANS_PER_REQUEST = 500
CONNECTIONS = 4
SERVER_CPU = 0  # the suite itself runs pinned to the last CPU (python -m benchmarks)


# ---- the load: made and encoded by the OpenTelemetry SDK (untimed) ------------------------------


def make_bodies(spans: int, seed: int = 0) -> list[bytes]:
    """OTLP protobuf requests holding ``spans`` spans, made and encoded by the SDK itself."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": f"bench-{seed}"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench")
    for number in range(spans // SPANS_PER_TRACE):
        with tracer.start_as_current_span("GET /orders/{id}", attributes={"http.route": "/orders/{id}"}):
            for step in range(SPANS_PER_TRACE - 1):
                with tracer.start_as_current_span(f"step {step}") as child:
                    child.set_attribute("order.id", number)
                    child.set_attribute("db.statement", "SELECT * FROM orders WHERE id = $1")
    finished = memory.get_finished_spans()
    provider.shutdown()
    return [
        encode_spans(finished[start : start + SPANS_PER_REQUEST]).SerializeToString()
        for start in range(0, len(finished), SPANS_PER_REQUEST)
    ]


async def post_all(url: str, bodies: Sequence[bytes]) -> tuple[float, float, int]:
    """POSTs every body over ``CONNECTIONS`` connections; when that started and ended, and the 200s.

    A 503 (the server asking for a pause) is retried after its ``Retry-After``.
    """
    import aiohttp

    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    answered = 0
    headers = {"Content-Type": "application/x-protobuf"}

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal answered
        while not queue.empty():
            body = queue.get_nowait()
            while True:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status == 200:
                        answered += 1
                        break
                    if response.status != 503:
                        raise RuntimeError(f"{url} answered {response.status}")
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))

    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(CONNECTIONS)))
        return started, time.perf_counter(), answered


# ---- the servers ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pinned(cpu: int) -> Callable[[], None]:
    """A ``preexec_fn`` that moves the server to ``cpu`` (the load generator stays where it is pinned)."""

    def pin() -> None:
        if hasattr(os, "sched_setaffinity"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, {cpu})

    return pin


class FlowtrackerServer:
    """``flowtracker serve`` in a subprocess (HTTP only), pinned to ``SERVER_CPU``."""

    name = "flowtracker"

    def __init__(self, directory: Path, max_traces: int, db: Path | None = None) -> None:
        self.db = db or directory / "store.db"
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flowtracker", "serve", "--port", str(self.port), "--no-grpc",
             "--db", str(self.db), "--max-traces", str(max_traces)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, preexec_fn=_pinned(SERVER_CPU),
        )  # fmt: skip
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if "Ctrl-C stops it" in line:
                break
        else:
            raise RuntimeError("flowtracker serve did not start")
        self.url = f"http://127.0.0.1:{self.port}/v1/traces"

    def stored(self) -> int:
        with contextlib.closing(sqlite3.connect(self.db)) as connection:
            return int(connection.execute("SELECT count(*) FROM spans").fetchone()[0])

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        self.process.communicate(timeout=60)


def phoenix_python() -> Path:
    """``.venv-phoenix``'s interpreter, with ``arize-phoenix`` installed on first use."""
    python = PHOENIX_VENV / "bin" / "python"
    if not (PHOENIX_VENV / "bin" / "phoenix").exists():
        print("[serve] installing arize-phoenix into .venv-phoenix (once; a few minutes)", flush=True)
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(PHOENIX_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "arize-phoenix"], check=True)
    return python


class PhoenixServer:
    """Arize Phoenix (``phoenix serve``) from ``.venv-phoenix``, its SQLite store in ``directory``."""

    name = "phoenix"

    def __init__(self, directory: Path) -> None:
        phoenix_python()
        self.port, grpc_port = free_port(), free_port()
        self.directory = directory
        env = {**os.environ, "PHOENIX_PORT": str(self.port), "PHOENIX_GRPC_PORT": str(grpc_port),
               "PHOENIX_HOST": "127.0.0.1", "PHOENIX_WORKING_DIR": str(directory),
               "PHOENIX_TELEMETRY_ENABLED": "false"}  # fmt: skip
        self.process = subprocess.Popen(
            [str(PHOENIX_VENV / "bin" / "phoenix"), "serve"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, preexec_fn=_pinned(SERVER_CPU),
        )  # fmt: skip
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2):
                    break
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError("phoenix serve exited at start") from None
                time.sleep(0.5)
        else:
            raise RuntimeError("phoenix serve did not start")
        self.url = f"http://127.0.0.1:{self.port}/v1/traces"

    def stored(self) -> int:
        databases = list(self.directory.glob("*.db"))
        if not databases:
            return 0
        with contextlib.closing(sqlite3.connect(databases[0], timeout=30)) as connection:
            return int(connection.execute("SELECT count(*) FROM spans").fetchone()[0])

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# ---- measurements --------------------------------------------------------------------------


def ingest_once(server: Any, bodies: Sequence[bytes], spans: int, timeout: float) -> dict[str, float]:
    """Spans stored per second for one server: from the first POST until every span is stored.

    flowtracker answers once a request is committed, so its spans are all
    stored at the last answer; Phoenix stores after answering, so its
    database is watched until it holds them all (or ``timeout`` passes).
    """
    try:
        cpu_before = cpu_seconds(server.process.pid)
        started, finished, answered = asyncio.run(post_all(server.url, bodies))
        stored = server.stored()
        deadline = finished + timeout
        while stored < spans and time.perf_counter() < deadline:
            time.sleep(0.05)
            stored = server.stored()
            finished = time.perf_counter()
        cpu = cpu_seconds(server.process.pid) - cpu_before
        return {"spans_per_s": stored / (finished - started), "stored": stored, "sent": spans,
                "answered": answered, "server_cpu_us_per_span": cpu / max(stored, 1) * 1e6}  # fmt: skip
    finally:
        server.stop()


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) process ``pid`` has used (its own threads; children not counted)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_ingest(settings: Settings, phoenix: bool) -> tuple[dict[str, Any], str]:
    spans = settings.scaled(200_000, 50_000, 2_000)
    phoenix_spans = settings.scaled(10_000, 2_000, 500)
    bodies = make_bodies(spans)
    phoenix_bodies = bodies[: phoenix_spans // SPANS_PER_REQUEST]
    variants = ["flowtracker", "phoenix"] if phoenix else ["flowtracker"]
    details: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    reps = min(settings.repetitions, 3)

    def measure(name: str, rep: int) -> float:
        with tempfile.TemporaryDirectory(prefix="ft-serve-bench-") as directory:
            if name == "flowtracker":
                result = ingest_once(FlowtrackerServer(Path(directory), 1_000_000), bodies, spans, 60)
            else:
                result = ingest_once(PhoenixServer(Path(directory)), phoenix_bodies, phoenix_spans, 600)
        details[name].append(result)
        return result["spans_per_s"]

    samples = interleaved(variants, reps, measure)
    rows = [
        [name, f"{median(samples[name]):,.0f}", f"{median([d['stored'] for d in details[name]]):,.0f}",
         f"{details[name][0]['sent']:,.0f}",
         f"{median([d['server_cpu_us_per_span'] for d in details[name]]):,.1f}"]
        for name in variants
    ]  # fmt: skip
    if phoenix:
        ratio = median([a / b for a, b in zip(samples["flowtracker"], samples["phoenix"], strict=False)])
        rows.append(["flowtracker / phoenix", f"{ratio:,.0f}x", "", "", ""])
    table = format_table(
        f"OTLP/HTTP protobuf ingest, spans stored and queryable per second (median of {reps}; "
        f"{SPANS_PER_REQUEST} spans per request, {CONNECTIONS} connections)",
        ["server", "spans/s", "stored", "sent", "server CPU us/span"],
        rows,
    )
    return {"samples": samples, "details": details}, table


def populate(db: Path, traces: int) -> None:
    """A store with ``traces`` traces of 5 spans, of 4 services, 1 in 50 failed, 1 in 100 blocked.

    The spans are stored as OTLP ingest stores them (each kept as its ``Span`` message).
    """
    from flowtracker._core.clock import format_rfc3339
    from flowtracker._wire.otlp import otlp_request_dict, span_records
    from flowtracker._wire.otlp_proto import request_message
    from flowtracker.serve.rows import POLICY
    from flowtracker.serve.store import Store

    async def fill() -> None:
        store = Store(str(db), max_traces=traces)
        store.open()
        try:
            base = 1_795_168_800_000_000_000
            for start in range(0, traces, 5_000):
                batch = []
                for number in range(start, min(start + 5_000, traces)):
                    at = base + number * 1_000_000
                    length = (5 + number % 300) * 1_000_000
                    by_service: dict[str, list[dict[str, Any]]] = {}
                    for index in range(5):
                        span: dict[str, Any] = {
                            "span_id": f"{number + 1:08x}{index + 1:08x}",
                            "name": f"GET /orders/{number % 97}" if index == 0 else f"step {index}",
                            "start_time": format_rfc3339(at + index * 1000), "duration_ms": length / 1e6,
                            "end_time": format_rfc3339(at + index * 1000 + length),
                            "status": "error" if index == 4 and number % 50 == 0 else "ok",
                        }  # fmt: skip
                        if index:
                            span["parent_id"] = f"{number + 1:08x}{1:08x}"
                        if index == 2 and number % 100 == 0:
                            span["events"] = [{"name": "event_loop.blocked", "time": span["start_time"]}]
                        by_service.setdefault(f"svc{index % 4}", []).append(span)
                    for service, spans in by_service.items():  # one record per service, as OTLP sends them
                        batch.append({"trace_id": f"{number + 1:032x}", "service": service, "spans": spans})
                await store.write(span_records(request_message(otlp_request_dict(batch)), POLICY).records)
        finally:
            store.close()

    asyncio.run(fill())


QUERIES = {
    "newest 100": "",
    "service": "?service=svc3",
    "name substring": "?name=orders/42",
    "status=error": "?status=error",
    "min_duration_ms": "?min_duration_ms=290",
    "blocked=true": "?blocked=true",
    "all five": "?service=svc1&name=orders&status=error&min_duration_ms=10&blocked=true",
    "no match": "?name=nothing-like-this",
}


def run_queries(settings: Settings) -> tuple[dict[str, Any], str]:
    traces = settings.scaled(100_000, 100_000, 2_000)
    rounds = settings.scaled(20, 10, 2)
    with tempfile.TemporaryDirectory(prefix="ft-serve-bench-") as directory:
        db = Path(directory) / "store.db"
        started = time.perf_counter()
        populate(db, traces)
        fill_seconds = time.perf_counter() - started
        server = FlowtrackerServer(Path(directory), traces, db)
        timings: dict[str, float] = {}
        counts: dict[str, int] = {}
        try:
            for label, query in QUERIES.items():
                url = f"http://127.0.0.1:{server.port}/api/traces{query}"
                samples = []
                for _ in range(rounds):
                    begin = time.perf_counter()
                    with urllib.request.urlopen(url, timeout=30) as response:
                        body = response.read()
                    samples.append((time.perf_counter() - begin) * 1000)
                timings[label] = median(samples)
                counts[label] = body.count(b'"trace_id"')
            page, page_table = page_timings(server.port, rounds)
        finally:
            server.stop()
    rows = [[label, f"{timings[label]:.1f}", counts[label]] for label in QUERIES]
    table = format_table(
        f"GET /api/traces with {traces:,} traces ({traces * 5:,} spans) stored: median ms of {rounds}",
        ["filter", "ms", "traces answered"],
        rows,
    )
    result = {"traces": traces, "ms": timings, "answered": counts, "fill_seconds": fill_seconds, "page": page}
    return result, table + "\n\n" + page_table


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_rss(settings: Settings) -> tuple[dict[str, Any], str]:
    """RSS of the server while 1,000,000 spans go to a store kept at 10,000 traces."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    total = settings.scaled(1_000_000, 200_000, 4_000)
    step = total // 10
    template = make_bodies(min(step, 50_000), seed=1)
    curve: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory(prefix="ft-serve-bench-") as directory:
        server = FlowtrackerServer(Path(directory), 10_000)
        try:
            curve.append((0, rss_mb(server.process.pid)))
            sent = 0
            round_number = 0
            while sent < total:
                round_number += 1
                bodies = []
                for body in template:  # the same spans under new trace ids: new traces each round
                    message = ExportTraceServiceRequest.FromString(body)
                    for resource in message.resource_spans:
                        for scope in resource.scope_spans:
                            for span in scope.spans:
                                span.trace_id = round_number.to_bytes(4, "big") + span.trace_id[4:]
                    bodies.append(message.SerializeToString())
                    sent += len(message.resource_spans[0].scope_spans[0].spans)
                    if sent % step < SPANS_PER_REQUEST or sent >= total:
                        asyncio.run(post_all(server.url, bodies))
                        bodies = []
                        curve.append((sent, rss_mb(server.process.pid)))
                    if sent >= total:
                        break
                if bodies:
                    asyncio.run(post_all(server.url, bodies))
            with contextlib.closing(sqlite3.connect(server.db)) as connection:
                kept = int(connection.execute("SELECT count(*) FROM traces").fetchone()[0])
        finally:
            server.stop()
    rows = [[f"{spans:,}", f"{mb:.0f}"] for spans, mb in curve]
    table = format_table(
        f"RSS of flowtracker serve --max-traces 10000 while {total:,} spans arrive "
        f"(traces kept at the end: {kept:,})",
        ["spans ingested", "RSS MB"],
        rows,
    )
    return {"curve": curve, "kept_traces": kept}, table


def run(settings: Settings) -> dict[str, Any]:
    phoenix = not settings.smoke  # CI's smoke run never installs Phoenix
    ingest, ingest_table = run_ingest(settings, phoenix)
    queries, query_table = run_queries(settings)
    rss, rss_table = run_rss(settings)
    return {
        "ingest": ingest,
        "queries": queries,
        "rss": rss,
        "tables": [ingest_table, query_table, rss_table],
    }
