"""Suite ``profile``: where flowtracker's time goes, next to the floor's.

* **Span path**: cProfile over the ``span`` suite's ``async`` workload (root +
  child + one tag, to a dropping exporter), flowtracker and the floor; the
  functions with the most own time, as calls and microseconds *per trace*.
  cProfile adds a fixed cost to every Python call, so read the call counts
  first: each extra Python-level call on the path costs ~40-80 ns unprofiled.
* **Wire encoding**: cProfile over ``Trace.to_json()`` of 5-span traces.
* **Request path**: cProfile inside the aiohttp server (``flowtracker``
  variant, i.e. ``flowtracker.aiohttp.setup``) under wrk; per request. And in
  process (``_inproc``, aiohttp and ASGI): the functions where ``setup()`` /
  ``FlowTrackerMiddleware`` spend more own time per request than ``ft-core``
  (the core alone), with both call counts and the GC off: where the
  integration's cost is.
* **Instrumented call**: cProfile over instrumented httpx calls, each in a
  root span (the ``instrument`` suite's *added* cost); flowtracker's lines
  per call.
* **Primitives**: what the building blocks cost here (``timeit``, best of 5),
  to price each extra operation flowtracker does compared with the floor.

Example:
    python -m benchmarks profile --quick
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import cProfile
import gc
import itertools
import pstats
import random
import shutil
import tempfile
import threading
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import floor as floor_module
from . import span as span_suite
from ._harness import Settings, format_table
from ._load import ROOT
from ._sinks import DropExporter
from .instrument import Peers, http_peer, profile_flowtracker


def _label(key: tuple[str, int, str]) -> str:
    filename, line, name = key
    if filename == "~":
        return name
    for marker in ("site-packages/", f"{ROOT}/", "lib/python3"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            break
    return f"{filename}:{line} {name}"


def top_rows(
    stats: pstats.Stats, units: int, limit: int, keep: Callable[[str], bool] = lambda label: True
) -> list[tuple[str, float, float, float]]:
    """(function, calls per unit, own us per unit, cumulative us per unit), most own time first."""
    rows = []
    for key, (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        label = _label(key)
        if keep(label):
            rows.append((label, calls / units, own / units * 1e6, cumulative / units * 1e6))
    rows.sort(key=lambda row: row[2], reverse=True)
    return rows[:limit]


# -- span path -------------------------------------------------------------------


async def _profile_span_path(tracer: str, n: int) -> pstats.Stats:
    profiler = cProfile.Profile()
    if tracer == "flowtracker":
        import flowtracker as ft

        sink = DropExporter()
        async with ft.Tracker(exporters=[sink], service="bench") as tracker:
            body = span_suite._ft_bodies()["async"]
            await body(1000)
            await tracker.flush()
            profiler.enable()
            await body(n)
            await tracker.flush()
            profiler.disable()
    else:
        async with floor_module.FloorTracer() as floor_tracer:
            body = span_suite._floor_bodies(floor_tracer)["async"]
            await body(1000)
            await floor_tracer.drain(1000)
            profiler.enable()
            await body(n)
            await floor_tracer.drain(1000 + n)
            profiler.disable()
    return pstats.Stats(profiler)


# -- wire encoding ---------------------------------------------------------------


def _profile_encoding(n: int) -> pstats.Stats:
    from .pipeline import _records

    records = asyncio.run(_records(n))
    profiler = cProfile.Profile()
    profiler.enable()
    for record in records:
        record.to_json()
    profiler.disable()
    return pstats.Stats(profiler)


# -- request path ----------------------------------------------------------------


def _profile_request(variant: str, seconds: int) -> tuple[pstats.Stats, int] | str:
    from ._load import WRK, run_server_load

    if not shutil.which(WRK):
        return "wrk is not installed"
    with tempfile.TemporaryDirectory(prefix="ft-profile-") as tmp:
        path = Path(tmp) / "server.prof"
        try:
            outcome = run_server_load(
                "aiohttp", variant, seconds=seconds, warmup=0, connections=50, profile=path
            )
        except RuntimeError as error:
            return str(error)[:300]
        return pstats.Stats(str(path)), outcome.requests


def profile_diff(
    kind: str, variant: str, reference: str, requests: int, limit: int
) -> tuple[list[tuple[Any, ...]], dict[str, float]]:
    """Per request, the functions whose own time differs most between ``variant`` and ``reference``.

    Both are served in process (``_inproc``) side by side, in 10 shuffled
    rounds of ``requests / 10``, each under its own profiler (on during its
    blocks only): both profiles see the same machine. The cyclic GC is off
    meanwhile: cProfile charges a collection to whichever allocation crossed
    the threshold (both variants run as many young collections: ``inproc``'s
    column), which would put the GC's time on one line of one variant.

    Rows: (function, calls in variant, calls in reference, own us in variant,
    own us in reference, own us difference), largest difference first.
    """
    from ._inproc import run_rounds

    profilers = {variant: cProfile.Profile(), reference: cProfile.Profile()}
    block = max(1, requests // 10)
    warmup = min(1000, requests)
    names = list(profilers)
    gc.disable()
    try:
        run_rounds(kind, names, block=block, rounds=10, warmup=warmup, connections=50, profilers=profilers)
    finally:
        gc.enable()
    requests = block * 10
    profiles = {name: pstats.Stats(profiler) for name, profiler in profilers.items()}
    tables = {
        name: {row[0]: row for row in top_rows(stats, requests, 100_000)} for name, stats in profiles.items()
    }
    rows = []
    for label in set(tables[variant]) | set(tables[reference]):
        mine = tables[variant].get(label, (label, 0.0, 0.0, 0.0))
        theirs = tables[reference].get(label, (label, 0.0, 0.0, 0.0))
        rows.append((label, mine[1], theirs[1], mine[2], theirs[2], mine[2] - theirs[2]))
    rows.sort(key=lambda row: row[5], reverse=True)
    totals = {name: sum(row[2] for row in table.values()) for name, table in tables.items()}
    return rows[:limit], totals


# -- primitives --------------------------------------------------------------------


def primitives(number: int) -> list[tuple[str, float]]:
    """ns per operation of the building blocks (best of 5 runs of ``number``)."""
    var: contextvars.ContextVar[object] = contextvars.ContextVar("bench", default=None)

    class Four:
        __slots__ = ("a", "b", "c", "d")

        def __init__(self) -> None:
            self.a = self.b = self.c = self.d = None

    class Twelve:
        __slots__ = tuple("abcdefghijkl")

        def __init__(self) -> None:
            self.a = self.b = self.c = self.d = self.e = self.f = None
            self.g = self.h = self.i = self.j = self.k = self.l = None

    class AsyncCM:
        async def __aenter__(self) -> AsyncCM:
            return self

        async def __aexit__(self, *exc: object) -> None:
            pass

    class SyncCM:
        def __enter__(self) -> SyncCM:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    def noop() -> None:
        pass

    async def async_with(count: int) -> None:
        cm = AsyncCM()
        for _ in range(count):
            async with cm:
                pass

    def loop_cost(stmt: Callable[[int], Any]) -> float:
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter_ns()
            stmt(number)
            best = min(best, (time.perf_counter_ns() - start) / number)
        return best

    def run_async_with(count: int) -> None:
        with contextlib.suppress(StopIteration):
            async_with(count).send(None)

    def with_empty() -> None:
        with sync_cm:
            pass

    def stream_pair() -> None:
        send.send_nowait(1)
        receive.receive_nowait()

    bits = random.getrandbits
    value = bits(128)
    sync_cm = SyncCM()
    loop = asyncio.new_event_loop()
    import anyio

    send, receive = anyio.create_memory_object_stream[object](number + 1)
    cases: list[tuple[str, Any]] = [
        ("empty statement (timer floor)", "pass"),
        ("Python function call", noop),
        ("time.monotonic_ns()", time.monotonic_ns),
        ("time.time_ns()", time.time_ns),
        ("random.getrandbits(64)", lambda: bits(64)),
        ("random.getrandbits(128)", lambda: bits(128)),
        ("ContextVar.set + reset", lambda: var.reset(var.set(1))),
        ("ContextVar.get", var.get),
        ("slotted object, 4 attributes", Four),
        ("slotted object, 12 attributes", Twelve),
        ("with (empty sync context manager)", with_empty),
        ("itertools.count(1)", lambda: itertools.count(1)),
        ("threading.get_ident()", threading.get_ident),
        ("f'{id:032x}' (128-bit hex)", lambda: f"{value:032x}"),
        ("set.add + set.discard", lambda s=set(): (s.add(1), s.discard(1))),
        ("import statement inside a function", lambda: __import__("flowtracker.propagation", fromlist=["x"])),
        ("loop.call_soon (scheduling only)", lambda: loop.call_soon(noop)),
        ("anyio send_nowait + receive_nowait", stream_pair),
    ]
    out = []
    for label, stmt in cases:
        seconds = min(timeit.repeat(stmt, repeat=5, number=number))
        out.append((label, seconds / number * 1e9))
    out.append(("async with (empty async context manager)", loop_cost(run_async_with)))
    send.close()
    receive.close()
    loop.close()
    return out


# -- the suite ---------------------------------------------------------------------


def run(settings: Settings) -> dict[str, Any]:
    """Runs the suite; returns the JSON-ready result."""
    n = settings.scaled(50_000, 20_000, 500)
    limit = 15 if settings.smoke else 22
    result: dict[str, Any] = {}
    tables = []
    for tracer in ("flowtracker", "floor"):
        stats = asyncio.run(_profile_span_path(tracer, n))
        rows = top_rows(stats, n, limit)
        total = sum(row[2] for row in top_rows(stats, n, 10_000))
        result[f"span_path_{tracer}"] = {"rows": rows, "profiled_us_per_trace": total}
        tables.append(
            format_table(
                f"profile / span path, {tracer}: per trace (root + child + tag), cProfile, "
                f"{total:.2f} us/trace profiled in total",
                ("function", "calls", "own us", "cumulative us"),
                rows,
            )
        )
    encode_n = settings.scaled(5_000, 2_000, 100)
    stats = _profile_encoding(encode_n)
    rows = top_rows(stats, encode_n, 14)
    result["encoding"] = {"rows": rows}
    tables.append(
        format_table(
            "profile / wire encoding: Trace.to_json() per trace of 5 spans, cProfile",
            ("function", "calls", "own us", "cumulative us"),
            rows,
        )
    )
    seconds = settings.scaled(4, 2, 1)
    for variant in ("flowtracker",) if settings.smoke else ("flowtracker", "ft-core"):
        outcome = _profile_request(variant, seconds)
        if isinstance(outcome, str):
            tables.append(f"### profile / request path ({variant})\n\n{outcome}\n")
            result[f"request_{variant}"] = {"error": outcome}
            continue
        stats, requests = outcome
        units = max(1, requests)
        rows = top_rows(stats, units, limit, keep=lambda label: "flowtracker" in label or "_servers" in label)
        everything = top_rows(stats, units, 10_000)
        ours = sum(row[2] for row in everything if "flowtracker/" in row[0])
        total = sum(row[2] for row in everything)
        result[f"request_{variant}"] = {
            "rows": rows,
            "requests": requests,
            "flowtracker_us": ours,
            "total_us": total,
        }
        tables.append(
            format_table(
                f"profile / request path, aiohttp {variant}: per request, flowtracker's own functions "
                f"({ours:.1f} of {total:.1f} us profiled per request)",
                ("function", "calls", "own us", "cumulative us"),
                rows,
            )
        )
    requests = settings.scaled(20_000, 5_000, 100)
    for kind, variant in (("aiohttp", "flowtracker"), ("asgi", "flowtracker")):
        diff, totals = profile_diff(kind, variant, "ft-core", requests, limit)
        result[f"inproc_{kind}_{variant}_vs_ft_core"] = {"rows": diff, "profiled_us_per_request": totals}
        tables.append(
            format_table(
                f"profile / request path in process ({kind}): where `{variant}` spends more than "
                f"`ft-core`, per request, cProfile ({totals[variant]:.1f} vs {totals['ft-core']:.1f} us "
                "profiled per request)",
                ("function", "calls", "calls ft-core", "own us", "own us ft-core", "extra us"),
                diff,
            )
        )
    calls = settings.scaled(3_000, 1_000, 50)
    with http_peer() as http_url:
        stats = profile_flowtracker("httpx", Peers(http_url, 0), calls)
    rows = top_rows(stats, calls, limit, keep=lambda label: "flowtracker/" in label)
    result["instrumented_httpx"] = {"rows": rows, "calls": calls}
    tables.append(
        format_table(
            "profile / an instrumented httpx call in a root (the `instrument` suite's added cost): "
            "flowtracker's functions, per call, cProfile",
            ("function", "calls", "own us", "cumulative us"),
            rows,
        )
    )
    costs = primitives(settings.scaled(200_000, 100_000, 2_000))
    result["primitives_ns"] = dict(costs)
    tables.append(
        format_table("profile / primitives: ns per operation (best of 5)", ("operation", "ns"), costs)
    )
    result["tables"] = tables
    return result
