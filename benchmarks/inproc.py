"""Suite ``inproc``: the request path in-process, precise enough to see 3%.

The apps of the ``request`` suite (``_servers``: a middleware root span and
3 nested spans with tags; exporters that drop), served by the real server
protocols, aiohttp's ``RequestHandler`` and uvicorn's own HTTP protocol
class for the ASGI app, and loaded by a client in the same process over an
in-memory transport (``_inproc``): 50 keep-alive connections, one request in
flight on each, as wrk runs them. Every variant is served side by side on one
event loop; the suite alternates between them in blocks of ~25 ms of CPU
(the order shuffled per round) and takes each ratio inside one round before
the median over all rounds: the variants of a round see the same machine,
whose speed changes from one second to the next when it is shared. Each
block stops its clock once its traces reached the exporter (the variant's
flush: an idle one costs 10-20 µs, under 0.1% of a block). The servers are rebuilt for
each *epoch* in a rotated order (by default as many epochs as variants):
the instance built first measured a few percent slower than an identical
one built later, and the rotation spreads that over every variant.

Variants: ``untraced``; ``floor`` (the hand-written floor tracer's
middleware); ``ft-core`` (a 10-line middleware on ``ft.start_root_span``);
``flowtracker`` (``flowtracker.aiohttp.setup`` / ``FlowTrackerMiddleware``,
default options); ``ft-noheader`` (the same without the ``traceresponse``
header); ``ft-signal`` (aiohttp only: ``ft-noheader`` plus a receiver of
``on_response_prepare`` that does nothing, the signal ``setup()`` sends its
headers from, so the header's cost splits into the signal's and the rest);
``ft-monitor`` (``flowtracker`` with the loop monitor on during its
blocks); ``otel`` (aiohttp only: OpenTelemetry's aiohttp-server
instrumentation, ``BatchSpanProcessor``); and ``control``: ``ft-core`` again,
a second instance, whose ratio to ``ft-core`` shows what two identical runs
differ by (the suite's resolution).

Workloads (``--workloads``): ``aiohttp``, ``asgi`` (default both), and the
same over ``socket.socketpair()`` with asyncio's socket transports
(``aiohttp-socketpair``, ``asgi-socketpair``). wrk stays the end-to-end
check (``request`` suite).

Targets (issue 21): ``flowtracker`` >= 95% of ``ft-core``'s requests/s (so
>= 90% of the floor's), p99 <= 1.2x the floor's; the control within 3%.

Example:
    python -m benchmarks inproc --quick
"""

from __future__ import annotations

from typing import Any

from ._harness import Settings, format_table, median, missing, percent, same_round, spread
from ._inproc import Block, app_of, run_rounds

CONNECTIONS = 50
VARIANTS = {
    "aiohttp": (
        "untraced", "floor", "ft-core", "flowtracker", "ft-noheader", "ft-signal", "ft-monitor", "otel",
        "control",
    ),
    "asgi": ("untraced", "floor", "ft-core", "flowtracker", "ft-noheader", "ft-monitor", "control"),
}
SMOKE = ("untraced", "floor", "ft-core", "flowtracker", "control")
WORKLOADS = ("aiohttp", "asgi", "aiohttp-socketpair", "asgi-socketpair")
NEEDS = {"otel": "opentelemetry.instrumentation.aiohttp_server"}


def _missing(variant: str) -> str | None:
    module = NEEDS.get(app_of(variant)[0])
    return None if module is None else missing(module)


def _percentile(values: list[int], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(share * len(ordered)))])


def _per_round(blocks: dict[str, list[Block]], of: Any) -> dict[str, list[float]]:
    return {name: [float(of(block)) for block in values] for name, values in blocks.items()}


def run_workload(settings: Settings, workload: str, variants: tuple[str, ...]) -> tuple[dict[str, Any], str]:
    """Measures the variants of one workload side by side; its JSON entry and its table."""
    kind, _, transport = workload.partition("-")
    errors = {name: reason for name in variants if (reason := _missing(name)) is not None}
    names = [name for name in variants if name not in errors]
    # Blocks of ~25 ms of CPU (an ASGI request under h11 costs about twice an aiohttp one).
    block = settings.scaled(500, 300, 20) // (2 if kind == "asgi" else 1)
    # One epoch per build position by default: which instance is built first
    # measurably changes its cost (a few percent, memory layout), so each
    # epoch builds every server afresh, in an order rotated per epoch.
    epochs = settings.reps if settings.reps is not None else settings.scaled(len(names), 3, 1)
    rounds = settings.scaled(20, 8, 2)
    warmup = settings.scaled(500, 300, 20)
    connections = CONNECTIONS if not settings.smoke else 5
    blocks: dict[str, list[Block]] = {name: [] for name in names}
    protocol = ""
    for epoch in range(epochs):
        shift = epoch % len(names)
        measured = run_rounds(
            kind,
            names[shift:] + names[:shift],
            transport=transport or "memory",
            block=block,
            rounds=rounds,
            warmup=warmup,
            connections=connections,
            seed=epoch,
        )
        protocol = measured.protocol
        for name, values in measured.blocks.items():
            blocks[name].extend(values)
    # A request's cost is its block's time per request; X's req/s relative to
    # Y's in a round is Y's cost over X's.
    cpu = _per_round(blocks, lambda b: b.cpu_ns / b.requests)
    wall = _per_round(blocks, lambda b: b.wall_ns / b.requests)
    p99 = _per_round(blocks, lambda b: _percentile(b.latencies_ns, 0.99))
    entry: dict[str, Any] = {
        "protocol": protocol,
        "transport": transport or "memory",
        "block": block,
        "epochs": epochs,
        "rounds_per_epoch": rounds,
        "connections": connections,
        "variants": {},
    }
    rows: list[tuple[Any, ...]] = []
    for name in variants:
        if name in errors:
            entry["variants"][name] = {"error": errors[name]}
            rows.append((name, errors[name], *[""] * 11))
            continue
        own = blocks[name]
        latencies = [latency for b in own for latency in b.latencies_ns]
        requests = sum(b.requests for b in own)
        statuses: dict[str, int] = {}  # str keys: as they come back from the JSON
        for b in own:
            for status, count in b.statuses.items():
                statuses[str(status)] = statuses.get(str(status), 0) + count
        traced = name != "untraced"
        delivered = sum(b.delivered for b in own)

        def vs(reference: str, values: dict[str, list[float]], name: str = name) -> float:
            return median(same_round(values, reference, name)) if reference in values else float("nan")

        result: dict[str, Any] = {
            "cpu_us_per_request": [value / 1000 for value in cpu[name]],
            "wall_us_per_request": [value / 1000 for value in wall[name]],
            "p99_ms_per_block": [value / 1e6 for value in p99[name]],
            "median_cpu_us": median(cpu[name]) / 1000,
            "rps_cpu": 1e9 / median(cpu[name]),
            "rps_wall": 1e9 / median(wall[name]),
            "rps_cpu_vs_floor": vs("floor", cpu),
            "rps_cpu_vs_ft_core": vs("ft-core", cpu),
            "rps_wall_vs_floor": vs("floor", wall),
            "rps_wall_vs_ft_core": vs("ft-core", wall),
            "p50_ms": _percentile(latencies, 0.5) / 1e6,
            "p99_ms": _percentile(latencies, 0.99) / 1e6,
            "p99_vs_floor": median(same_round(p99, name, "floor")),
            "young_gc_per_10k": 10_000 * sum(b.young_gc for b in own) / max(1, requests),
            "statuses": statuses,
            "delivered_share": delivered / requests if traced and requests else None,
            "error": None,
        }
        entry["variants"][name] = result
        rows.append(
            (
                name,
                result["median_cpu_us"],
                result["rps_cpu"],
                percent(result["rps_cpu_vs_floor"]),
                percent(result["rps_cpu_vs_ft_core"]),
                result["rps_wall"],
                percent(result["rps_wall_vs_floor"]),
                result["p50_ms"],
                result["p99_ms"],
                result["p99_vs_floor"],
                result["young_gc_per_10k"],
                "n/a" if result["delivered_share"] is None else f"{100 * result['delivered_share']:.1f}%",
                sum(count for status, count in statuses.items() if status != "200"),
            )
        )
    control = spread(same_round(cpu, "control", "ft-core"))
    ft_vs_core = spread(same_round(cpu, "flowtracker", "ft-core"))
    entry["control_cost_ratio"] = control
    entry["flowtracker_cost_over_ft_core"] = ft_vs_core
    table = format_table(
        f"inproc / {workload} ({protocol}, {transport or 'memory'} transport): {epochs} epochs x {rounds} "
        f"rounds of {block} requests per variant on {connections} connections; medians of same-round ratios",
        (
            "variant", "CPU µs/req", "req/s (CPU)", "vs floor", "vs ft-core", "req/s (wall)", "wall vs floor",
            "p50 ms", "p99 ms", "p99 x floor", "young GC /10k", "delivered", "non-200",
        ),
        rows,
    )
    if control:
        table += (
            f"\ncontrol (`ft-core` served twice): CPU cost ratio {control['median']:.3f} "
            f"(quartiles {control['q1']:.3f}-{control['q3']:.3f}; first half of the rounds "
            f"{control['first_half']:.3f}, second half {control['second_half']:.3f})\n"
        )
    if ft_vs_core:
        table += (
            f"`flowtracker` / `ft-core` CPU cost: {ft_vs_core['median']:.3f} (first half "
            f"{ft_vs_core['first_half']:.3f}, second half {ft_vs_core['second_half']:.3f})\n"
        )
    return entry, table


def run(
    settings: Settings,
    tracers: tuple[str, ...] | None = None,
    workloads: tuple[str, ...] = ("aiohttp", "asgi"),
) -> dict[str, Any]:
    """Runs the suite; returns the JSON-ready result (tables included as Markdown)."""
    unknown = [workload for workload in workloads if workload not in WORKLOADS]
    if unknown:
        raise SystemExit(f"inproc: unknown workloads {unknown}; choose from {WORKLOADS}")
    results: dict[str, Any] = {"workloads": {}}
    tables: list[str] = []
    for workload in workloads:
        variants = VARIANTS[workload.partition("-")[0]]
        if settings.smoke:
            variants = tuple(v for v in variants if v in SMOKE)
        if tracers:
            variants = tuple(v for v in variants if v in tracers or v == "untraced")
        entry, table = run_workload(settings, workload, variants)
        results["workloads"][workload] = entry
        tables.append(table)
    results["tables"] = tables
    return results
