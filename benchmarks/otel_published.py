"""Suite ``otel-published``: OpenTelemetry's own SDK span benchmark, ported to flowtracker, side by side.

OpenTelemetry Python publishes a span benchmark with its SDK
(``opentelemetry-sdk/benchmarks/trace/test_benchmark_trace.py``, run with
pytest-benchmark): a ``TracerProvider`` with the ``DEFAULT_ON`` sampler, a
3-attribute ``Resource`` and **no span processor**, and spans named
``benchmarkedSpan``. Its cases (OpenTelemetry's calls, then flowtracker's):

* ``start-end``: ``tracer.start_span(name).end()``; ``ft.start_span(name).finish()``;
* ``attr-event``: ``start_span(name, attributes={"long.attribute": ...})``,
  ``add_event("benchmarkEvent")``, ``end()``; ``ft.start_span(name, **attributes)``,
  ``add_event(...)``, ``finish()``;
* ``attrs10``: the bare case with 10 attributes;
* ``current``: ``with tracer.start_as_current_span(name, attributes=...) as s:
  s.add_event(...)``; ``with ft.span(name, **attributes) as s: s.add_event(...)``;
* ``attrs128``: the bare case with 128 attributes.

The 10 and 128 attributes are 20-character keys with 20-character string
values, as OpenTelemetry's performance-benchmark specification describes;
128 is both SDKs' default attribute limit, so every one is kept.

Variants, served side by side on one event loop and alternated in blocks of
spans (the order shuffled per round, ``_harness.shuffled_rounds``):

* ``otel``: OpenTelemetry exactly as its benchmark sets it up (no processor:
  a span is made and ended, and goes nowhere);
* ``otel-batch``: the same provider with a ``BatchSpanProcessor`` into a
  dropping exporter, flushed (``force_flush``) at the end of each block;
* ``flowtracker``: a running ``Tracker`` with a dropping exporter, flushed at
  the end of each block, so each span (a one-span trace) goes through the
  whole pipeline: flowtracker does more here than ``otel`` does;
* ``none``: the same loop without spans, subtracted per round.

Each block is timed in process CPU time and in wall time; the tables give
medians over rounds of ns per span (net of ``none``) and of same-round
ratios. Goal (issue 21): OpenTelemetry >= 7x flowtracker, in wall time with
the ``BatchSpanProcessor``.

Example:
    python -m benchmarks otel-published --quick
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from ._harness import Settings, format_table, median, same_round, shuffled_rounds, unavailable
from ._sinks import DropExporter, otel_drop_exporter

__all__ = ("CASES", "VARIANTS", "run")

CASES = ("start-end", "attr-event", "attrs10", "current", "attrs128")
VARIANTS = ("none", "flowtracker", "otel", "otel-batch")
NAME = "benchmarkedSpan"
EVENT = "benchmarkEvent"
ONE = {"long.attribute": -10000000001000000000}
TEN = {f"attribute_key_{i:06d}": f"attribute_value_{i:04d}" for i in range(10)}
MANY = {f"attribute_key_{i:06d}": f"attribute_value_{i:04d}" for i in range(128)}
#: OpenTelemetry's benchmark resource.
RESOURCE = {
    "service.name": "A123456789",
    "service.version": "1.34567890",
    "service.instance.id": "123ab456-a123-12ab-12ab-12340a1abc12",
}
YIELD_MASK = 63  # yield to the loop every 64 spans, so flowtracker's pipeline runs as it would

Body = Callable[[int], None]


def _ft_bodies() -> dict[str, Body]:
    import flowtracker as ft

    start_span, span = ft.start_span, ft.span

    def start_end(n: int) -> None:
        for _ in range(n):
            start_span(NAME).finish()

    def attr_event(n: int) -> None:
        for _ in range(n):
            s = start_span(NAME, **ONE)
            s.add_event(EVENT)
            s.finish()

    def attrs10(n: int) -> None:
        for _ in range(n):
            start_span(NAME, **TEN).finish()

    def current(n: int) -> None:
        for _ in range(n):
            with span(NAME, **ONE) as s:
                s.add_event(EVENT)

    def attrs128(n: int) -> None:
        for _ in range(n):
            start_span(NAME, **MANY).finish()

    return dict(zip(CASES, (start_end, attr_event, attrs10, current, attrs128), strict=True))


def _otel_bodies(tracer: Any) -> dict[str, Body]:
    start_span, start_as_current_span = tracer.start_span, tracer.start_as_current_span

    def start_end(n: int) -> None:
        for _ in range(n):
            start_span(NAME).end()

    def attr_event(n: int) -> None:
        for _ in range(n):
            s = start_span(NAME, attributes=ONE)
            s.add_event(EVENT)
            s.end()

    def attrs10(n: int) -> None:
        for _ in range(n):
            start_span(NAME, attributes=TEN).end()

    def current(n: int) -> None:
        for _ in range(n):
            with start_as_current_span(NAME, attributes=ONE) as s:
                s.add_event(EVENT)

    def attrs128(n: int) -> None:
        for _ in range(n):
            start_span(NAME, attributes=MANY).end()

    return dict(zip(CASES, (start_end, attr_event, attrs10, current, attrs128), strict=True))


def _otel_tracer(batch: bool) -> tuple[Any, Any]:
    """OpenTelemetry as its benchmark sets it up; ``batch``: plus a BatchSpanProcessor (dropping)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider, sampling
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(sampler=sampling.DEFAULT_ON, resource=Resource(RESOURCE))
    exporter = None
    if batch:
        exporter = otel_drop_exporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider, exporter


@dataclasses.dataclass
class _Block:
    cpu_ns: int
    wall_ns: int
    delivered: int | None  # spans that reached the exporter (None: nowhere to go)


@dataclasses.dataclass
class _Variant:
    body: Body
    flush: Callable[[], Any]
    delivered: Callable[[], int | None]


async def _nothing() -> None:
    pass


async def _run_case(
    case: str, names: tuple[str, ...], block: int, rounds: int, seed: int
) -> dict[str, list[_Block]]:
    import flowtracker as ft

    sink = DropExporter()
    providers: list[Any] = []
    async with ft.Tracker(exporters=[sink], service="bench") as tracker:
        variants: dict[str, _Variant] = {}
        for name in names:
            if name == "flowtracker":
                variants[name] = _Variant(_ft_bodies()[case], tracker.flush, lambda: sink.traces)
            elif name in ("otel", "otel-batch"):
                provider, exporter = _otel_tracer(batch=name == "otel-batch")
                providers.append(provider)

                async def force_flush(provider: Any = provider) -> None:
                    provider.force_flush()

                def spans(exporter: Any = exporter) -> int | None:
                    return None if exporter is None else int(exporter.spans)

                tracer = provider.get_tracer("sdk_tracer_provider")
                variants[name] = _Variant(_otel_bodies(tracer)[case], force_flush, spans)
            else:

                def empty(n: int) -> None:
                    for _ in range(n):
                        pass

                variants[name] = _Variant(empty, _nothing, lambda: None)

        async def run_block(name: str) -> _Block:
            variant = variants[name]
            body, step = variant.body, YIELD_MASK + 1
            before = variant.delivered()
            cpu, wall = time.process_time_ns(), time.perf_counter_ns()
            for _ in range(block // step):
                body(step)
                await asyncio.sleep(0)
            await variant.flush()
            wall, cpu = time.perf_counter_ns() - wall, time.process_time_ns() - cpu
            after = variant.delivered()
            return _Block(cpu, wall, None if before is None or after is None else after - before)

        try:
            for name in names:  # warm-up
                await run_block(name)
            return await shuffled_rounds(names, rounds, seed, run_block)
        finally:
            for provider in providers:
                provider.shutdown()


def run(settings: Settings, workloads: tuple[str, ...] = CASES) -> dict[str, Any]:
    """Runs the suite; returns the JSON-ready result (tables included as Markdown)."""
    block = settings.scaled(4096, 2048, 128)  # a multiple of 64
    rounds = settings.reps if settings.reps is not None else settings.scaled(40, 12, 2)
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as error:
        message = unavailable(error)
        return {"error": message, "tables": [f"### otel-published\n\n{message}\n"]}
    results: dict[str, Any] = {"spans_per_block": block, "rounds": rounds, "cases": {}}
    rows: list[tuple[Any, ...]] = []
    for index, case in enumerate(workloads):
        blocks = asyncio.run(_run_case(case, VARIANTS, block, rounds, seed=index))
        net: dict[str, dict[str, list[float]]] = {}
        for clock in ("cpu", "wall"):
            per_span = {
                name: [getattr(b, f"{clock}_ns") / block for b in values] for name, values in blocks.items()
            }
            empty = per_span.pop("none")
            net[clock] = {
                name: [value - base for value, base in zip(values, empty, strict=False)]
                for name, values in per_span.items()
            }
        entry: dict[str, Any] = {}
        for name in ("flowtracker", "otel", "otel-batch"):
            delivered = [b.delivered for b in blocks[name] if b.delivered is not None]
            entry[name] = {
                "cpu_ns_per_span": net["cpu"][name],
                "wall_ns_per_span": net["wall"][name],
                "median_cpu_ns": median(net["cpu"][name]),
                "median_wall_ns": median(net["wall"][name]),
                "delivered_share": sum(delivered) / (block * len(delivered)) if delivered else None,
            }
        ratios = {
            f"{name}_over_flowtracker_{clock}": median(same_round(net[clock], name, "flowtracker"))
            for name in ("otel", "otel-batch")
            for clock in ("cpu", "wall")
        }
        entry["ratios"] = ratios
        results["cases"][case] = entry
        ft_share = entry["flowtracker"]["delivered_share"]
        batch_share = entry["otel-batch"]["delivered_share"]
        rows.append(
            (
                case,
                entry["flowtracker"]["median_cpu_ns"],
                entry["otel"]["median_cpu_ns"],
                ratios["otel_over_flowtracker_cpu"],
                entry["flowtracker"]["median_wall_ns"],
                entry["otel-batch"]["median_wall_ns"],
                ratios["otel-batch_over_flowtracker_wall"],
                ratios["otel-batch_over_flowtracker_cpu"],
                f"{100 * (ft_share or 0):.0f}% / {100 * (batch_share or 0):.0f}%",
            )
        )
    results["tables"] = [
        format_table(
            f"otel-published: OpenTelemetry's SDK span benchmark, ns per span (net of the loop), median of "
            f"{rounds} shuffled rounds of {block} spans",
            (
                "case", "ft CPU", "OTel CPU (no processor)", "OTel / ft", "ft wall", "OTel + Batch wall",
                "OTel+Batch / ft wall", "OTel+Batch / ft CPU", "delivered ft / OTel+Batch",
            ),
            rows,
        )
    ]
    return results
