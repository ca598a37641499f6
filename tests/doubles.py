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


class ReportingSink:
    """A trace sink (what the core reports to) that keeps each span's
    ``(name, start_ns, end_ns)`` as it was when the sink was told a trace's last span ended."""

    sampling = False
    closed = False

    def __init__(self, **limits: int) -> None:
        from flowtracker._core import Limits

        self.limits = Limits(**limits)
        self.open_traces: set[object] = set()
        self.reported: list[list[tuple[str, int, int | None]]] = []

    def sample(self, trace_id: int, sampled: bool | None) -> bool:
        return sampled is not False

    def span_ended(self, state: object) -> None:
        self.reported.append([(s.name, s.start_ns, s.end_ns) for s in state.spans])  # type: ignore[attr-defined]
