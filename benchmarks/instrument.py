"""Suite ``instrument``: the added cost per call of automatic spans, flowtracker vs. OpenTelemetry.

Two calls, each against a real peer in another process (so the clock, this
process's CPU time by default, counts the client only):

* ``httpx``: ``await AsyncClient.get("/")`` to the untraced aiohttp app of
  ``_servers`` (one keep-alive connection);
* ``redis``: ``await redis.asyncio.Redis.get("bench:key")`` to Debian's
  ``redis-server`` (started as the tests start it, ``tests/redis_server.py``).

Variants, each call made the same way on a fresh event loop:

* ``none``: the bare call, nothing instrumented;
* ``ft-root`` / ``otel-root``: the call inside a root span of that tracer, the
  library not instrumented (what the root alone costs);
* ``flowtracker``: ``ft.instrument(lib)`` and the call inside ``ft.span``,
  into a ``Tracker`` whose exporter drops;
* ``otel``: ``opentelemetry-instrumentation-httpx`` / ``-redis`` on the SDK
  (``BatchSpanProcessor`` into a dropping exporter), the call inside
  ``start_as_current_span``.

Every variant's pipeline is flushed before the clock stops, and must deliver
every trace. Reported per call: the time, the *added* cost over ``none`` (a
whole trace: root plus client span, exported), and the *instrumentation*
cost over the tracer's own root-only run (the client span alone); the
ratios flowtracker / OpenTelemetry divide the medians of those differences
(a difference of two ~1 ms httpx calls is noisy enough to turn negative in
one repetition, which a median of per-repetition ratios would amplify; those
are kept in the JSON too).
Goal (issue 12): flowtracker's added cost at most 1/5 of OpenTelemetry's.

Example:
    python -m benchmarks instrument --quick
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from . import _harness
from ._harness import Settings, format_table, interleaved, median, ratios, unavailable
from ._load import ROOT, cpus, free_port, wait_ready
from ._sinks import DropExporter, otel_provider

__all__ = ("Peers", "Sample", "measure_once", "run", "run_workload")

VARIANTS = ("none", "ft-root", "flowtracker", "otel-root", "otel")
WORKLOADS = ("httpx", "redis")
OTEL_PACKAGES = {
    "httpx": "opentelemetry.instrumentation.httpx",
    "redis": "opentelemetry.instrumentation.redis",
}
KEY = "bench:key"


@dataclasses.dataclass
class Sample:
    """One timed run: wall and CPU nanoseconds for ``calls`` calls, and the traces delivered."""

    wall_ns: int
    cpu_ns: int
    calls: int
    delivered: int
    expected: int


@dataclasses.dataclass(frozen=True)
class Peers:
    """Where the calls go."""

    http_url: str
    redis_port: int


# -- the peers -----------------------------------------------------------------


@contextmanager
def http_peer() -> Iterator[str]:
    """The untraced aiohttp app of ``_servers`` in a subprocess (pinned away from this one)."""
    port = free_port()
    command = [sys.executable, "-m", "benchmarks._servers", "aiohttp", "untraced", str(port)]
    if shutil.which("taskset"):
        command = ["taskset", "-c", cpus()[0], *command]
    env = {**os.environ, "FLOWTRACKER_EXPORTERS": "none", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_ready(process, port)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def redis_server_class() -> Any:
    """``RedisServer`` from ``tests/redis_server.py``: one way to run Redis, for tests and benchmarks."""
    path = ROOT / "tests" / "redis_server.py"
    spec = importlib.util.spec_from_file_location("flowtracker_tests_redis_server", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RedisServer


# -- one run ---------------------------------------------------------------------


Call = Callable[[], Awaitable[Any]]
Flush = Callable[[], Awaitable[Any]]


async def _client(workload: str, peers: Peers) -> tuple[Call, Callable[[], Awaitable[None]]]:
    """The call to time, and how to close its client."""
    if workload == "httpx":
        import httpx

        http = httpx.AsyncClient(base_url=peers.http_url)

        async def get_page() -> Any:
            response = await http.get("/")
            assert response.status_code == 200
            return response

        return get_page, http.aclose
    import redis.asyncio

    store = redis.asyncio.Redis(host="127.0.0.1", port=peers.redis_port)
    await store.set(KEY, "value")
    return (lambda: store.get(KEY)), store.aclose


def _otel_instrumentor(workload: str) -> Any:
    if workload == "httpx":
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        return HTTPXClientInstrumentor()
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    return RedisInstrumentor()


async def _timed(body: Callable[[int], Awaitable[None]], n: int, flush: Flush) -> tuple[int, int]:
    """(wall, CPU) nanoseconds of ``body(n)`` and the flush that delivers what it traced."""
    cpu = time.process_time_ns()
    start = time.perf_counter_ns()
    await body(n)
    await flush()
    return time.perf_counter_ns() - start, time.process_time_ns() - cpu


async def _run(variant: str, workload: str, n: int, warmup: int, peers: Peers) -> Sample:
    call, close = await _client(workload, peers)
    try:
        if variant == "none":

            async def bare(count: int) -> None:
                for _ in range(count):
                    await call()

            async def nothing() -> None:
                pass

            await bare(warmup)
            wall, cpu = await _timed(bare, n, nothing)
            return Sample(wall, cpu, n, n, n)
        if variant in ("ft-root", "flowtracker"):
            return await _run_flowtracker(variant, workload, call, n, warmup)
        return await _run_otel(variant, workload, call, n, warmup)
    finally:
        await close()


async def _run_flowtracker(variant: str, workload: str, call: Call, n: int, warmup: int) -> Sample:
    import flowtracker as ft

    sink = DropExporter()
    span = ft.span
    if variant == "flowtracker":
        ft.instrument(workload)
    try:
        async with ft.Tracker(exporters=[sink], service="bench") as tracker:

            async def traced(count: int) -> None:
                for _ in range(count):
                    async with span("job"):
                        await call()

            await traced(warmup)
            await tracker.flush()
            before = sink.traces
            wall, cpu = await _timed(traced, n, tracker.flush)
            delivered = sink.traces - before
    finally:
        ft.uninstrument(workload)
    return Sample(wall, cpu, n, delivered, n)


async def _run_otel(variant: str, workload: str, call: Call, n: int, warmup: int) -> Sample:
    provider, exporter = otel_provider()
    instrumentor = _otel_instrumentor(workload) if variant == "otel" else None
    if instrumentor is not None:
        instrumentor.instrument(tracer_provider=provider)
    start = provider.get_tracer("bench").start_as_current_span
    spans_per_call = 2 if instrumentor is not None else 1

    async def flush() -> None:
        provider.force_flush()

    try:

        async def traced(count: int) -> None:
            for _ in range(count):
                with start("job"):
                    await call()

        await traced(warmup)
        await flush()
        before = exporter.spans
        wall, cpu = await _timed(traced, n, flush)
        delivered = (exporter.spans - before) // spans_per_call
    finally:
        if instrumentor is not None:
            instrumentor.uninstrument()
        provider.shutdown()
    return Sample(wall, cpu, n, delivered, n)


def measure_once(variant: str, workload: str, n: int, peers: Peers) -> Sample:
    """One timed run of ``n`` calls of ``workload`` under ``variant``, on a fresh loop."""
    if variant == "otel":
        importlib.import_module(OTEL_PACKAGES[workload])  # ImportError: reported as unavailable
    return asyncio.run(_run(variant, workload, n, max(20, n // 10), peers))


# -- the suite -------------------------------------------------------------------


def _per_call(sample: Sample) -> float:
    return (sample.cpu_ns if _harness.clock_name == "cpu" else sample.wall_ns) / sample.calls


def _over(values: dict[str, list[float]], name: str, reference: str) -> float:
    """median(values[name]) / median(values[reference])."""
    below = median(values.get(reference, []))
    return median(values.get(name, [])) / below if below == below and below > 0 else float("nan")


def _minus(values: dict[str, list[float]], name: str, base: str) -> list[float]:
    return [v - b for v, b in zip(values.get(name, []), values.get(base, []), strict=False)]


def run_workload(settings: Settings, workload: str, peers: Peers, n: int) -> tuple[dict[str, Any], str]:
    """Measures every variant of one workload; its JSON entry and its table."""
    errors: dict[str, str] = {}
    raw: dict[str, list[Sample]] = {name: [] for name in VARIANTS}

    def measure(name: str, rep: int) -> float:
        if name in errors:
            return float("nan")
        try:
            sample = measure_once(name, workload, n, peers)
        except ImportError as error:
            errors[name] = unavailable(error)
            return float("nan")
        raw[name].append(sample)
        return _per_call(sample)

    gross = interleaved(VARIANTS, settings.repetitions, measure)
    added = {name: _minus(gross, name, "none") for name in VARIANTS if name != "none"}
    own = {"flowtracker": _minus(gross, "flowtracker", "ft-root"), "otel": _minus(gross, "otel", "otel-root")}
    added_ratio = _over(added, "flowtracker", "otel")
    own_ratio = _over(own, "flowtracker", "otel")
    entry: dict[str, Any] = {"calls_per_run": n, "clock": _harness.clock_name, "variants": {}}
    rows: list[tuple[Any, ...]] = []
    for name in VARIANTS:
        samples = raw[name]
        delivered = sum(s.delivered for s in samples)
        expected = sum(s.expected for s in samples)
        entry["variants"][name] = {
            "ns_per_call": gross[name],
            "wall_ns_per_call": [s.wall_ns / s.calls for s in samples],
            "added_ns_per_call": added.get(name),
            "instrumentation_ns_per_call": own.get(name),
            "delivered_share": delivered / expected if expected else None,
            "error": errors.get(name),
        }
        if name in errors:
            rows.append((name, errors[name], "", "", ""))
            continue
        rows.append(
            (
                name,
                median(gross[name]) / 1000,
                median(added[name]) / 1000 if name in added else float("nan"),
                median(own[name]) / 1000 if name in own else float("nan"),
                f"{100 * delivered / expected:.1f}%" if expected else "n/a",
            )
        )
    entry["flowtracker_over_otel_added"] = added_ratio
    entry["flowtracker_over_otel_instrumentation"] = own_ratio
    entry["same_rep_ratios"] = {
        "added": ratios(added, "otel").get("flowtracker"),
        "instrumentation": ratios(own, "otel").get("flowtracker"),
    }
    table = format_table(
        f"instrument / {workload}: {_harness.clock_name} µs per call, {n} calls, "
        f"median of {settings.repetitions} interleaved reps",
        ("variant", "µs per call", "added vs none", "client span alone", "delivered"),
        rows,
    )
    return entry, table


def run(settings: Settings, workloads: tuple[str, ...] = WORKLOADS) -> dict[str, Any]:
    """Runs the suite; returns the JSON-ready result (tables included as Markdown)."""
    n = settings.scaled(3_000, 1_000, 50)
    results: dict[str, Any] = {"workloads": {}}
    tables: list[str] = []
    summary: list[tuple[Any, ...]] = []
    with http_peer() as http_url, redis_server_class()() as redis_server:
        peers = Peers(http_url, redis_server.port)
        for workload in workloads:
            entry, table = run_workload(settings, workload, peers, n)
            results["workloads"][workload] = entry
            tables.append(table)
            variants = entry["variants"]
            summary.append(
                (
                    workload,
                    median(variants["none"]["ns_per_call"]) / 1000,
                    median(variants["flowtracker"]["added_ns_per_call"] or []) / 1000,
                    median(variants["otel"]["added_ns_per_call"] or []) / 1000,
                    entry["flowtracker_over_otel_added"],
                    entry["flowtracker_over_otel_instrumentation"],
                )
            )
    results["tables"] = [
        format_table(
            f"instrument: summary ({_harness.clock_name} µs per call, medians; ratios of the medians; "
            "goal: ft / otel ≤ 0.20)",
            ("call", "bare", "ft added", "otel added", "ft / otel added", "ft / otel client span"),
            summary,
        ),
        *tables,
    ]
    return results
