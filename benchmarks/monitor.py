"""Suite ``monitor``: what the event-loop monitor costs, on asyncio and on uvloop (issue 18).

Targets:

* uvloop, monitor on vs off: request throughput >= 95% (no per-callback hook
  there: a heartbeat timer, the watchdog thread, one call per span end);
* asyncio: per span <= 1.3x off, and request throughput >= 90% of off;
* stalled time adds nothing per span: it is worked out once per trace, when
  it completes. Measured here as that completion hook's cost per trace.

Three parts:

* ``requests``: the ``request`` suite's apps, ``flowtracker`` (monitor off)
  and ``ft-monitor`` (``monitor_loop=True``), under aiohttp and uvicorn, each
  on asyncio's loop and on uvloop; wrk as in that suite, variants interleaved,
  ``on / off`` the median of same-rep ratios. Besides req/s, the server's CPU
  time per request (all its threads): the inverse of its capacity on its one
  CPU, which other processes on a shared machine move far less than the
  request rate; ``capacity on / off`` is ``off CPU / on CPU``;
* ``span``: the ``span`` suite's ``flowtracker`` and ``ft-monitor`` on the
  ``async`` and ``sync`` workloads (asyncio), net of the empty loop;
* ``completion``: ns per trace of the stalled-time hook on a finished 4-span
  trace while the monitor's block record holds 256 blocks, none during the
  trace (the common case), and with no monitor (the hook not registered).

Example:
    python -m benchmarks monitor --quick
"""

from __future__ import annotations

import shutil
import time
from typing import Any

from . import span as span_suite
from ._harness import Settings, format_table, interleaved, median, percent, ratios
from ._load import WRK, LoadResult, run_server_load

KINDS = ("aiohttp", "asgi")
LOOPS = ("asyncio", "uvloop")
CONNECTIONS = 50
SPAN_WORKLOADS = ("async", "sync")


def _requests(settings: Settings) -> tuple[dict[str, Any], str]:
    seconds = settings.scaled(5, 2, 1)
    warmup = settings.scaled(1, 1, 0)
    rows: list[tuple[Any, ...]] = []
    entry: dict[str, Any] = {}
    for kind in KINDS:
        for loop in LOOPS:
            variants = ("flowtracker", "ft-monitor")
            runs: dict[str, list[LoadResult]] = {v: [] for v in variants}

            def measure(
                variant: str, rep: int, kind: str = kind, loop: str = loop, runs: dict[str, Any] = runs
            ) -> float:
                options: dict[str, Any] = {"seconds": seconds, "warmup": warmup, "connections": CONNECTIONS}
                result = run_server_load(kind, variant, extra=("--loop", loop), **options)
                runs[variant].append(result)
                return result.rps

            rps = interleaved(variants, settings.repetitions, measure)
            on_off = ratios(rps, "flowtracker")["ft-monitor"]
            cpu = {v: [r.cpu_us_per_request for r in runs[v]] for v in variants}
            pairs = zip(cpu["flowtracker"], cpu["ft-monitor"], strict=True)
            capacity = median([off / on for off, on in pairs])
            entry[f"{kind}/{loop}"] = {
                "rps": rps,
                "p99_ms": {v: [r.p99_ms for r in runs[v]] for v in variants},
                "cpu_us_per_request": cpu,
                "on_vs_off": on_off,
                "capacity_on_vs_off": capacity,
            }
            rows.append(
                (
                    kind,
                    loop,
                    median(rps["flowtracker"]),
                    median(rps["ft-monitor"]),
                    percent(on_off),
                    median(cpu["flowtracker"]),
                    median(cpu["ft-monitor"]),
                    percent(capacity),
                    "95%" if loop == "uvloop" else "90%",
                )
            )
    table = format_table(
        f"monitor / requests: monitor off vs on, wrk -t1 -c{CONNECTIONS} -d{seconds}s "
        f"(medians of {settings.repetitions} interleaved reps; ratios: medians of same-rep ratios)",
        (
            "server", "loop", "off req/s", "on req/s", "req/s on / off", "off CPU µs/req", "on CPU µs/req",
            "capacity on / off", "target",
        ),
        rows,
    )  # fmt: skip
    return entry, table


def _spans(settings: Settings) -> tuple[dict[str, Any], str]:
    n = settings.scaled(20_000, 5_000, 200)
    rows: list[tuple[Any, ...]] = []
    entry: dict[str, Any] = {}
    for workload in SPAN_WORKLOADS:
        _, net, _, _ = span_suite.measure_net(
            ("none", "flowtracker", "ft-monitor"), settings.repetitions, span_suite.measure_once, workload, n
        )
        on_off = ratios(net, "flowtracker")["ft-monitor"]
        entry[workload] = {"ns_per_span_net": net, "on_vs_off": on_off}
        rows.append((workload, median(net["flowtracker"]), median(net["ft-monitor"]), on_off, "<= 1.3"))
    table = format_table(
        f"monitor / span: ns per span net of the empty loop, asyncio (median of {settings.repetitions} reps)",
        ("workload", "off ns", "on ns", "on / off", "target"),
        rows,
    )
    return entry, table


def _completion(settings: Settings) -> tuple[dict[str, Any], str]:
    import flowtracker as ft
    from flowtracker.loop_monitor._blocks import RECENT_BLOCKS, Block, BlockRecord, past_block
    from flowtracker.loop_monitor._stalled import forget, keep, stall
    from flowtracker.testing import capture_traces

    n = settings.scaled(50_000, 10_000, 200)
    spans: list[Any] = []
    with capture_traces():
        with ft.span("blocker") as blocker:
            pass
        with ft.span("GET /users") as root:
            spans.append(root)
            for name in ("auth", "SELECT users", "render"):
                with ft.span(name) as child:
                    spans.append(child)
    record = BlockRecord()
    for start in range(RECENT_BLOCKS):  # a full record, every block before the trace
        record.recent.append(past_block(Block(start, 1, blocker, "/srv/app.py:1 in f")))

    def measure(variant: str, rep: int) -> float:
        keep(record)
        try:
            start = time.perf_counter_ns()
            for _ in range(n):
                stall(spans)
            return (time.perf_counter_ns() - start) / n
        finally:
            forget(record)

    samples = interleaved(("hook",), settings.repetitions, measure)
    table = format_table(
        f"monitor / completion: ns per finished trace for the stalled-time hook, {len(spans)} spans, "
        f"{RECENT_BLOCKS} recent blocks none during it (median of {settings.repetitions} reps)",
        ("case", "ns per trace"),
        [("no block during the trace", median(samples["hook"]))],
    )
    return {"ns_per_trace": samples["hook"]}, table


def run(settings: Settings) -> dict[str, Any]:
    """Runs the suite; returns the JSON-ready result."""
    result: dict[str, Any] = {}
    tables: list[str] = []
    if shutil.which(WRK) or shutil.which("wrk"):
        result["requests"], table = _requests(settings)
        tables.append(table)
    else:
        result["requests"] = {"error": "wrk is not installed (Debian: apt-get install wrk)"}
    result["span"], table = _spans(settings)
    tables.append(table)
    result["completion"], table = _completion(settings)
    tables.append(table)
    result["tables"] = tables
    return result
