"""Fixtures shared by the whole suite."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator

import pytest

import flowtracker as ft
from flowtracker._core.patches import active
from flowtracker.integrations.stop_signals import STOP_SIGNALS


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


@pytest.fixture(autouse=True)
def restored_stop_signals() -> Iterator[None]:
    """Puts back the SIGTERM and SIGINT handlers a test replaced.

    The first request through a bare middleware in this process (a test's
    server on the main thread) arms flowtracker's stop-signal relay; left in
    place, it would outlive the test and change what the next one finds.
    """
    saved = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    yield
    for patch in active():  # flowtracker's handlers, through the registry that made them
        if patch.target.startswith("signal."):
            patch.undo()
    for signum, handler in saved.items():
        signal.signal(signum, handler)
