"""``MemoryExporter``: keeps traces in a list, for tests and notebooks.

Example:
    >>> import asyncio, flowtracker as ft
    >>> memory = ft.MemoryExporter()
    >>> async def main():
    ...     async with ft.Tracker(exporters=[memory]):
    ...         with ft.span("work", n=1):
    ...             pass
    >>> asyncio.run(main())
    >>> memory.traces[0]["spans"][0]["tags"]
    {'n': 1}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from .._wire.batch import BatchFailures

if TYPE_CHECKING:
    from .._wire.record import Trace


class MemoryExporter:
    """Collects exported traces.

    Attributes:
        traces: Each trace as a dict, decoded from exactly the JSON other
            exporters write (so assertions see the real wire format).
        records: The :class:`~flowtracker.Trace` objects themselves.
    """

    name = "memory"

    def __init__(self) -> None:
        self.traces: list[dict[str, Any]] = []
        self.records: list[Trace] = []

    async def export(self, traces: Sequence[Trace]) -> None:
        failures = BatchFailures(len(traces))
        for decoded, trace in failures.each(traces, _decoded):
            self.traces.append(decoded)
            self.records.append(trace)
        failures.raise_if_any()

    async def aclose(self) -> None:
        pass

    def clear(self) -> None:
        """Forgets everything collected so far."""
        self.traces.clear()
        self.records.clear()


def _decoded(trace: Trace) -> tuple[dict[str, Any], Trace]:
    return orjson.loads(trace.to_json()), trace
