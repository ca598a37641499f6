"""Suite ``sparse``: what the pipeline costs per trace when traces are spaced by I/O, and an idle flush.

A tight loop of spans (the ``span`` suite) lets the pipeline take traces in
batches; a real service ends one trace, then waits for the network. Here each
iteration is one round trip on a real loopback socket (1 byte to an echo
server in another process, ``_echo``, and back), and the traced variants end
one trace (``async with`` root + child with one tag, as ``span``'s ``async``
workload) after it. The same traces in a tight loop (``*-dense``) give what
the spans cost when the pipeline batches; the difference is what spacing
costs per trace: the consumer's wake-up per trace, and the caches the I/O
path cooled.

Variants, side by side on one event loop, in blocks of iterations shuffled
per round (``_harness.shuffled_rounds``); each block ends with its tracer's
flush, inside the clock:

* ``none``: the round trips alone;
* ``floor``, ``flowtracker``: a round trip, then a trace;
* ``floor-dense``, ``ft-dense``: the traces alone, yielding to the loop every
  64 traces;
* ``flush-idle``: ``await tracker.flush()`` with nothing to export, back to back;
* ``flush-sparse``: a round trip, then an idle ``await tracker.flush()``.

Per trace (CPU, medians over rounds): *sparse* = the traced variant minus
``none`` in the same round; *dense*; and *spacing* = sparse minus dense.
Goals (issue 21): flowtracker's pipeline CPU per trace under sparse load
<= 5 µs (the *spacing* column: what the pipeline adds once traces are
spaced); an idle ``flush()`` returns at once.

Example:
    python -m benchmarks sparse --quick
"""

# ruff: noqa: SIM117  (nested spans are the point: the code reads as users write it)
from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ._harness import Settings, format_table, median, same_round, shuffled_rounds
from ._load import peer
from ._sinks import DropExporter
from .floor import FloorTracer

__all__ = ("VARIANTS", "run")

VARIANTS = ("none", "floor", "flowtracker", "floor-dense", "ft-dense", "flush-idle", "flush-sparse")
YIELD_MASK = 63


@dataclasses.dataclass
class _Block:
    cpu_ns: int
    wall_ns: int
    delivered: int


async def _measure(port: int, block: int, rounds: int) -> dict[str, list[_Block]]:
    import flowtracker as ft

    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def round_trip() -> None:
        writer.write(b"x")
        await reader.readexactly(1)

    sink = DropExporter()
    ft_span, sleep = ft.span, asyncio.sleep
    async with FloorTracer() as floor, ft.Tracker(exporters=[sink], service="bench") as tracker:
        floor_span = floor.span

        async def floor_trace() -> None:
            async with floor_span("root"):
                async with floor_span("child") as child:
                    child.set_tag("rows", 3)

        async def ft_trace() -> None:
            async with ft_span("root"):
                async with ft_span("child") as child:
                    child.set_tag("rows", 3)

        async def sparse(trace: Callable[[], Awaitable[None]]) -> None:
            for _ in range(block):
                await round_trip()
                await trace()

        async def dense(trace: Callable[[], Awaitable[None]]) -> None:
            for i in range(block):
                await trace()
                if not i & YIELD_MASK:
                    await sleep(0)

        async def flushes(spaced: bool) -> None:
            for _ in range(block):
                if spaced:
                    await round_trip()
                await tracker.flush()

        async def nothing() -> None:
            pass

        bodies: dict[str, Callable[[], Awaitable[None]]] = {
            "none": lambda: sparse(nothing),
            "floor": lambda: sparse(floor_trace),
            "flowtracker": lambda: sparse(ft_trace),
            "floor-dense": lambda: dense(floor_trace),
            "ft-dense": lambda: dense(ft_trace),
            "flush-idle": lambda: flushes(spaced=False),
            "flush-sparse": lambda: flushes(spaced=True),
        }

        async def run_block(name: str) -> _Block:
            delivered = floor.received if name.startswith("floor") else sink.traces
            cpu, wall = time.process_time_ns(), time.perf_counter_ns()
            await bodies[name]()
            await (floor.flush() if name.startswith("floor") else tracker.flush())
            wall, cpu = time.perf_counter_ns() - wall, time.process_time_ns() - cpu
            delivered = (floor.received if name.startswith("floor") else sink.traces) - delivered
            return _Block(cpu, wall, delivered)

        try:
            for name in VARIANTS:  # warm-up
                await run_block(name)
            return await shuffled_rounds(VARIANTS, rounds, 0, run_block)
        finally:
            writer.close()


def run(settings: Settings) -> dict[str, Any]:
    """Runs the suite; returns the JSON-ready result (tables included as Markdown)."""
    block = settings.scaled(500, 300, 20)
    rounds = settings.reps if settings.reps is not None else settings.scaled(30, 10, 2)
    with peer("benchmarks._echo") as port:
        blocks = asyncio.run(_measure(port, block, rounds))
    cpu = {name: [b.cpu_ns / block for b in values] for name, values in blocks.items()}
    wall = {name: [b.wall_ns / block for b in values] for name, values in blocks.items()}
    traced = ("floor", "flowtracker", "floor-dense", "ft-dense")
    delivered = {
        name: sum(b.delivered for b in blocks[name]) / (block * len(blocks[name])) for name in traced
    }

    def net(values: dict[str, list[float]], name: str) -> list[float]:
        return [value - base for value, base in zip(values[name], values["none"], strict=False)]

    rows: list[tuple[Any, ...]] = []
    result: dict[str, Any] = {"iterations_per_block": block, "rounds": rounds, "tracers": {}}
    for tracer, dense in (("floor", "floor-dense"), ("flowtracker", "ft-dense")):
        sparse_cpu = net(cpu, tracer)
        spacing = [s - d for s, d in zip(sparse_cpu, cpu[dense], strict=False)]
        result["tracers"][tracer] = {
            "round_trip_us": median(cpu["none"]) / 1000,
            "sparse_cpu_ns_per_trace": sparse_cpu,
            "dense_cpu_ns_per_trace": cpu[dense],
            "spacing_cpu_ns_per_trace": spacing,
            "sparse_wall_ns_per_trace": net(wall, tracer),
            "delivered_share": {"sparse": delivered[tracer], "dense": delivered[dense]},
        }
        rows.append(
            (
                tracer,
                median(cpu["none"]) / 1000,
                median(sparse_cpu) / 1000,
                median(cpu[dense]) / 1000,
                median(spacing) / 1000,
                median(same_round({"s": sparse_cpu, "d": cpu[dense]}, "s", "d")),
                median(net(wall, tracer)) / 1000,
                f"{100 * delivered[tracer]:.0f}% / {100 * delivered[dense]:.0f}%",
            )
        )
    flush_sparse = net(cpu, "flush-sparse")
    result["flush"] = {
        "idle_cpu_ns": cpu["flush-idle"],
        "idle_wall_ns": wall["flush-idle"],
        "sparse_idle_cpu_ns": flush_sparse,
        "sparse_idle_wall_ns": net(wall, "flush-sparse"),
    }
    flush_rows = [
        ("back to back", median(cpu["flush-idle"]) / 1000, median(wall["flush-idle"]) / 1000),
        (
            "after a round trip (net of it)",
            median(flush_sparse) / 1000,
            median(result["flush"]["sparse_idle_wall_ns"]) / 1000,
        ),
    ]
    result["tables"] = [
        format_table(
            f"sparse: CPU µs per trace (root + child + tag), traces spaced by a loopback round trip; "
            f"median of {rounds} shuffled rounds of {block}",
            (
                "tracer", "round trip alone", "sparse: trace added", "dense: trace", "spacing adds",
                "sparse / dense", "sparse, wall", "delivered sparse / dense",
            ),
            rows,
        ),
        format_table(
            "sparse: an idle `await tracker.flush()` (nothing to export), µs per call",
            ("when", "CPU µs", "wall µs"),
            flush_rows,
        ),
    ]
    return result
