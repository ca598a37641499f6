"""Suite ``otel-api``: OpenTelemetry API spans through flowtracker's bridge vs. through the SDK.

The same code, written against the OpenTelemetry API only (what every
``opentelemetry-instrumentation-*`` package runs), is timed with two
providers, in one run, interleaved:

* ``bridge``: :class:`flowtracker.otel.TracerProvider`, into a flowtracker
  ``Tracker`` whose exporter drops (the clock stops once the last trace
  reached it: ``tracker.flush()``);
* ``sdk``: the OpenTelemetry SDK's ``TracerProvider`` with a
  ``BatchSpanProcessor`` into a dropping exporter (``force_flush()``).

A loop with no spans (``none``) is subtracted per repetition; the ratio
``bridge / sdk`` is taken inside each repetition, then the median. Goal
(issue 12): at most 1/3.

Workloads (one trace = a root span and one child span, via ``start_as_current_span``):

* ``nested``: the child sets one attribute;
* ``attrs5``: the child starts with 5 attributes and adds one event with one attribute.

The bridge joins OpenTelemetry's context to flowtracker's for the whole
process (it wraps ``opentelemetry.context._RUNTIME_CONTEXT``); each bridge run
puts the original back afterwards, so the SDK runs on an untouched API.

Example:
    python -m benchmarks otel-api --quick
"""

# ruff: noqa: SIM117  (nested spans are the point: the code reads as instrumentations write it)
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from . import _harness
from ._harness import Settings, format_table, median, ratios
from ._sinks import DropExporter, otel_provider
from .span import Sample, measure_net

VARIANTS = ("none", "bridge", "sdk")
WORKLOADS = ("nested", "attrs5")
SPANS_PER_TRACE = 2
YIELD_MASK = 63  # yield to the loop every 64 traces, as a server between requests would

Body = Callable[[int], Awaitable[None]]


def _bodies(tracer: Any) -> dict[str, Body]:
    """The workloads, written against the OpenTelemetry API only."""
    start = tracer.start_as_current_span
    sleep = asyncio.sleep
    attributes = {"a": 1, "b": "two", "c": 3.0, "d": True, "e": "five"}

    async def nested(n: int) -> None:
        for i in range(n):
            with start("root"):
                with start("child") as child:
                    child.set_attribute("rows", 3)
            if not i & YIELD_MASK:
                await sleep(0)

    async def attrs5(n: int) -> None:
        for i in range(n):
            with start("root"):
                with start("child", attributes=attributes) as child:
                    child.add_event("cache miss", {"key": "u:1"})
            if not i & YIELD_MASK:
                await sleep(0)

    return {"nested": nested, "attrs5": attrs5}


async def _run_bridge(workload: str, n: int, warmup: int) -> Sample:
    import opentelemetry.context as otel_context

    import flowtracker as ft
    from flowtracker.otel import TracerProvider

    saved = otel_context._RUNTIME_CONTEXT  # put back after the run: the SDK runs on the plain API
    sink = DropExporter()
    try:
        async with ft.Tracker(exporters=[sink], service="bench") as tracker:
            body = _bodies(TracerProvider(tracker).get_tracer("bench"))[workload]
            await body(warmup)
            await tracker.flush()
            before = sink.traces
            cpu = time.process_time_ns()
            started = time.perf_counter_ns()
            await body(n)
            await tracker.flush()
            wall = time.perf_counter_ns() - started
            cpu = time.process_time_ns() - cpu
            delivered = (sink.traces - before) * SPANS_PER_TRACE
    finally:
        otel_context._RUNTIME_CONTEXT = saved
    return Sample(wall, cpu, n * SPANS_PER_TRACE, delivered)


async def _run_sdk(workload: str, n: int, warmup: int) -> Sample:
    provider, exporter = otel_provider()
    try:
        body = _bodies(provider.get_tracer("bench"))[workload]
        await body(warmup)
        provider.force_flush()
        before = exporter.spans
        cpu = time.process_time_ns()
        started = time.perf_counter_ns()
        await body(n)
        provider.force_flush()
        wall = time.perf_counter_ns() - started
        cpu = time.process_time_ns() - cpu
        delivered = exporter.spans - before
    finally:
        provider.shutdown()
    return Sample(wall, cpu, n * SPANS_PER_TRACE, delivered)


async def _run_none(workload: str, n: int, warmup: int) -> Sample:
    sleep = asyncio.sleep

    async def body(count: int) -> None:
        for i in range(count):
            if not i & YIELD_MASK:
                await sleep(0)

    await body(warmup)
    cpu = time.process_time_ns()
    started = time.perf_counter_ns()
    await body(n)
    wall = time.perf_counter_ns() - started
    cpu = time.process_time_ns() - cpu
    return Sample(wall, cpu, n * SPANS_PER_TRACE, n * SPANS_PER_TRACE)


RUNNERS: dict[str, Callable[[str, int, int], Coroutine[Any, Any, Sample]]] = {
    "none": _run_none,
    "bridge": _run_bridge,
    "sdk": _run_sdk,
}


def measure_once(variant: str, workload: str, n: int) -> Sample:
    """One timed run of ``workload`` (``n`` traces) under ``variant``, on a fresh loop."""
    return asyncio.run(RUNNERS[variant](workload, n, max(16, n // 10)))


def run(settings: Settings, workloads: tuple[str, ...] = WORKLOADS) -> dict[str, Any]:
    """Runs the suite; returns the JSON-ready result (tables included as Markdown)."""
    n = settings.scaled(20_000, 5_000, 200)
    results: dict[str, Any] = {"traces_per_run": n, "spans_per_trace": SPANS_PER_TRACE, "workloads": {}}
    tables = []
    summary_rows = []
    for workload in workloads:
        gross, net, raw, errors = measure_net(VARIANTS, settings.repetitions, measure_once, workload, n)
        vs_sdk = ratios(net, "sdk")
        entry: dict[str, Any] = {"variants": {}, "bridge_over_sdk": vs_sdk.get("bridge")}
        rows: list[tuple[Any, ...]] = []
        for name in ("bridge", "sdk"):
            samples = raw[name]
            spans = sum(s.spans for s in samples)
            delivered = sum(s.delivered for s in samples)
            values = net[name]
            entry["variants"][name] = {
                "clock": _harness.clock_name,
                "ns_per_span_net": values,
                "ns_per_span_gross": gross[name],
                "median_ns_per_span": median(values),
                "x_sdk": vs_sdk.get(name),
                "delivered_share": delivered / spans if spans else None,
                "error": errors.get(name),
            }
            rows.append(
                (
                    name,
                    median(values),
                    min(values) if values else float("nan"),
                    max(values) if values else float("nan"),
                    vs_sdk.get(name, float("nan")),
                    f"{100 * delivered / spans:.1f}%" if spans else "n/a",
                )
            )
        results["workloads"][workload] = entry
        tables.append(
            format_table(
                f"otel-api / {workload}: {_harness.clock_name} ns per span, net of the empty loop "
                f"(median of {settings.repetitions} reps)",
                ("provider", "median ns", "min", "max", "x sdk", "delivered"),
                rows,
            )
        )
        summary_rows.append(
            (
                workload,
                entry["variants"]["bridge"]["median_ns_per_span"],
                entry["variants"]["sdk"]["median_ns_per_span"],
                vs_sdk.get("bridge", float("nan")),
                "yes" if vs_sdk.get("bridge", float("inf")) <= 1 / 3 else "no",
            )
        )
    summary = format_table(
        f"otel-api: OpenTelemetry API spans, flowtracker bridge vs. SDK + BatchSpanProcessor "
        f"(median {_harness.clock_name} ns per span; ratio: median of same-rep ratios; goal <= 1/3)",
        ("workload", "bridge", "sdk", "bridge / sdk", "goal met"),
        summary_rows,
    )
    results["tables"] = [summary, *tables]
    return results
