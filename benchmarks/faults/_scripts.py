"""Traces made without a server, run as a subprocess by the fault suite.

``python -m benchmarks.faults._scripts threads N``: an explicit
``Tracker(exporters=[$FAULTS_EXPORTER])`` on an asyncio loop (``async with
tracker``); N traces, each ended in one of 16 pool threads while the loop's
own thread is busy waiting for the pool (a blocking call in a handler), so
every trace is handed over while the loop cannot take it.

``python -m benchmarks.faults._scripts sync N``: zero configuration (the
default tracker, ``FLOWTRACKER_EXPORTERS``); N traces at full speed in a plain
loop, then the interpreter exits.

In both, each trace is a root ``job`` tagged ``req=<i>`` with one child
``step``. The side file (:mod:`._report`) says how many were made and what
the tracker counted.

``python -m benchmarks.faults._scripts long-lived N``: one root ``consume`` (a
consumer loop) that outlives ``max_trace_age`` (0.25 s here, 300 s by default)
many times over; under it N children ``message`` tagged ``req=<i>``, one every
2 ms, each with a child ``handle``. The root is exported unfinished once; the
messages after that go out in follow-up records.
"""

from __future__ import annotations

import asyncio
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from ._report import Report

REPORT = Report.from_env()  # before flowtracker: its exit report must run after flowtracker's exit flush

import flowtracker as ft  # noqa: E402  (after the report's exit hook, see above)

POOL_THREADS = 16
#: The long-lived scenario's ``max_trace_age`` and pause between messages (seconds).
LONG_LIVED_AGE = 0.25
MESSAGE_PAUSE = 0.002


def one_trace(number: int) -> None:
    """One trace: a root tagged with its number and a child."""
    with ft.span("job", req=number), ft.span("step"):
        pass


def threads(count: int) -> None:
    """``count`` traces ended in a 16-thread pool while the tracker's loop is busy."""
    asyncio.run(_threads(count))


async def _threads(count: int) -> None:
    tracker = ft.Tracker(exporters=[os.environ["FAULTS_EXPORTER"]], service="faults")
    REPORT.watch(tracker)
    REPORT.start()
    async with tracker:
        with ThreadPoolExecutor(POOL_THREADS) as pool:
            for _ in pool.map(one_trace, range(count)):  # blocks the loop until the pool is done
                pass
    REPORT.handled = count
    REPORT.write("shutdown")


def sync(count: int) -> None:
    """``count`` traces in a plain loop to the default tracker; flushed by its exit hook."""
    REPORT.default = True
    REPORT.start()
    for number in range(count):
        one_trace(number)
    REPORT.handled = count


def long_lived(count: int) -> None:
    """A root that outlives ``max_trace_age``, with ``count`` children spread over its life."""
    asyncio.run(_long_lived(count))


async def _long_lived(count: int) -> None:
    exporters = [os.environ["FAULTS_EXPORTER"]]
    tracker = ft.Tracker(exporters=exporters, service="faults", max_trace_age=LONG_LIVED_AGE)
    REPORT.watch(tracker)
    REPORT.start()
    async with tracker, ft.span("consume"):
        for number in range(count):
            async with ft.span("message", req=number):
                with ft.span("handle"):
                    pass
            await asyncio.sleep(MESSAGE_PAUSE)
    REPORT.handled = count
    REPORT.write("shutdown")


def main(argv: list[str] | None = None) -> None:
    kind, count = argv if argv is not None else sys.argv[1:]
    {"threads": threads, "sync": sync, "long-lived": long_lived}[kind](int(count))


if __name__ == "__main__":
    main()
