"""Fixtures shared by the whole suite."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator

import pytest

import flowtracker as ft
from flowtracker._core.patches import active


@pytest.fixture(autouse=True)
def stop_signal_handlers_restored() -> Iterator[None]:
    """Puts SIGTERM and SIGINT back as they were after each test.

    An app started by its first request (no startup hook ran) arms
    flowtracker's flush-on-stop handlers for the rest of the process, as it
    should in a server; in this process, one test's handlers must not be
    what the next test finds.
    """
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    for patch in active():
        if patch.target.startswith("signal."):
            patch.undo()
    for signum, handler in saved.items():
        if signal.getsignal(signum) is not handler:
            signal.signal(signum, handler)


@pytest.fixture
def memory() -> ft.MemoryExporter:
    """A fresh MemoryExporter."""
    return ft.MemoryExporter()


@pytest.fixture
async def tracker(memory: ft.MemoryExporter) -> AsyncIterator[ft.Tracker]:
    """A Tracker exporting to ``memory``, running on the test's loop and bound
    to the test's context (spans in the test report to it); closed afterwards."""
    async with ft.Tracker(exporters=[memory], service="test") as running:
        yield running
