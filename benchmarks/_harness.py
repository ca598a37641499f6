"""What every suite shares: interleaved repetitions, medians, tables, JSON.

A suite measures several *variants* (tracers) of one *workload*. Repetitions
are interleaved (rep 1: A B C, rep 2: B C A, ...) so slow drift of the
machine hits every variant alike, and each ratio is computed inside one
repetition (variant / reference of the same rep) before taking the median of
the ratios: absolute numbers drift on a shared machine, same-rep ratios hold.

Example:
    >>> from benchmarks._harness import median
    >>> median([3.0, 1.0, 2.0])
    2.0
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib.util
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

_T = TypeVar("_T")

RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: The clock the in-process suites time with (``--clock``). CPU time by default:
#: on a shared machine a pinned benchmark still loses its core to other
#: processes now and then, which doubles wall times at random while the
#: process's CPU time (all its threads: OpenTelemetry's export thread and
#: the file exporter's worker threads count) stays within a few percent.
_clocks = {"cpu": time.process_time_ns, "wall": time.perf_counter_ns}
clock_name = "cpu"


def clock() -> int:
    """Nanoseconds on the selected clock (see ``use_clock``)."""
    return _clocks[clock_name]()


def use_clock(name: str) -> None:
    """Selects ``"cpu"`` (process CPU time, the default) or ``"wall"`` for the in-process suites."""
    global clock_name
    if name not in _clocks:
        raise ValueError(f"unknown clock {name!r}")
    clock_name = name


@dataclasses.dataclass(frozen=True)
class Settings:
    """How much to measure.

    Attributes:
        quick: Fewer iterations and repetitions (a re-run in well under a minute).
        smoke: Tiny everything, only checks the harness works (CI).
        reps: Interleaved repetitions (default: 5, quick 3, smoke 1).
        cpu: The CPU the in-process suites pin themselves to (None: not pinned).
        out: Directory for the JSON results.
    """

    quick: bool = False
    smoke: bool = False
    reps: int | None = None
    cpu: int | None = None
    out: Path = RESULTS_DIR

    @property
    def repetitions(self) -> int:
        if self.reps is not None:
            return self.reps
        return 1 if self.smoke else 3 if self.quick else 5

    def scaled(self, full: int, quick: int, smoke: int) -> int:
        """Picks an iteration count for the current mode."""
        return smoke if self.smoke else quick if self.quick else full


def median(values: Sequence[float]) -> float:
    """The median (NaN for no values)."""
    return statistics.median(values) if values else float("nan")


def interleaved(
    variants: Sequence[str], reps: int, measure: Callable[[str, int], float]
) -> dict[str, list[float]]:
    """Calls ``measure(variant, rep)`` ``reps`` times per variant, order rotated per rep."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    for rep in range(reps):
        rotated = order[rep % len(order) :] + order[: rep % len(order)]
        for name in rotated:
            gc.collect()
            samples[name].append(measure(name, rep))
    return samples


async def shuffled_rounds(
    names: Sequence[str], rounds: int, seed: int, run_block: Callable[[str], Awaitable[_T]]
) -> dict[str, list[_T]]:
    """Runs ``await run_block(name)`` once per name per round, the order shuffled per round.

    For variants that live side by side in one process: a round takes a
    fraction of a second, so every variant of a round sees the same machine.
    The order is shuffled (``random.Random(seed)``), not rotated: a block runs
    measurably faster after a block of the same library's code (warm caches),
    so no variant may always follow the same one.
    """
    results: dict[str, list[_T]] = {name: [] for name in names}
    order = list(names)
    shuffle = random.Random(seed).shuffle
    for _ in range(rounds):
        shuffle(order)
        for name in order:
            results[name].append(await run_block(name))
    return results


def same_round(values: dict[str, list[float]], numerator: str, denominator: str) -> list[float]:
    """``numerator / denominator`` in each round (or repetition) where both were measured."""
    if numerator not in values or denominator not in values:
        return []
    return [a / b for a, b in zip(values[numerator], values[denominator], strict=False) if b and a == a]


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles, and the median of each half (in order) of a list of same-round ratios."""
    if not values:
        return {}
    ordered = sorted(values)
    half = len(values) // 2
    return {
        "median": median(values),
        "q1": ordered[len(ordered) // 4],
        "q3": ordered[(3 * len(ordered)) // 4],
        "first_half": median(values[:half]) if half else float("nan"),
        "second_half": median(values[half:]),
    }


def ratios(samples: dict[str, list[float]], reference: str) -> dict[str, float]:
    """Median over reps of ``variant / reference`` (same rep), per variant."""
    base = samples.get(reference) or []
    out: dict[str, float] = {}
    for name, values in samples.items():
        pairs = [value / ref for value, ref in zip(values, base, strict=False) if ref and value == value]
        out[name] = median(pairs) if pairs else float("nan")
    return out


def percent(value: float | None) -> str:
    """``0.9`` as ``"90%"``; ``"n/a"`` for None or NaN."""
    if value is None or value != value:
        return "n/a"
    return f"{100 * value:.0f}%"


def pin(cpu: int | None) -> int | None:
    """Pins this process to ``cpu`` (None: leaves it); returns the CPU pinned to."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        return None
    return cpu


def default_cpu() -> int | None:
    """The last CPU this process may run on (the span suites pin themselves there)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    return max(os.sched_getaffinity(0))


def format_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (so RESULTS.md can quote the output as is)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            if value != value:
                return "n/a"
            if abs(value) >= 100:
                return f"{value:,.0f}"
            if abs(value) >= 10:
                return f"{value:.1f}"
            return f"{value:.2f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    text = [[cell(value) for value in row] for row in rows]
    widths = [max([len(column)] + [len(row[i]) for row in text]) for i, column in enumerate(columns)]
    lines = [f"### {title}", ""]
    lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=False)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in text:
        lines.append("| " + " | ".join(v.rjust(w) for v, w in zip(row, widths, strict=False)) + " |")
    return "\n".join(lines) + "\n"


def machine() -> dict[str, Any]:
    """The machine and software the numbers come from."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        info["loadavg"] = os.getloadavg()
    try:
        root = Path(__file__).resolve().parent.parent
        info["git"] = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    for package in ("anyio", "orjson", "aiohttp", "uvicorn", "opentelemetry-sdk", "aiozipkin"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            info[package] = None
    return info


def write_result(name: str, payload: dict[str, Any], out: Path) -> Path:
    """Writes ``payload`` (plus the machine) as ``out/<name>.json``; returns the path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    document = {"suite": name, "machine": machine(), **payload}
    path.write_text(json.dumps(document, indent=2, sort_keys=False, default=str) + "\n")
    return path


def missing(module: str) -> str | None:
    """Why ``module`` cannot be imported (``"unavailable: ..."``), or None when it can."""
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    return None if found else f"unavailable: {module} is not importable"


def unavailable(error: BaseException) -> str:
    """A short reason a variant could not run (a missing package, usually)."""
    return f"unavailable: {type(error).__name__}: {error}"
