"""Suite ``instrument``: the added cost per call of automatic spans, flowtracker vs. OpenTelemetry.

Two calls, each against a real peer in another process (so the clock, this
process's CPU time by default, counts the client only):

* ``httpx``: ``await AsyncClient.get("/")`` to the untraced aiohttp app of
  ``_servers`` (one keep-alive connection);
* ``redis``: ``await redis.asyncio.Redis.get("bench:key")`` to Debian's
  ``redis-server`` (started as the tests start it, ``tests/redis_server.py``).

Each tracer (``flowtracker``; ``otel``: ``opentelemetry-instrumentation-httpx``
/ ``-redis`` on the SDK, ``BatchSpanProcessor`` into a dropping exporter) runs
on one event loop and one client, in three modes:

* ``bare``: the call alone, nothing instrumented;
* ``root``: the call inside a root span of that tracer (``ft.span`` /
  ``start_as_current_span``), the library not instrumented;
* ``instrumented``: the same with the library instrumented (``ft.instrument``
  / the instrumentor's ``instrument(tracer_provider=...)``).

The modes alternate in small blocks (order rotated per block, the
instrumentation switched on and off between blocks, outside the clock), and
every traced block ends by flushing the tracer's pipeline, inside the clock:
the machine's drift hits every mode alike, and each mode pays for its own
export.
Every trace must arrive. Per call: the *added* cost of an instrumented call
(``instrumented`` − ``bare``: root and client span, exported) and the *client
span* alone (``instrumented`` − ``root``). Repetitions (9 by default) run each
tracer afresh, interleaved; the tables give medians, and the ratios
flowtracker / OpenTelemetry divide those medians.
Goal (issue 12): flowtracker's added cost at most 1/5 of OpenTelemetry's.

Example:
    python -m benchmarks instrument --quick
"""

from __future__ import annotations

import asyncio
import cProfile
import dataclasses
import importlib
import importlib.util
import pstats
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from . import _harness
from ._harness import Settings, format_table, interleaved, median, unavailable
from ._load import ROOT, peer
from ._sinks import DropExporter, otel_provider

__all__ = ("Peers", "Sample", "http_peer", "measure_once", "profile_flowtracker", "run", "run_workload")

TRACERS = ("flowtracker", "otel")
MODES = ("bare", "root", "instrumented")
WORKLOADS = ("httpx", "redis")
OTEL_PACKAGES = {
    "httpx": "opentelemetry.instrumentation.httpx",
    "redis": "opentelemetry.instrumentation.redis",
}
KEY = "bench:key"


@dataclasses.dataclass
class Sample:
    """One run of a tracer: clock nanoseconds per call in each mode, and the traces delivered."""

    ns_per_call: dict[str, float]
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
    with peer("benchmarks._servers", "aiohttp", "untraced") as port:
        yield f"http://127.0.0.1:{port}"


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


class _Tracer:
    """One tracer's root span, its switchable instrumentation, its flush and its delivery count."""

    def __init__(self, name: str, workload: str) -> None:
        self.name = name
        self.workload = workload
        self.on = False
        if name == "flowtracker":
            import flowtracker as ft

            self._ft = ft
            self.sink = DropExporter()
            self.tracker = ft.Tracker(exporters=[self.sink], service="bench")
            self.root: Callable[[str], AbstractContextManager[Any]] = ft.span
        else:
            self.provider, self.exporter = otel_provider()
            self.instrumentor = _otel_instrumentor(workload)
            self.root = self.provider.get_tracer("bench").start_as_current_span

    def instrument(self, on: bool) -> None:
        if on == self.on:
            return
        self.on = on
        if self.name == "flowtracker":
            if on:
                self._ft.instrument(self.workload)
            else:
                self._ft.uninstrument(self.workload)
        elif on:
            self.instrumentor.instrument(tracer_provider=self.provider)
        else:
            self.instrumentor.uninstrument()

    async def flush(self) -> None:
        if self.name == "flowtracker":
            await self.tracker.flush()
        else:
            self.provider.force_flush()

    def delivered(self) -> int:
        """What reached the exporter: flowtracker counts traces, OpenTelemetry spans."""
        if self.name == "flowtracker":
            return self.sink.traces
        return int(self.exporter.spans)

    async def start(self) -> None:
        if self.name == "flowtracker":
            await self.tracker.start()

    async def close(self) -> None:
        self.instrument(False)
        if self.name == "flowtracker":
            await self.tracker.aclose()
        else:
            self.provider.shutdown()


async def _run(tracer_name: str, workload: str, blocks: int, block: int, peers: Peers) -> Sample:
    call, close = await _client(workload, peers)
    tracer = _Tracer(tracer_name, workload)
    await tracer.start()
    clock = _harness.clock
    root = tracer.root
    spent = dict.fromkeys(MODES, 0)
    # What each mode's block delivers: flowtracker counts traces, OpenTelemetry spans.
    spans_per_call = 1 if tracer_name == "flowtracker" else 2
    per_block = {"bare": 0, "root": block, "instrumented": block * spans_per_call}
    try:

        async def run_block(mode: str) -> int:
            tracer.instrument(mode == "instrumented")
            start = clock()
            if mode == "bare":
                for _ in range(block):
                    await call()
            else:
                for _ in range(block):
                    with root("job"):
                        await call()
            if mode != "bare":  # nothing to deliver
                await tracer.flush()
            return clock() - start

        for mode in MODES:  # warm-up: connections, caches, first-call imports
            await run_block(mode)
        before = tracer.delivered()
        expected = 0
        for index in range(blocks):
            for mode in MODES[index % 3 :] + MODES[: index % 3]:
                spent[mode] += await run_block(mode)
                expected += per_block[mode]
        delivered = tracer.delivered() - before
    finally:
        await tracer.close()
        await close()
    calls = blocks * block
    return Sample({mode: spent[mode] / calls for mode in MODES}, delivered, expected)


def measure_once(tracer: str, workload: str, blocks: int, block: int, peers: Peers) -> Sample:
    """One run of ``tracer`` on ``workload``: ``blocks`` rounds of ``block`` calls per mode, fresh loop."""
    if tracer == "otel":
        importlib.import_module(OTEL_PACKAGES[workload])  # ImportError: reported as unavailable
    return asyncio.run(_run(tracer, workload, blocks, block, peers))


async def _profile_flowtracker(workload: str, peers: Peers, calls: int) -> pstats.Stats:
    call, close = await _client(workload, peers)
    tracer = _Tracer("flowtracker", workload)
    await tracer.start()
    tracer.instrument(True)
    profiler = cProfile.Profile()
    try:
        for index in range(calls // 10 + calls):  # a tenth first, unprofiled: connections, caches
            if index == calls // 10:
                profiler.enable()
            with tracer.root("job"):
                await call()
        await tracer.flush()
    finally:
        profiler.disable()
        tracer.instrument(False)
        await tracer.close()
        await close()
    return pstats.Stats(profiler)


def profile_flowtracker(workload: str, peers: Peers, calls: int) -> pstats.Stats:
    """cProfile of ``calls`` instrumented ``workload`` calls, each in a flowtracker root, exported:
    what the ``added`` column times (the ``profile`` suite shows its flowtracker lines)."""
    return asyncio.run(_profile_flowtracker(workload, peers, calls))


# -- the suite -------------------------------------------------------------------


def repetitions(settings: Settings) -> int:
    """9 by default (quick 3, smoke 1, or ``--reps``): the differences measured are a few
    µs on calls of 70-1000 µs, on a shared machine."""
    return settings.reps if settings.reps is not None else settings.scaled(9, 3, 1)


def _over(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator == denominator and denominator > 0 else float("nan")


def run_workload(
    settings: Settings, workload: str, peers: Peers, blocks: int, block: int
) -> tuple[dict[str, Any], str]:
    """Measures both tracers on one workload; its JSON entry and its table."""
    errors: dict[str, str] = {}
    raw: dict[str, list[Sample]] = {name: [] for name in TRACERS}

    def measure(name: str, rep: int) -> float:
        if name in errors:
            return float("nan")
        try:
            sample = measure_once(name, workload, blocks, block, peers)
        except ImportError as error:
            errors[name] = unavailable(error)
            return float("nan")
        raw[name].append(sample)
        return sample.ns_per_call["instrumented"]

    reps = repetitions(settings)
    interleaved(TRACERS, reps, measure)
    entry: dict[str, Any] = {
        "calls_per_mode_per_run": blocks * block,
        "block": block,
        "reps": reps,
        "clock": _harness.clock_name,
        "tracers": {},
    }
    rows: list[tuple[Any, ...]] = []
    for name in TRACERS:
        samples = raw[name]
        per_mode = {mode: [s.ns_per_call[mode] for s in samples] for mode in MODES}
        added = [s.ns_per_call["instrumented"] - s.ns_per_call["bare"] for s in samples]
        span = [s.ns_per_call["instrumented"] - s.ns_per_call["root"] for s in samples]
        delivered, expected = sum(s.delivered for s in samples), sum(s.expected for s in samples)
        entry["tracers"][name] = {
            "ns_per_call": per_mode,
            "added_ns_per_call": added,
            "client_span_ns_per_call": span,
            "median_added_ns": median(added),
            "median_client_span_ns": median(span),
            "delivered_share": delivered / expected if expected else None,
            "error": errors.get(name),
        }
        if name in errors:
            rows.append((name, errors[name], "", "", "", "", ""))
            continue
        rows.append(
            (
                name,
                *(median(per_mode[mode]) / 1000 for mode in MODES),
                median(added) / 1000,
                median(span) / 1000,
                f"{100 * delivered / expected:.1f}%" if expected else "n/a",
            )
        )
    ft, otel = entry["tracers"]["flowtracker"], entry["tracers"]["otel"]
    entry["flowtracker_over_otel_added"] = _over(ft["median_added_ns"], otel["median_added_ns"])
    entry["flowtracker_over_otel_client_span"] = _over(
        ft["median_client_span_ns"], otel["median_client_span_ns"]
    )
    table = format_table(
        f"instrument / {workload}: {_harness.clock_name} µs per call, {blocks} blocks of {block} calls "
        f"per mode, median of {reps} interleaved reps",
        ("tracer", "bare", "root", "instrumented", "added", "client span", "delivered"),
        rows,
    )
    return entry, table


def run(settings: Settings, workloads: tuple[str, ...] = WORKLOADS) -> dict[str, Any]:
    """Runs the suite; returns the JSON-ready result (tables included as Markdown)."""
    blocks = settings.scaled(12, 6, 2)
    # Blocks of ~0.1 s: the flush that ends each traced block weighs little per call.
    block = {"httpx": settings.scaled(100, 50, 10), "redis": settings.scaled(500, 200, 10)}
    results: dict[str, Any] = {"workloads": {}}
    tables: list[str] = []
    summary: list[tuple[Any, ...]] = []
    with http_peer() as http_url, redis_server_class()() as redis_server:
        peers = Peers(http_url, redis_server.port)
        for workload in workloads:
            entry, table = run_workload(settings, workload, peers, blocks, block[workload])
            results["workloads"][workload] = entry
            tables.append(table)
            ft, otel = entry["tracers"]["flowtracker"], entry["tracers"]["otel"]
            summary.append(
                (
                    workload,
                    median(ft["ns_per_call"]["bare"]) / 1000,
                    ft["median_added_ns"] / 1000,
                    otel["median_added_ns"] / 1000,
                    entry["flowtracker_over_otel_added"],
                    ft["median_client_span_ns"] / 1000,
                    otel["median_client_span_ns"] / 1000,
                    entry["flowtracker_over_otel_client_span"],
                )
            )
    results["tables"] = [
        format_table(
            f"instrument: summary ({_harness.clock_name} µs per call, medians; goal: ft / otel ≤ 0.20)",
            ("call", "bare", "ft added", "otel added", "ft / otel", "ft span", "otel span", "ft / otel span"),
            summary,
        ),
        *tables,
    ]
    return results
