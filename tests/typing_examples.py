"""Checked by mypy --strict (./dev test): the public API type-checks as documented."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence

import flowtracker as ft


@ft.traced
def plain(x: int) -> int:
    return x + 1


@ft.traced("named", layer="db")
async def named(x: str) -> str:
    return x


@ft.traced
def numbers() -> Iterator[int]:
    yield 1


@ft.traced
async def anumbers() -> AsyncIterator[int]:
    yield 1


class CustomExporter:
    async def export(self, traces: Sequence[ft.Trace]) -> None:
        for trace in traces:
            trace.to_json()

    async def aclose(self) -> None:
        return None


async def usage() -> int:
    exporter: ft.Exporter = CustomExporter()
    tracker = ft.Tracker(exporters=[exporter, ft.MemoryExporter()], service="orders")
    async with tracker:
        async with ft.span("FetchFromDB", db_system="postgres") as s:
            s.set_tag("rows", 3)
            ft.add_tag("db.query", "SELECT ...")
            ft.add_event("cache miss", key="u:1")
        with ft.span("sync"):
            pass
        manual: ft.Span = ft.start_span("manual")
        manual.finish()
        current: ft.Span | None = ft.current_span()
        trace_id: str | None = ft.current_trace_id()
        del current, trace_id
        value: str = await named("x")
        del value
        for _ in numbers():
            pass
        async for _ in anumbers():
            pass
    with ft.monitor_event_loop(block_threshold=0.1) as monitor:
        again: ft.LoopMonitor = ft.monitor_event_loop(0.2)
        del again
    async with ft.monitor_event_loop():
        pass
    loop_stats: ft.LoopMonitorStats = monitor.stats
    blocked: float = loop_stats.blocked_ms + loop_stats.max_block_ms
    del blocked
    stats: ft.TrackerStats = tracker.stats
    return plain(stats.traces_completed) + stats.exporters["memory"].exported + loop_stats.blocks
