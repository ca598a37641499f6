"""``ConsoleExporter``: one ``FLOW_LOG: <json>`` line per trace, for log pipelines.

Loki finds them with ``{app="myapp"} |= "FLOW_LOG:"``; ``flowtracker tree -``
reads them back from any log. Each batch is written with a single ``write``
call, so lines from concurrent writers never interleave mid-trace.

Example:
    >>> import io, flowtracker as ft
    >>> out = io.StringIO()
    >>> exporter = ft.ConsoleExporter(stream=out)
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from .._wire.batch import BatchFailures

if TYPE_CHECKING:
    from .._wire.record import Trace


class ConsoleExporter:
    """Writes each trace as ``prefix + compact JSON + newline``.

    Args:
        prefix: Written before each trace. Default ``"FLOW_LOG: "``.
        stream: A text stream. Default: whatever ``sys.stdout`` is at write
            time (so pytest's capture and redirections work).

    The write is synchronous, like ``logging``'s stream handler; for a stdout
    that may stall, prefer :class:`~flowtracker.FileExporter`.
    """

    name = "console"

    def __init__(self, prefix: str = "FLOW_LOG: ", stream: TextIO | None = None) -> None:
        self.prefix = prefix
        self.stream = stream

    async def export(self, traces: Sequence[Trace]) -> None:
        prefix = self.prefix
        failures = BatchFailures(len(traces))
        lines = failures.each(traces, lambda trace: f"{prefix}{trace.to_json().decode()}\n")
        if lines:
            stream = self.stream if self.stream is not None else sys.stdout
            stream.write("".join(lines))
            stream.flush()
        failures.raise_if_any()

    async def aclose(self) -> None:
        stream = self.stream if self.stream is not None else sys.stdout
        with contextlib.suppress(ValueError, OSError):  # closed at interpreter exit
            stream.flush()
