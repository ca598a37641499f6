"""Suite ``span``: nanoseconds per span, through each tracer's whole pipeline.

Every variant runs the same workload on a fresh event loop with its pipeline
running and an exporter that drops (see ``_sinks``); the clock stops only when
the last trace reached that exporter (``tracker.flush()``, the floor's
``drain()``, OpenTelemetry's ``force_flush()``; aiozipkin hands each span to
its transport synchronously). A loop with no tracer (``none``) runs the same
shape and its time is subtracted, per repetition, before dividing by the spans.

Workloads (one trace = a root span and one child span):

* ``async``: nested ``async with`` root + child, one tag on the child;
* ``sync``: the same with ``with``;
* ``traced``: a decorated coroutine calling a decorated coroutine that tags;
* ``tags5``: root + child created with 5 tags, plus one event with one attribute.

``ft-monitor`` is flowtracker with ``ft.monitor_event_loop()`` on (issue 13:
its ``x flowtracker`` column is the per-span cost of the monitor, target ≤ 1.3).

OpenTelemetry and aiozipkin have no ``async with``: their ``async`` workload
uses ``with`` inside the coroutine, as their users do. aiozipkin passes the
parent by hand (``span.new_child()``) and has no decorator (``traced``: n/a).

Example:
    python -m benchmarks span --quick
"""

# ruff: noqa: SIM117  (nested spans are the point: the code reads as users write it)
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from . import _harness
from . import floor as floor_module
from ._harness import Settings, format_table, interleaved, median, ratios, unavailable
from ._sinks import DropExporter, otel_provider, zipkin_tracer

TRACERS = ("none", "floor", "flowtracker", "ft-monitor", "otel", "aiozipkin")
WORKLOADS = ("async", "sync", "traced", "tags5")
SPANS_PER_TRACE = 2
YIELD_MASK = 63  # yield to the loop every 64 traces, as a server between requests would


@dataclasses.dataclass
class Sample:
    """One timed run: wall and CPU nanoseconds, and how many spans reached the exporter."""

    wall_ns: int
    cpu_ns: int
    spans: int
    delivered: int


Body = Callable[[int], Awaitable[None]]


# -- flowtracker -------------------------------------------------------------


def _ft_bodies() -> dict[str, Body]:
    import flowtracker as ft

    span = ft.span
    sleep = asyncio.sleep

    async def run_async(n: int) -> None:
        for i in range(n):
            async with span("root"):
                async with span("child") as child:
                    child.set_tag("rows", 3)
            if not i & YIELD_MASK:
                await sleep(0)

    async def run_sync(n: int) -> None:
        for i in range(n):
            with span("root"):
                with span("child") as child:
                    child.set_tag("rows", 3)
            if not i & YIELD_MASK:
                await sleep(0)

    @ft.traced
    async def leaf() -> None:
        ft.add_tag("rows", 3)

    @ft.traced
    async def handler() -> None:
        await leaf()

    async def run_traced(n: int) -> None:
        for i in range(n):
            await handler()
            if not i & YIELD_MASK:
                await sleep(0)

    async def run_tags5(n: int) -> None:
        for i in range(n):
            async with span("root"):
                async with span("child", a=1, b="two", c=3.0, d=True, e="five") as child:
                    child.add_event("cache miss", key="u:1")
            if not i & YIELD_MASK:
                await sleep(0)

    return {"async": run_async, "sync": run_sync, "traced": run_traced, "tags5": run_tags5}


async def _run_flowtracker(workload: str, n: int, warmup: int, monitor: bool = False) -> Sample:
    import flowtracker as ft

    sink = DropExporter()
    watching = ft.monitor_event_loop(block_threshold=0.1) if monitor else contextlib.nullcontext()
    async with ft.Tracker(exporters=[sink], service="bench") as tracker, watching:
        body = _ft_bodies()[workload]
        await body(warmup)
        await tracker.flush()
        before = sink.traces
        cpu = time.process_time_ns()
        start = time.perf_counter_ns()
        await body(n)
        await tracker.flush()
        wall = time.perf_counter_ns() - start
        cpu = time.process_time_ns() - cpu
        delivered = (sink.traces - before) * SPANS_PER_TRACE
    return Sample(wall, cpu, n * SPANS_PER_TRACE, delivered)


# -- the floor ---------------------------------------------------------------


def _floor_bodies(tracer: floor_module.FloorTracer) -> dict[str, Body]:
    span = tracer.span
    sleep = asyncio.sleep
    add_tag = floor_module.add_tag

    async def run_async(n: int) -> None:
        for i in range(n):
            async with span("root"):
                async with span("child") as child:
                    child.set_tag("rows", 3)
            if not i & YIELD_MASK:
                await sleep(0)

    async def run_sync(n: int) -> None:
        for i in range(n):
            with span("root"):
                with span("child") as child:
                    child.set_tag("rows", 3)
            if not i & YIELD_MASK:
                await sleep(0)

    @floor_module.floor_traced(tracer, "leaf")
    async def leaf() -> None:
        add_tag("rows", 3)

    @floor_module.floor_traced(tracer, "handler")
    async def handler() -> None:
        await leaf()

    async def run_traced(n: int) -> None:
        for i in range(n):
            await handler()
            if not i & YIELD_MASK:
                await sleep(0)

    async def run_tags5(n: int) -> None:
        for i in range(n):
            async with span("root"):
                async with span("child", a=1, b="two", c=3.0, d=True, e="five") as child:
                    child.add_event("cache miss", key="u:1")
            if not i & YIELD_MASK:
                await sleep(0)

    return {"async": run_async, "sync": run_sync, "traced": run_traced, "tags5": run_tags5}


async def _run_floor(workload: str, n: int, warmup: int) -> Sample:
    async with floor_module.FloorTracer() as tracer:
        body = _floor_bodies(tracer)[workload]
        await body(warmup)
        await tracer.drain(warmup)
        before = tracer.received
        cpu = time.process_time_ns()
        start = time.perf_counter_ns()
        await body(n)
        await tracer.drain(warmup + n)
        wall = time.perf_counter_ns() - start
        cpu = time.process_time_ns() - cpu
        delivered = (tracer.received - before) * SPANS_PER_TRACE
    return Sample(wall, cpu, n * SPANS_PER_TRACE, delivered)


# -- OpenTelemetry -----------------------------------------------------------


def _otel_bodies(tracer: Any) -> dict[str, Body]:
    from opentelemetry import trace

    start = tracer.start_as_current_span
    sleep = asyncio.sleep
    current = trace.get_current_span

    async def run_sync(n: int) -> None:
        for i in range(n):
            with start("root"):
                with start("child") as child:
                    child.set_attribute("rows", 3)
            if not i & YIELD_MASK:
                await sleep(0)

    @start("leaf")  # type: ignore[untyped-decorator]
    async def leaf() -> None:
        current().set_attribute("rows", 3)

    @start("handler")  # type: ignore[untyped-decorator]
    async def handler() -> None:
        await leaf()

    async def run_traced(n: int) -> None:
        for i in range(n):
            await handler()
            if not i & YIELD_MASK:
                await sleep(0)

    attributes = {"a": 1, "b": "two", "c": 3.0, "d": True, "e": "five"}

    async def run_tags5(n: int) -> None:
        for i in range(n):
            with start("root"):
                with start("child", attributes=attributes) as child:
                    child.add_event("cache miss", {"key": "u:1"})
            if not i & YIELD_MASK:
                await sleep(0)

    return {"async": run_sync, "sync": run_sync, "traced": run_traced, "tags5": run_tags5}


async def _run_otel(workload: str, n: int, warmup: int) -> Sample:
    provider, exporter = otel_provider()
    try:
        body = _otel_bodies(provider.get_tracer("bench"))[workload]
        await body(warmup)
        provider.force_flush()
        before = exporter.spans
        cpu = time.process_time_ns()
        start = time.perf_counter_ns()
        await body(n)
        provider.force_flush()
        wall = time.perf_counter_ns() - start
        cpu = time.process_time_ns() - cpu
        delivered = exporter.spans - before
    finally:
        provider.shutdown()
    return Sample(wall, cpu, n * SPANS_PER_TRACE, delivered)


# -- aiozipkin ---------------------------------------------------------------


def _zipkin_bodies(tracer: Any) -> dict[str, Body]:
    sleep = asyncio.sleep
    new_trace = tracer.new_trace

    async def run_sync(n: int) -> None:
        for i in range(n):
            with new_trace(sampled=True) as root:
                root.name("root")
                with root.new_child("child") as child:
                    child.tag("rows", "3")
            if not i & YIELD_MASK:
                await sleep(0)

    async def run_tags5(n: int) -> None:
        for i in range(n):
            with new_trace(sampled=True) as root:
                root.name("root")
                with root.new_child("child") as child:
                    child.tag("a", "1")
                    child.tag("b", "two")
                    child.tag("c", "3.0")
                    child.tag("d", "true")
                    child.tag("e", "five")
                    child.annotate("cache miss key=u:1")
            if not i & YIELD_MASK:
                await sleep(0)

    return {"async": run_sync, "sync": run_sync, "tags5": run_tags5}


async def _run_zipkin(workload: str, n: int, warmup: int) -> Sample:
    tracer, transport = zipkin_tracer()
    try:
        bodies = _zipkin_bodies(tracer)
        if workload not in bodies:
            raise NotImplementedError("aiozipkin has no decorator")
        body = bodies[workload]
        await body(warmup)
        before = transport.spans
        cpu = time.process_time_ns()
        start = time.perf_counter_ns()
        await body(n)
        wall = time.perf_counter_ns() - start
        cpu = time.process_time_ns() - cpu
        delivered = transport.spans - before
    finally:
        await tracer.close()
    return Sample(wall, cpu, n * SPANS_PER_TRACE, delivered)


# -- no tracer ---------------------------------------------------------------


async def _run_none(workload: str, n: int, warmup: int) -> Sample:
    sleep = asyncio.sleep

    async def leaf() -> None:
        pass

    async def handler() -> None:
        await leaf()

    async def body(count: int) -> None:
        for i in range(count):
            if workload == "traced":
                await handler()
            if not i & YIELD_MASK:
                await sleep(0)

    await body(warmup)
    cpu = time.process_time_ns()
    start = time.perf_counter_ns()
    await body(n)
    wall = time.perf_counter_ns() - start
    cpu = time.process_time_ns() - cpu
    return Sample(wall, cpu, n * SPANS_PER_TRACE, n * SPANS_PER_TRACE)


async def _run_ft_monitor(workload: str, n: int, warmup: int) -> Sample:
    """flowtracker with the event-loop monitor on (busy time per span, block watchdog)."""
    return await _run_flowtracker(workload, n, warmup, monitor=True)


RUNNERS: dict[str, Callable[[str, int, int], Awaitable[Sample]]] = {
    "none": _run_none,
    "floor": _run_floor,
    "flowtracker": _run_flowtracker,
    "ft-monitor": _run_ft_monitor,
    "otel": _run_otel,
    "aiozipkin": _run_zipkin,
}


def measure_once(tracer: str, workload: str, n: int) -> Sample:
    """One timed run of ``workload`` (``n`` traces) under ``tracer``, on a fresh loop."""
    return asyncio.run(_call(RUNNERS[tracer], workload, n))


async def _call(runner: Callable[[str, int, int], Awaitable[Sample]], workload: str, n: int) -> Sample:
    return await runner(workload, n, max(16, n // 10))


def measure_net(
    variants: Sequence[str],
    repetitions: int,
    measure_once: Callable[[str, str, int], Sample],
    workload: str,
    n: int,
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[Sample]], dict[str, str]]:
    """Runs the variants interleaved on ``workload``; used by this suite and ``otel-api``.

    Returns the per-span times (gross, and net of the ``none`` loop, rep by
    rep), every sample, and why a variant could not run.
    """
    errors: dict[str, str] = {}
    raw: dict[str, list[Sample]] = {name: [] for name in variants}

    def measure(name: str, rep: int) -> float:
        if name in errors:
            return float("nan")
        try:
            sample = measure_once(name, workload, n)
        except (ImportError, NotImplementedError) as error:
            errors[name] = unavailable(error)
            return float("nan")
        raw[name].append(sample)
        return (sample.cpu_ns if _harness.clock_name == "cpu" else sample.wall_ns) / sample.spans

    gross = interleaved(variants, repetitions, measure)
    base = gross.get("none", [0.0] * repetitions)
    net = {
        name: [value - b for value, b in zip(values, base, strict=False)]
        for name, values in gross.items()
        if name != "none"
    }
    return gross, net, raw, errors


def run(
    settings: Settings, tracers: tuple[str, ...] = TRACERS, workloads: tuple[str, ...] = WORKLOADS
) -> dict[str, Any]:
    """Runs the suite; returns the JSON-ready result (tables included as Markdown)."""
    n = settings.scaled(20_000, 5_000, 200)
    results: dict[str, Any] = {"traces_per_run": n, "spans_per_trace": SPANS_PER_TRACE, "workloads": {}}
    tables = []
    summary_rows = []
    for workload in workloads:
        gross, net, raw, errors = measure_net(tracers, settings.repetitions, measure_once, workload, n)
        vs_floor = ratios(net, "floor") if "floor" in net else {}
        vs_ft = ratios(net, "flowtracker") if "flowtracker" in net else {}
        rows: list[tuple[Any, ...]] = []
        entry: dict[str, Any] = {}
        for name in tracers:
            samples = raw[name]
            spans = sum(s.spans for s in samples)
            delivered = sum(s.delivered for s in samples)
            values = net.get(name, gross[name])
            cpu = [s.cpu_ns / s.spans for s in samples]
            entry[name] = {
                "clock": _harness.clock_name,
                "ns_per_span_net": values,
                "ns_per_span_gross": gross[name],
                "wall_ns_per_span_gross": [s.wall_ns / s.spans for s in samples],
                "cpu_ns_per_span_gross": cpu,
                "median_ns_per_span": median(values),
                "x_floor": vs_floor.get(name),
                "x_flowtracker": vs_ft.get(name),
                "delivered_share": delivered / spans if spans else None,
                "error": errors.get(name),
            }
            if name in errors:
                rows.append((name, errors[name], "", "", "", "", ""))
                continue
            rows.append(
                (
                    name,
                    median(values),
                    min(values) if values else float("nan"),
                    max(values) if values else float("nan"),
                    vs_floor.get(name, float("nan")) if name != "none" else float("nan"),
                    vs_ft.get(name, float("nan")) if name != "none" else float("nan"),
                    f"{100 * delivered / spans:.1f}%" if spans else "n/a",
                )
            )
        results["workloads"][workload] = entry
        tables.append(
            format_table(
                f"span / {workload}: {_harness.clock_name} ns per span, net of the empty loop "
                f"(median of {settings.repetitions} reps)",
                ("tracer", "median ns", "min", "max", "x floor", "x flowtracker", "delivered"),
                rows,
            )
        )
        summary_rows.append(
            (
                workload,
                entry.get("floor", {}).get("median_ns_per_span", float("nan")),
                entry.get("flowtracker", {}).get("median_ns_per_span", float("nan")),
                entry.get("otel", {}).get("median_ns_per_span", float("nan")),
                entry.get("aiozipkin", {}).get("median_ns_per_span", float("nan")),
                vs_floor.get("flowtracker", float("nan")),
                vs_ft.get("otel", float("nan")),
                vs_ft.get("aiozipkin", float("nan")),
            )
        )
    summary = format_table(
        f"span: summary (median {_harness.clock_name} ns per span; ratios are medians of same-rep ratios)",
        ("workload", "floor", "flowtracker", "otel", "aiozipkin", "ft / floor", "otel / ft", "zipkin / ft"),
        summary_rows,
    )
    results["tables"] = [summary, *tables]
    return results
