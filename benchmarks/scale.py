"""Suite ``scale``: does the per-span cost stay flat, and memory stay bounded?

* **Spans per trace**: a root with 0 to 9,999 children (sequential
  ``async with``, one tag each); ns per span, flowtracker and the floor.
* **Open traces**: 1 to 10,000 tasks, each inside its own root span, taking
  turns (``await asyncio.sleep(0)``) to open a child span; ns per span net of
  the same tasks without spans.
* **Memory per open span**: ``tracemalloc`` bytes per span left open (one tag).
* **Overload**: a subprocess offers 1,000,000 traces (root + child) to a
  tracker whose only exporter hangs; its RSS, sampled as it goes, must stop
  growing once the lane is full (``max_queue`` traces + one batch in flight).
* **GC and p99**: the aiohttp app under wrk with the cyclic GC on and off
  (flowtracker, the floor, and a floor that leaves span<->trace reference
  cycles to the collector), with collections counted by ``gc.callbacks``.

Target (issue 6): per-span cost flat within 20% from 1 to 10,000.

Example:
    python -m benchmarks scale --quick
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
from typing import Any

from . import floor as floor_module
from ._harness import Settings, clock, format_table, interleaved, median
from ._load import ROOT, run_server_load
from ._sinks import DropExporter, StalledExporter

# -- spans per trace ---------------------------------------------------------


async def _per_trace_ft(width: int, total: int) -> float:
    import flowtracker as ft

    span = ft.span
    traces = max(1, total // width)
    every = max(1, 64 // width)  # yield to the loop about every 64 spans
    async with ft.Tracker(exporters=[DropExporter()], service="bench") as tracker:

        async def body(count: int) -> None:
            for index in range(count):
                async with span("root"):
                    for _ in range(width - 1):
                        async with span("child") as child:
                            child.set_tag("rows", 3)
                if not index % every:
                    await asyncio.sleep(0)

        await body(1)
        await tracker.flush()
        start = clock()
        await body(traces)
        await tracker.flush()
        return (clock() - start) / (traces * width)


async def _per_trace_floor(width: int, total: int) -> float:
    traces = max(1, total // width)
    every = max(1, 64 // width)  # yield to the loop about every 64 spans
    async with floor_module.FloorTracer() as tracer:
        span = tracer.span

        async def body(count: int) -> None:
            for index in range(count):
                async with span("root"):
                    for _ in range(width - 1):
                        async with span("child") as child:
                            child.set_tag("rows", 3)
                if not index % every:
                    await asyncio.sleep(0)

        await body(1)
        await tracer.drain(1)
        start = clock()
        await body(traces)
        await tracer.drain(1 + traces)
        return (clock() - start) / (traces * width)


# -- open traces -------------------------------------------------------------


async def _open_traces(tracer: str, tasks: int, total: int) -> tuple[int, int]:
    """(wall ns, spans) for ``tasks`` concurrent traces taking turns to open children."""
    rounds = max(2, total // tasks)
    sleep = asyncio.sleep

    if tracer == "flowtracker":
        import flowtracker as ft

        span: Any = ft.span
        context: Any = ft.Tracker(exporters=[DropExporter()], service="bench")
    elif tracer == "floor":
        context = floor_module.FloorTracer(max_queue=tasks + 16)
        span = context.span
    else:
        span = None
        context = floor_module.FloorTracer()

    async def traced_worker() -> None:
        async with span("root"):
            for _ in range(rounds):
                async with span("child") as child:
                    child.set_tag("rows", 3)
                await sleep(0)

    async def bare_worker() -> None:
        for _ in range(rounds):
            await sleep(0)

    worker = bare_worker if span is None else traced_worker
    async with context:
        start = clock()
        await asyncio.gather(*(worker() for _ in range(tasks)))
        if tracer == "flowtracker":
            await context.flush()
        elif tracer == "floor":
            await context.drain(tasks)
        wall = clock() - start
    return wall, tasks * (rounds + 1)


# -- memory per open span ------------------------------------------------------


def _open_span_bytes(tracer: str, count: int) -> float:
    """tracemalloc bytes per span left open (entered, never exited), one tag each."""

    async def main() -> float:
        if tracer == "flowtracker":
            import flowtracker as ft

            context: Any = ft.Tracker(
                exporters=[DropExporter()], service="bench", max_spans_per_trace=count + 1
            )
            span: Any = ft.span
        else:
            context = floor_module.FloorTracer()
            span = context.span
        async with context:

            def open_many() -> tuple[int, list[Any]]:
                root = span("root")
                root.__enter__()
                keep = [root]
                gc.collect()
                before = tracemalloc.get_traced_memory()[0]
                for _ in range(count):
                    child = span("child", rows=3)
                    child.__enter__()  # becomes current: the next one is its child
                    keep.append(child)
                return tracemalloc.get_traced_memory()[0] - before, keep

            def close_all(keep: list[Any]) -> None:
                for opened in reversed(keep):
                    opened.__exit__(None, None, None)

            # In a context of their own: the chain of current spans stays there.
            context_copy = contextvars.copy_context()
            tracemalloc.start()
            try:
                grown, keep = context_copy.run(open_many)
            finally:
                tracemalloc.stop()
            # The list that keeps them alive is not the spans' cost.
            list_bytes = sys.getsizeof(keep)
            context_copy.run(close_all, keep)
            return (grown - list_bytes) / count

    return asyncio.run(main())


# -- overload ----------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _overload(total: int, max_queue: int) -> dict[str, Any]:
    import flowtracker as ft

    stalled = StalledExporter()
    tracker = ft.Tracker(exporters=[stalled], service="bench", max_queue=max_queue, close_timeout=5)
    span = ft.span
    samples = []
    async with tracker:
        gc.collect()
        start_rss = _rss_bytes()
        step = max(1, total // 20)
        started = time.perf_counter()
        for i in range(total):
            async with span("root"), span("child") as child:
                child.set_tag("rows", 3)
            if not i & 63:
                await asyncio.sleep(0)
            if (i + 1) % step == 0:
                samples.append((i + 1, _rss_bytes()))
        elapsed = time.perf_counter() - started
        await asyncio.sleep(0.05)
        stats = tracker.stats
        stalled.release()
    lane = dict(stats.exporters)["stalled"]
    return {
        "offered": total,
        "seconds": elapsed,
        "rss_start": start_rss,
        "samples": samples,
        "traces_completed": stats.traces_completed,
        "traces_dropped": stats.traces_dropped,
        "lane_queued": lane.queued,
        "lane_dropped": lane.dropped,
        "max_queue": max_queue,
    }


def overload_subprocess(total: int, max_queue: int = 8192) -> dict[str, Any]:
    """Runs the overload in a fresh interpreter (clean RSS); its JSON result."""
    env = {**os.environ, "FLOWTRACKER_EXPORTERS": "none", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", "overload", str(total), str(max_queue)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip()[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# -- the suite ---------------------------------------------------------------


def run(settings: Settings) -> dict[str, Any]:
    """Runs the suite; returns the JSON-ready result."""
    reps = settings.repetitions
    result: dict[str, Any] = {}
    tables = []

    # Spans per trace.
    total = settings.scaled(20_000, 10_000, 300)
    widths = (1, 10, 100, 1_000, 10_000) if not settings.smoke else (1, 10, 100)
    variants = [f"{tracer}@{width}" for width in widths for tracer in ("floor", "flowtracker")]

    def per_trace(variant: str, rep: int) -> float:
        tracer, width = variant.split("@")
        runner = _per_trace_ft if tracer == "flowtracker" else _per_trace_floor
        return asyncio.run(runner(int(width), max(total, int(width))))

    samples = interleaved(variants, reps, per_trace)
    rows = []
    for width in widths:
        ft_ns = median(samples[f"flowtracker@{width}"])
        floor_ns = median(samples[f"floor@{width}"])
        rows.append((width, floor_ns, ft_ns, ft_ns / floor_ns))
    ft_values = [median(samples[f"flowtracker@{w}"]) for w in widths]
    spread = max(ft_values) / min(ft_values)
    result["spans_per_trace"] = {"samples": samples, "flowtracker_max_over_min": spread}
    tables.append(
        format_table(
            f"scale / spans per trace: ns per span (median of {reps}); flowtracker max/min = {spread:.2f}",
            ("spans per trace", "floor ns", "flowtracker ns", "x floor"),
            rows,
        )
    )

    # Concurrent open traces.
    total = settings.scaled(40_000, 10_000, 300)
    counts = (1, 10, 100, 1_000, 10_000) if not settings.smoke else (1, 10, 100)
    variants = [f"{tracer}@{count}" for count in counts for tracer in ("none", "floor", "flowtracker")]
    spans_of: dict[str, int] = {}

    def open_traces(variant: str, rep: int) -> float:
        tracer, count = variant.split("@")
        wall, spans = asyncio.run(_open_traces(tracer, int(count), total))
        spans_of[variant] = spans
        return wall

    walls = interleaved(variants, reps, open_traces)
    rows = []
    ft_net = []
    open_result = {}
    for count in counts:
        base = walls[f"none@{count}"]
        net = {}
        for tracer in ("floor", "flowtracker"):
            key = f"{tracer}@{count}"
            net[tracer] = median([(w - b) / spans_of[key] for w, b in zip(walls[key], base, strict=False)])
        ft_net.append(net["flowtracker"])
        open_result[count] = net
        rows.append((count, net["floor"], net["flowtracker"], net["flowtracker"] / net["floor"]))
    spread = max(ft_net) / min(ft_net)
    result["open_traces"] = {"net_ns_per_span": open_result, "flowtracker_max_over_min": spread}
    tables.append(
        format_table(
            f"scale / concurrent open traces: ns per span net of the bare tasks (median of {reps}); "
            f"flowtracker max/min = {spread:.2f}",
            ("open traces", "floor ns", "flowtracker ns", "x floor"),
            rows,
        )
    )

    # Memory per open span.
    count = settings.scaled(10_000, 10_000, 500)
    memory = {
        tracer: median([_open_span_bytes(tracer, count) for _ in range(min(reps, 3))])
        for tracer in ("floor", "flowtracker")
    }
    result["bytes_per_open_span"] = memory
    tables.append(
        format_table(
            f"scale / memory per open span (tracemalloc, {count:,} spans open, one tag each)",
            ("tracer", "bytes per open span"),
            [(tracer, value) for tracer, value in memory.items()],
        )
    )

    # Overload.
    offered = settings.scaled(1_000_000, 200_000, 20_000)
    overload = overload_subprocess(offered)
    samples_rss = overload["samples"]
    quarter = samples_rss[len(samples_rss) // 4][1] if samples_rss else 0
    peak = max((rss for _, rss in samples_rss), default=0)
    final = samples_rss[-1][1] if samples_rss else 0
    overload["rss_growth_after_first_quarter"] = final - quarter
    result["overload"] = overload
    mib = 1 / (1 << 20)
    tables.append(
        format_table(
            f"scale / overload: {offered:,} traces offered to a stalled exporter "
            f"(max_queue {overload['max_queue']:,})",
            (
                "RSS start MiB",
                "RSS at 25% MiB",
                "RSS peak MiB",
                "RSS end MiB",
                "growth after 25%",
                "completed",
                "dropped",
                "queued",
            ),
            [
                (
                    overload["rss_start"] * mib,
                    quarter * mib,
                    peak * mib,
                    final * mib,
                    f"{(final - quarter) * mib:.1f} MiB",
                    overload["traces_completed"],
                    overload["traces_dropped"],
                    overload["lane_queued"],
                )
            ],
        )
    )

    # GC and request p99.
    tables.append(_gc_table(settings, result))
    result["tables"] = tables
    return result


GC_VARIANTS = (
    ("untraced", False),
    ("flowtracker", False),
    ("flowtracker", True),
    ("ft-core", False),
    ("floor", False),
    ("floor", True),
    ("floor-cyclic", False),
)


def _gc_table(settings: Settings, result: dict[str, Any]) -> str:
    import shutil

    from ._load import WRK

    if not shutil.which(WRK):
        result["gc"] = {"error": "wrk is not installed"}
        return "### scale / GC\n\nwrk is not installed\n"
    seconds = settings.scaled(5, 2, 1)
    reps = settings.reps or settings.scaled(3, 1, 1)
    names = [f"{variant} gc={'off' if off else 'on'}" for variant, off in GC_VARIANTS]
    runs: dict[str, list[Any]] = {name: [] for name in names}
    errors: dict[str, str] = {}
    if settings.smoke:
        names = names[1:3]

    def measure(name: str, rep: int) -> float:
        variant, flag = name.split(" gc=")
        try:
            outcome = run_server_load(
                "aiohttp",
                variant,
                seconds=seconds,
                warmup=0,
                connections=50,
                no_gc=flag == "off",
                gc_stats=True,
            )
        except RuntimeError as error:
            errors[name] = str(error)[:300]
            return float("nan")
        runs[name].append(outcome)
        return outcome.p99_ms

    interleaved(names, reps, measure)
    rows: list[tuple[Any, ...]] = []
    entry = {}
    for name in names:
        outcomes = runs[name]
        if not outcomes:
            rows.append((name, errors.get(name, "failed"), "", "", "", "", "", ""))
            continue
        per_10k = [10_000 / max(1, o.requests) for o in outcomes]
        collections = [
            sum(c * k for c in (o.gc or {}).get("collections", [0, 0, 0]))
            for o, k in zip(outcomes, per_10k, strict=False)
        ]
        gen2 = [
            (o.gc or {}).get("collections", [0, 0, 0])[2] * k for o, k in zip(outcomes, per_10k, strict=False)
        ]
        pauses = [
            sum((o.gc or {}).get("pause_ms", [0, 0, 0])) * k for o, k in zip(outcomes, per_10k, strict=False)
        ]
        max_pause = max((o.gc or {}).get("max_pause_ms", 0) for o in outcomes)
        garbage = [
            (o.gc or {}).get("cyclic_garbage") / max(1, o.requests)
            for o in outcomes
            if (o.gc or {}).get("cyclic_garbage") is not None
        ]
        entry[name] = {
            "rps": [o.rps for o in outcomes],
            "p99_ms": [o.p99_ms for o in outcomes],
            "gc": [o.gc for o in outcomes],
            "requests": [o.requests for o in outcomes],
        }
        rows.append(
            (
                name,
                median([o.rps for o in outcomes]),
                median([o.p99_ms for o in outcomes]),
                median(collections),
                median(gen2),
                median(pauses),
                max_pause,
                median(garbage) if garbage else float("nan"),
            )
        )
    result["gc"] = entry
    return format_table(
        f"scale / GC: aiohttp app under wrk -c50 -d{seconds}s (median of {reps}); "
        "collections per 10k requests",
        (
            "variant",
            "req/s",
            "p99 ms",
            "GC runs /10k req",
            "gen2 /10k req",
            "GC pause ms /10k req",
            "max pause ms",
            "cyclic objects /req",
        ),
        rows,
    )


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "overload":
        os.environ.setdefault("FLOWTRACKER_EXPORTERS", "none")
        outcome = asyncio.run(_overload(int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 8192))
        print(json.dumps(outcome))
    else:
        raise SystemExit("usage: python -m benchmarks.scale overload TOTAL [MAX_QUEUE]")
