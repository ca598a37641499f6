"""``python -m benchmarks [suite ...] [--quick|--smoke]``: runs suites, prints tables, writes JSON.

Example:
    python -m benchmarks span --quick
    python -m benchmarks span --tracers floor,flowtracker --workloads async
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import Any

from ._harness import RESULTS_DIR, Settings, default_cpu, pin, use_clock, write_result

SUITES = (
    "span", "sampling", "pipeline", "scale", "profile", "ablate", "request", "inproc",
    "otel-api", "otel-published", "sparse", "instrument", "instrument-db", "monitor", "serve",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("suites", nargs="*", choices=[*SUITES, "all", []], help="default: all")
    parser.add_argument("--quick", action="store_true", help="fewer iterations and reps (a quick re-run)")
    parser.add_argument("--smoke", action="store_true", help="tiny runs that only check the harness (CI)")
    parser.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 5, quick 3)")
    parser.add_argument(
        "--cpu", type=int, default=-1, help="CPU the in-process suites pin to (default: the last; -2: none)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    parser.add_argument(
        "--clock", choices=("cpu", "wall"), default="cpu", help="in-process suites: process CPU or wall time"
    )
    parser.add_argument(
        "--tracers", default=None, help="comma-separated subset (span tracers, request/inproc variants)"
    )
    parser.add_argument(
        "--workloads", default=None, help="comma-separated subset (span; inproc: aiohttp, asgi, *-socketpair)"
    )
    args = parser.parse_args(argv)
    suites = [s for s in args.suites if s] or ["all"]
    if "all" in suites:
        suites = list(SUITES)
    cpu = default_cpu() if args.cpu == -1 else None if args.cpu == -2 else args.cpu
    use_clock(args.clock)
    settings = Settings(quick=args.quick, smoke=args.smoke, reps=args.reps, cpu=cpu, out=args.out)
    options: dict[str, Any] = {}
    if args.tracers:
        options["tracers"] = tuple(args.tracers.split(","))
    if args.workloads:
        options["workloads"] = tuple(args.workloads.split(","))
    for name in suites:
        module = importlib.import_module(f"benchmarks.{name.replace('-', '_')}")  # otel-api: otel_api.py
        started = time.monotonic()
        if name not in ("request", "monitor"):  # these pin their server subprocesses instead
            pin(settings.cpu)
        accepted = {k: v for k, v in options.items() if k in module.run.__code__.co_varnames}
        result = module.run(settings, **accepted)
        result["seconds"] = round(time.monotonic() - started, 1)
        result["settings"] = {
            "clock": args.clock,
            "quick": settings.quick,
            "smoke": settings.smoke,
            "reps": settings.repetitions,
            "cpu": settings.cpu,
        }
        suffix = "-smoke" if settings.smoke else "-quick" if settings.quick else ""
        path = write_result(name + suffix, result, settings.out)
        for table in result.get("tables", []):
            print(table)
        print(f"[{name}: {result['seconds']} s, results in {path}]\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
