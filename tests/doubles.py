"""Test doubles shared by the tests: real exporters with scripted behaviour."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import flowtracker as ft


class SlowExporter:
    """Takes `delay` seconds per batch (a real sleep, not a mock)."""

    def __init__(self, delay: float, name: str = "slow") -> None:
        self.delay, self.name, self.batches = delay, name, []

    async def export(self, traces: Sequence[ft.Trace]) -> None:
        await asyncio.sleep(self.delay)
        self.batches.append(len(traces))

    async def aclose(self) -> None:
        pass


class RaisingExporter:
    name = "raising"

    async def export(self, traces: Sequence[ft.Trace]) -> None:
        raise ConnectionError("peer down")

    async def aclose(self) -> None:
        raise RuntimeError("close failed too")


class StalledExporter:
    """Never returns until released."""

    name = "stalled"

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def export(self, traces: Sequence[ft.Trace]) -> None:
        await self.release.wait()

    async def aclose(self) -> None:
        pass


def accounted(stats: ft.TrackerStats) -> None:
    """Every trace is accounted for, per exporter."""
    for name, lane in stats.exporters.items():
        total = lane.exported + lane.failed + lane.dropped + lane.queued
        assert total == stats.traces_completed, (name, lane, stats.traces_completed)
