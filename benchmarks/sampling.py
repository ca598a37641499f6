"""Suite ``sampling``: what a span costs when its trace is not recorded.

Issue 7 asks that an unsampled trace cost close to nothing: at most the floor
tracer's bare span (about 1 us here). Same workload as ``span``'s ``async``
(root + child + one tag, a yield every 64 traces), measured for:

* ``floor``: the hand-written floor tracer, recording everything;
* ``flowtracker``: recording everything (``sample_rate=1.0``);
* ``unsampled``: ``Tracker(sample_rate=0.0)``: spans still carry ids and
  context (for ``traceparent``), nothing is recorded or exported;
* ``tail-dropped``: recorded and assembled, then discarded by a tail sampler.

Example:
    python -m benchmarks sampling --quick
"""

from __future__ import annotations

import asyncio
from typing import Any

from . import floor as floor_module
from . import span as span_suite
from ._harness import Settings, clock, format_table, interleaved, median, ratios
from ._sinks import DropExporter

VARIANTS = ("floor", "flowtracker", "unsampled", "tail-dropped")


async def _run_ft(variant: str, n: int) -> float:
    import flowtracker as ft

    options: dict[str, Any] = {}
    if variant == "unsampled":
        options["sample_rate"] = 0.0
    elif variant == "tail-dropped":
        options["tail_sampler"] = lambda trace: False
    async with ft.Tracker(exporters=[DropExporter()], service="bench", **options) as tracker:
        body = span_suite._ft_bodies()["async"]
        await body(max(16, n // 10))
        await tracker.flush()
        start = clock()
        await body(n)
        await tracker.flush()
        return (clock() - start) / (2 * n)


async def _run_floor(n: int) -> float:
    async with floor_module.FloorTracer() as tracer:
        body = span_suite._floor_bodies(tracer)["async"]
        warm = max(16, n // 10)
        await body(warm)
        await tracer.drain(warm)
        start = clock()
        await body(n)
        await tracer.drain(warm + n)
        return (clock() - start) / (2 * n)


def run(settings: Settings) -> dict[str, Any]:
    """Runs the suite; returns the JSON-ready result."""
    n = settings.scaled(20_000, 10_000, 200)

    def measure(variant: str, rep: int) -> float:
        if variant == "floor":
            return asyncio.run(_run_floor(n))
        return asyncio.run(_run_ft(variant, n))

    samples = interleaved(list(VARIANTS), settings.repetitions, measure)
    versus_floor = ratios(samples, "floor")
    rows = [(variant, median(samples[variant]), versus_floor[variant]) for variant in VARIANTS]
    table = format_table(
        f"sampling: ns per span, async root + child + tag (median of {settings.repetitions})",
        ("variant", "ns/span", "x floor"),
        rows,
    )
    return {"samples": samples, "ratios_vs_floor": versus_floor, "tables": [table]}
