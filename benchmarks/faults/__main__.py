"""``python -m benchmarks.faults [--quick] [--scenario NAME ...]``: runs fault scenarios, prints the table.

Example:
    python -m benchmarks.faults --quick
    python -m benchmarks.faults --scenario signals --scenario outage-webhook
    python -m benchmarks.faults --record benchmarks/results/faults-before.md
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time
from pathlib import Path

from .._harness import machine
from ._row import Row, table
from .scenarios import SCENARIOS, Settings, run_bounded, select


async def run_all(names: list[str], settings: Settings) -> list[Row]:
    """Runs the chosen scenarios one after another, each within its bound."""
    rows = []
    for scenario in select(names):
        started = time.monotonic()
        row = await run_bounded(scenario, settings)
        seconds = time.monotonic() - started
        print(f"[{scenario.name}: {row.verdict} in {seconds:.1f} s]", file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def record(path: Path, text: str, argv: list[str], seconds: float) -> None:
    """Writes the table with the command, date and machine it came from."""
    info = machine()
    load = " ".join(f"{value:.1f}" for value in info.get("loadavg", ()))
    header = [
        "# Fault suite results",
        "",
        f"Command: `./dev faults {shlex.join(argv)}` (= `python -m benchmarks.faults {shlex.join(argv)}`)",
        f"Date: {info['time']}; commit {info.get('git', '?')}; Python {info['python']};"
        f" {info['cpus']} CPUs ({info.get('cpu_model', '?')}); load average {load};"
        f" aiohttp {info.get('aiohttp')}, uvicorn {info.get('uvicorn')}; {seconds:.0f} s in all.",
        "",
        "Columns: requests sent (traces made), answered 2xx, traces written of those, dropped or",
        "failed as counted by the tracker's own stats, lost (missing and not counted), duplicate",
        "records, corrupt lines, stop signal to exit, where the counters came from. See docs/reliability.md.",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(header) + text)


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faults", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, one boot each, shorter bounds")
    parser.add_argument(
        "--scenario", action="append", default=[], help="a scenario or group name (repeatable; default: all)"
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--record", type=Path, default=None, help="also write the table to this file")
    parser.add_argument("--strict", action="store_true", help="exit 1 unless every row passed")
    args = parser.parse_args(arguments)
    if args.list:
        for scenario in SCENARIOS:
            print(f"{scenario.name:30} {scenario.group:13} {scenario.about}")
        return 0
    names = [name for value in args.scenario for name in value.split(",") if name]
    try:
        select(names)
    except ValueError as error:
        parser.error(str(error))
    started = time.monotonic()
    rows = asyncio.run(run_all(names, Settings(quick=args.quick)))
    seconds = time.monotonic() - started
    text = table(rows, "Fault suite" + (" (quick)" if args.quick else ""))
    print(text)
    print(f"[{len(rows)} scenarios in {seconds:.0f} s]")
    if args.record is not None:
        record(args.record, text, arguments, seconds)
    return 1 if args.strict and not all(row.passed for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
