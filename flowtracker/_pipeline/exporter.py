"""The exporter protocol: what the tracker needs from anything that ships traces.

An exporter is any object with two coroutine methods; no base class needed.
``export`` receives a batch of finished traces and returns once they are
handled (raising counts the whole batch as failed, raising
:class:`~flowtracker._wire.batch.PartialExportError` only the traces it
names; the tracker's lane logs failures, at most a summary a minute, and
carries on). ``aclose`` releases resources; the
tracker calls it once, after the last ``export``. An optional ``name``
attribute names the exporter in ``Tracker.stats``.

Both run on the tracker's event loop, in the exporter's own lane: a slow
exporter delays nobody but itself. Blocking calls belong in a thread
(``anyio.to_thread.run_sync``).

Example:
    >>> class PrintExporter:
    ...     name = "print"
    ...     async def export(self, traces):
    ...         for trace in traces:
    ...             print(trace.to_json().decode())
    ...     async def aclose(self):
    ...         pass
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .._wire.record import Trace


@runtime_checkable
class Exporter(Protocol):
    """Receives finished traces in batches; see the module docstring."""

    async def export(self, traces: Sequence[Trace]) -> None:
        """Handles one batch; raise to count it as failed."""
        ...

    async def aclose(self) -> None:
        """Flushes and releases resources; called once, last."""
        ...
