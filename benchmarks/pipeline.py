"""Suite ``pipeline``: traces per second through the tracker, and the exporters' own cost.

* **Sustained**: one coroutine produces traces of 5 spans (a root and 4
  children, one tag each) as fast as it can, yielding to the loop every 64
  traces; the clock stops when the last one was exported. Everything (spans,
  assembly, lanes, export) runs on one loop on one pinned CPU. Into a dropping
  exporter, into ``FileExporter`` (a temporary file), and the floor tracer
  (dropping) for reference.
* **Export only**: finished ``Trace`` records (made beforehand, not timed) go
  through ``to_dict()`` (the wire dict), ``to_json()`` (dict + orjson), and
  ``FileExporter.export()`` in batches of 512 (encode + one ``write`` per batch
  in a worker thread). Reported as microseconds per trace and the rate
  that implies.

Target (issue 6): export keeps up with >= 50,000 traces/s of 5 spans on one core.

Example:
    python -m benchmarks pipeline --quick
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import floor as floor_module
from ._harness import Settings, clock, format_table, interleaved, median, ratios
from ._sinks import DropExporter

SPANS = 5
YIELD_MASK = 63
BATCH = 512


class _Collect:
    """Keeps the Trace records it receives, untouched (nothing encoded)."""

    name = "collect"

    def __init__(self) -> None:
        self.records: list[Any] = []

    async def export(self, traces: Sequence[Any]) -> None:
        self.records.extend(traces)

    async def aclose(self) -> None:
        pass


async def _produce_ft(n: int) -> None:
    import flowtracker as ft

    span = ft.span
    sleep = asyncio.sleep
    for i in range(n):
        async with span("GET /orders/{id}", order=i):
            for step in ("auth", "load", "price", "render"):
                async with span(step) as child:
                    child.set_tag("rows", 3)
        if not i & YIELD_MASK:
            await sleep(0)


async def _sustained_ft(exporter: Any, n: int) -> tuple[float, int]:
    import flowtracker as ft

    async with ft.Tracker(exporters=[exporter], service="bench") as tracker:
        await _produce_ft(max(16, n // 10))
        await tracker.flush()
        before = tracker.stats.traces_completed
        dropped = tracker.stats.traces_dropped
        start = clock()
        await _produce_ft(n)
        await tracker.flush()
        wall = clock() - start
        stats = tracker.stats
        if stats.traces_completed - before != n:
            raise RuntimeError(f"completed {stats.traces_completed - before} of {n} traces")
        return wall, stats.traces_dropped - dropped


async def _sustained_floor(n: int) -> tuple[float, int]:
    async with floor_module.FloorTracer() as tracer:
        span = tracer.span
        sleep = asyncio.sleep

        async def produce(count: int) -> None:
            for i in range(count):
                async with span("GET /orders/{id}", order=i):
                    for step in ("auth", "load", "price", "render"):
                        async with span(step) as child:
                            child.set_tag("rows", 3)
                if not i & YIELD_MASK:
                    await sleep(0)

        warm = max(16, n // 10)
        await produce(warm)
        await tracer.drain(warm)
        start = clock()
        await produce(n)
        await tracer.drain(warm + n)
        return clock() - start, tracer.dropped


def sustained(variant: str, n: int, directory: Path) -> tuple[float, int]:
    """Traces/s of one run of ``variant`` (and how many traces it dropped)."""
    if variant == "floor":
        wall, dropped = asyncio.run(_sustained_floor(n))
    elif variant == "flowtracker -> drop":
        wall, dropped = asyncio.run(_sustained_ft(DropExporter(), n))
    else:
        import flowtracker as ft

        path = directory / "traces.jsonl"
        path.unlink(missing_ok=True)
        wall, dropped = asyncio.run(_sustained_ft(ft.FileExporter(path), n))
    return n / (wall / 1e9), dropped


async def _records(n: int) -> list[Any]:
    import flowtracker as ft

    collect = _Collect()
    async with ft.Tracker(exporters=[collect], service="bench", max_queue=n + 1) as tracker:
        await _produce_ft(n)
        await tracker.flush()
    return collect.records


def export_cost(variant: str, n: int, directory: Path) -> float:
    """Nanoseconds per trace of one export-only operation over ``n`` fresh records."""
    records = asyncio.run(_records(n))
    if variant == "to_dict":
        start = clock()
        for record in records:
            record.to_dict()
        return (clock() - start) / len(records)
    if variant == "to_json":
        start = clock()
        for record in records:
            record.to_json()
        return (clock() - start) / len(records)

    import flowtracker as ft

    async def write() -> float:
        path = directory / "export.jsonl"
        path.unlink(missing_ok=True)
        exporter = ft.FileExporter(path)
        await exporter.export(records[:1])  # opens the file: not part of the per-trace cost
        rest = records[1:]
        start = clock()
        for index in range(0, len(rest), BATCH):
            await exporter.export(rest[index : index + BATCH])
        elapsed = clock() - start
        await exporter.aclose()
        return elapsed / len(rest)

    return asyncio.run(write())


def run(settings: Settings) -> dict[str, Any]:
    """Runs the suite; returns the JSON-ready result."""
    n = settings.scaled(50_000, 10_000, 300)
    reps = settings.repetitions
    result: dict[str, Any] = {"traces_per_run": n, "spans_per_trace": SPANS}
    with tempfile.TemporaryDirectory(prefix="ft-bench-") as tmp:
        directory = Path(tmp)
        dropped: dict[str, int] = {}

        def measure_sustained(variant: str, rep: int) -> float:
            rate, lost = sustained(variant, n, directory)
            dropped[variant] = dropped.get(variant, 0) + lost
            return rate

        variants = ("floor", "flowtracker -> drop", "flowtracker -> FileExporter")
        rates = interleaved(variants, reps, measure_sustained)
        vs_floor = ratios(rates, "floor")
        costs = interleaved(
            ("to_dict", "to_json", "FileExporter.export"), reps, lambda v, r: export_cost(v, n, directory)
        )
    result["sustained"] = {
        v: {
            "traces_per_s": rates[v],
            "median": median(rates[v]),
            "vs_floor": vs_floor[v],
            "dropped": dropped[v],
        }
        for v in variants
    }
    result["export_only"] = {v: {"ns_per_trace": c, "median": median(c)} for v, c in costs.items()}
    rows = [
        (
            v,
            median(rates[v]),
            median(rates[v]) * SPANS,
            vs_floor[v],
            dropped[v],
            "yes" if median(rates[v]) >= 50_000 else "no",
        )
        for v in variants
    ]
    table1 = format_table(
        f"pipeline / sustained: traces of {SPANS} spans per second, produced and exported on one core "
        f"(median of {reps})",
        ("pipeline", "traces/s", "spans/s", "x floor", "dropped", ">= 50k/s"),
        rows,
    )
    rows2 = [(v, median(c) / 1000, 1e9 / median(c)) for v, c in costs.items()]
    table2 = format_table(
        f"pipeline / export only: cost per trace of {SPANS} spans (median of {reps})",
        ("operation", "us / trace", "traces/s it allows"),
        rows2,
    )
    result["tables"] = [table1, table2]
    return result
