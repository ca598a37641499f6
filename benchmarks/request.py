"""Suite ``request``: requests/s and p50/p99 of a small traced app under wrk.

The apps (``_servers``): a middleware root span plus 3 nested spans with tags
in the handler, exporters that drop. Each variant runs in its own server
process pinned to one CPU, with wrk (1 thread, 50 connections) pinned to the
other; variants are interleaved over the repetitions and restarted for each.

aiohttp: untraced, the floor tracer's middleware, ``flowtracker.aiohttp.setup``,
the bare ``flowtracker.aiohttp.middleware()`` (``ft-middleware``), ``setup``
with ``traceresponse=False`` (``ft-noheader``: the floor sends no header), ``ft-core``
(a 10-line middleware on ``ft.start_root_span``: the core's cost without the
integration's), OpenTelemetry's aiohttp-server
instrumentation, aiozipkin. ASGI under uvicorn (h11, asyncio loop): untraced,
floor, ``flowtracker.asgi.FlowTrackerMiddleware`` (also ``ft-noheader``), ``ft-core``.

Targets (issue 6): flowtracker >= 90% of the floor's requests/s, p99 within
1.2x the floor's. ``ft-monitor`` is ``flowtracker`` with the event-loop monitor
on (``monitor_loop=True``); issue 13's target: >= 90% of ``flowtracker``'s req/s.

Example:
    python -m benchmarks request --quick
"""

from __future__ import annotations

import shutil
from typing import Any

from ._harness import Settings, format_table, interleaved, median, missing, percent, ratios
from ._load import WRK, LoadResult, run_server_load
from ._servers import AIOHTTP_VARIANTS, ASGI_VARIANTS

CONNECTIONS = 50
NEEDS = {
    "flowtracker": {"aiohttp": "flowtracker.aiohttp", "asgi": "flowtracker.asgi"},
    "ft-monitor": {"aiohttp": "flowtracker.aiohttp", "asgi": "flowtracker.asgi"},
    "ft-middleware": {"aiohttp": "flowtracker.aiohttp"},
    "ft-noheader": {"aiohttp": "flowtracker.aiohttp", "asgi": "flowtracker.asgi"},
    "otel": {"aiohttp": "opentelemetry.instrumentation.aiohttp_server"},
    "aiozipkin": {"aiohttp": "aiozipkin"},
    "ft-core": {"asgi": "uvicorn"},
    "floor": {"asgi": "uvicorn"},
    "untraced": {"asgi": "uvicorn"},
}


def _missing(kind: str, variant: str) -> str | None:
    module = NEEDS.get(variant, {}).get(kind)
    return None if module is None else missing(module)


def run_kind(
    settings: Settings, kind: str, variants: tuple[str, ...], seconds: int, warmup: int, reps: int
) -> dict[str, Any]:
    """Measures every variant of one server kind; returns samples, medians, ratios, table."""
    errors = {v: reason for v in variants if (reason := _missing(kind, v)) is not None}
    runs: dict[str, list[LoadResult]] = {v: [] for v in variants}

    def measure(variant: str, rep: int) -> float:
        if variant in errors:
            return float("nan")
        try:
            result = run_server_load(kind, variant, seconds=seconds, warmup=warmup, connections=CONNECTIONS)
        except RuntimeError as error:
            errors[variant] = f"failed: {error}"[:300]
            return float("nan")
        runs[variant].append(result)
        return result.rps

    rps = interleaved(variants, reps, measure)
    p99 = {v: [r.p99_ms for r in runs[v]] for v in variants}
    vs_untraced = ratios(rps, "untraced") if "untraced" in rps else {}
    vs_floor = ratios(rps, "floor") if "floor" in rps else {}
    vs_ft = ratios(rps, "flowtracker") if "flowtracker" in rps else {}
    p99_vs_floor = ratios(p99, "floor") if "floor" in p99 else {}
    rows: list[tuple[Any, ...]] = []
    entry: dict[str, Any] = {}
    for variant in variants:
        results = runs[variant]
        entry[variant] = {
            "rps": [r.rps for r in results],
            "p50_ms": [r.p50_ms for r in results],
            "p99_ms": [r.p99_ms for r in results],
            "http_errors": sum(r.errors for r in results),
            "median_rps": median([r.rps for r in results]),
            "median_p50_ms": median([r.p50_ms for r in results]),
            "median_p99_ms": median([r.p99_ms for r in results]),
            "rps_vs_untraced": vs_untraced.get(variant),
            "rps_vs_floor": vs_floor.get(variant),
            "rps_vs_flowtracker": vs_ft.get(variant),
            "p99_vs_floor": p99_vs_floor.get(variant),
            "error": errors.get(variant),
        }
        if variant in errors and not results:
            rows.append((variant, errors[variant], "", "", "", "", "", "", ""))
            continue
        rows.append(
            (
                variant,
                entry[variant]["median_rps"],
                entry[variant]["median_p50_ms"],
                entry[variant]["median_p99_ms"],
                percent(vs_untraced.get(variant)),
                percent(vs_floor.get(variant)),
                percent(vs_ft.get(variant)),
                p99_vs_floor.get(variant, float("nan")),
                entry[variant]["http_errors"],
            )
        )
    table = format_table(
        f"request / {kind}: wrk -t1 -c{CONNECTIONS} -d{seconds}s, medians of {reps} interleaved reps",
        (
            "variant", "req/s", "p50 ms", "p99 ms", "vs untraced", "vs floor", "vs flowtracker",
            "p99 x floor", "HTTP errors",
        ),
        rows,
    )
    return {"variants": entry, "table": table, "seconds": seconds, "connections": CONNECTIONS}


def run(settings: Settings, tracers: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Runs the suite for aiohttp and ASGI; returns the JSON-ready result."""
    if not shutil.which(WRK) and not shutil.which("wrk"):
        message = "wrk is not installed (Debian: apt-get install wrk)"
        return {"error": message, "tables": [f"### request\n\n{message}\n"]}
    seconds = settings.scaled(5, 2, 1)
    warmup = settings.scaled(1, 1, 0)
    reps = settings.reps or settings.scaled(3, 2, 1)
    if settings.smoke:
        aiohttp_variants: tuple[str, ...] = ("untraced", "flowtracker")
        asgi_variants: tuple[str, ...] = ("untraced", "flowtracker")
    else:
        aiohttp_variants = tuple(v for v in AIOHTTP_VARIANTS if v != "floor-cyclic")
        asgi_variants = ASGI_VARIANTS
    if tracers:
        aiohttp_variants = tuple(v for v in aiohttp_variants if v in tracers or v == "untraced")
        asgi_variants = tuple(v for v in asgi_variants if v in tracers or v == "untraced")
    result: dict[str, Any] = {"kinds": {}}
    tables = []
    for kind, variants in (("aiohttp", aiohttp_variants), ("asgi", asgi_variants)):
        measured = run_kind(settings, kind, variants, seconds, warmup, reps)
        tables.append(measured.pop("table"))
        result["kinds"][kind] = measured
    result["tables"] = tables
    return result
