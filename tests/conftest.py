"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import flowtracker as ft


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
