"""Helpers shared by the event-loop monitor's test files."""

# ruff: noqa: ASYNC251  (blocking the loop is the point)

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

import flowtracker as ft
from flowtracker._core import Span
from flowtracker.loop_monitor import BLOCKED_EVENT

PLAIN_HANDLE_RUN = asyncio.events.Handle.__dict__["_run"]
PLAIN_ENTER = Span.__dict__["__enter__"]
PLAIN_EXIT = Span.__dict__["__exit__"]
#: This file, as block stacks name it.
HELPERS_FILE = Path(__file__).resolve()


def line_in(path: Path, marker: str) -> int:
    """The line number of the one line of ``path`` ending with ``# <marker>``."""
    lines = path.read_text().splitlines()
    found = [number for number, text in enumerate(lines, 1) if text.rstrip().endswith(f"# {marker}")]
    assert len(found) == 1, marker
    return found[0]


def spin(seconds: float) -> None:
    """Holds the loop (and the CPU) for at least ``seconds``."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:  # spins here
        pass


def spin_frames() -> set[str]:
    """The stack lines :func:`spin` can be caught on (the loop's test or its body)."""
    line = line_in(HELPERS_FILE, "spins here")
    return {f"{HELPERS_FILE}:{line} in spin", f"{HELPERS_FILE}:{line + 1} in spin"}


def by_name(traces: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {span["name"]: span for trace in traces for span in trace["spans"]}


def events_named(traces: list[dict[str, Any]], name: str) -> list[tuple[str, dict[str, Any]]]:
    """``(span name, event)`` for every event called ``name`` in ``traces``."""
    return [
        (span["name"], event)
        for trace in traces
        for span in trace["spans"]
        for event in span.get("events", ())
        if event["name"] == name
    ]


def blocked_events(traces: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """``(span name, event)`` for every ``event_loop.blocked`` event in ``traces``."""
    return events_named(traces, BLOCKED_EVENT)


def patched() -> bool:
    return asyncio.events.Handle.__dict__["_run"] is not PLAIN_HANDLE_RUN


@pytest.fixture(autouse=True)
def nothing_left_patched() -> Iterator[None]:
    """Every test leaves asyncio and the span class as it found them."""
    yield
    assert not patched()
    assert Span.__dict__["__enter__"] is PLAIN_ENTER
    assert Span.__dict__["__exit__"] is PLAIN_EXIT


async def settle() -> None:
    """Lets the callback that started a monitor end: accounting starts with the next one."""
    await asyncio.sleep(0)


def recorded_run(path: Path, run: Callable[[Coroutine[Any, Any, Any]], Any]) -> ft.LoopMonitorStats:
    """A real run (``run``: ``asyncio.run`` or ``uvloop.run``) with the monitor on: ``GET /users``
    awaits a query while ``GET /report`` renders a PDF for 0.3 s; traces go to the file ``path``."""

    async def users() -> None:
        async with ft.span("GET /users"), ft.span("SELECT users"):
            await asyncio.sleep(0.5)

    async def report() -> None:
        await asyncio.sleep(0.1)
        async with ft.span("GET /report"):
            with ft.span("render_pdf"):
                time.sleep(0.3)  # renders the PDF

    async def main() -> ft.LoopMonitorStats:
        async with ft.Tracker(exporters=[ft.FileExporter(path)], service="shop"):
            with ft.monitor_event_loop(0.1) as monitor:
                await asyncio.sleep(0.02)
                await asyncio.gather(users(), report())
                await asyncio.sleep(0.02)
        return monitor.stats

    stats: ft.LoopMonitorStats = run(main())
    return stats
