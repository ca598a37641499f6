"""Suite ``ablate``: which part of the pipeline the extra nanoseconds are in.

Runs the ``span`` suite's ``async`` workload (root + child + one tag) with
parts of each pipeline switched off, interleaved, and reports the cost of each
part as the difference between two rungs of the ladder:

* ``full``: the whole pipeline, as in the ``span`` suite;
* ``no lane``: traces complete but are not queued (``Lane.offer`` returns at
  once; the floor's ``offer`` does nothing): the lane + exporter-task cost;
* ``spans only``: spans start, end and join their trace, but nothing decides
  completion (``Tracker.span_ended`` does nothing, no open-trace
  registry): the completion + emission cost is ``no lane - spans only``.

The switches are monkeypatches in this process only (the core is untouched);
a rung whose switch no longer matches the core shows ``n/a``. Correctness is
off in the lower rungs (nothing is exported): they price parts, nothing more.

Example:
    python -m benchmarks ablate --quick
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from . import floor as floor_module
from . import span as span_suite
from ._harness import Settings, clock, format_table, interleaved, median
from ._sinks import DropExporter

RUNGS = ("full", "no lane", "spans only")


class _NullSet:
    """Stands in for the tracker's open-trace registry in the ``spans only`` rung."""

    def add(self, item: object) -> None:
        pass

    def discard(self, item: object) -> None:
        pass

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __len__(self) -> int:
        return 0


@contextlib.contextmanager
def _patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    if not hasattr(owner, name):
        raise LookupError(f"{owner.__name__}.{name} is gone")
    original = owner.__dict__[name]
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


async def _run_ft(rung: str, n: int) -> float:
    import flowtracker as ft
    from flowtracker._pipeline import tracker as _tracker

    with contextlib.ExitStack() as stack:
        if rung == "spans only":
            stack.enter_context(_patched(_tracker.Tracker, "span_ended", lambda self, state: None))
        # "no lane": a tracker with no exporter assembles and emits traces but
        # hands them to no lane.
        exporters = [DropExporter()] if rung == "full" else []
        async with ft.Tracker(exporters=exporters, service="bench") as tracker:
            if rung == "spans only":
                if not hasattr(tracker, "open_traces"):
                    raise LookupError("Tracker.open_traces is gone")
                tracker.open_traces = _NullSet()  # type: ignore[assignment]
            body = span_suite._ft_bodies()["async"]
            await body(max(16, n // 10))
            await tracker.flush()
            start = clock()
            await body(n)
            await tracker.flush()
            return (clock() - start) / (2 * n)


async def _run_floor(rung: str, n: int) -> float:
    with contextlib.ExitStack() as stack:
        if rung != "full":
            stack.enter_context(_patched(floor_module.FloorTracer, "offer", lambda self, trace: None))
        async with floor_module.FloorTracer() as tracer:
            body = span_suite._floor_bodies(tracer)["async"]
            warm = max(16, n // 10)
            await body(warm)
            await tracer.drain(warm if rung == "full" else 0)
            start = clock()
            await body(n)
            await tracer.drain(warm + n if rung == "full" else 0)
            return (clock() - start) / (2 * n)


def run(settings: Settings) -> dict[str, Any]:
    """Runs the suite; returns the JSON-ready result."""
    n = settings.scaled(20_000, 10_000, 200)
    variants = [f"{tracer}: {rung}" for rung in RUNGS for tracer in ("floor", "flowtracker")]
    errors: dict[str, str] = {}

    def measure(variant: str, rep: int) -> float:
        tracer, rung = variant.split(": ")
        runner = _run_ft if tracer == "flowtracker" else _run_floor
        try:
            return asyncio.run(runner(rung, n))
        except LookupError as error:
            errors[variant] = f"n/a ({error})"
            return float("nan")

    samples = interleaved(variants, settings.repetitions, measure)
    value = {v: median(s) for v, s in samples.items()}

    def part(tracer: str, upper: str, lower: str | None) -> float:
        high = value[f"{tracer}: {upper}"]
        return high - (value[f"{tracer}: {lower}"] if lower else 0.0)

    parts = (
        ("span objects, contextvar, clock, ids (spans only)", "spans only", None),
        ("completion + emission (no lane - spans only)", "no lane", "spans only"),
        ("lane + exporter task (full - no lane)", "full", "no lane"),
        ("total (full)", "full", None),
    )
    rows = []
    for label, upper, lower in parts:
        floor_ns = part("floor", upper, lower)
        ft_ns = part("flowtracker", upper, lower)
        rows.append((label, floor_ns, ft_ns, ft_ns - floor_ns))
    table = format_table(
        f"ablate: where the ns per span go (async root + child + tag; median of {settings.repetitions})",
        ("part", "floor ns/span", "flowtracker ns/span", "flowtracker extra"),
        rows,
    )
    return {"samples": samples, "medians": value, "errors": errors, "tables": [table]}
