"""``LoggingExporter``: one stdlib ``logging`` record per trace.

The heir of the Go library's slog exporter, without its base64: the message is
a readable one-line summary, and the whole trace rides along as structured
data in ``record.flowtracker_trace`` (a dict), which JSON formatters
(python-json-logger, structlog's ``ProcessorFormatter``) serialise as is.

Example:
    >>> import logging, flowtracker as ft
    >>> exporter = ft.LoggingExporter(logger=logging.getLogger("traces"))
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._wire.batch import BatchFailures

if TYPE_CHECKING:
    from .._wire.record import Trace


class LoggingExporter:
    """Logs ``Flow log <trace_id>: <root name> <status> <duration> ms, <n> spans``.

    Args:
        logger: Default ``logging.getLogger("flowtracker.traces")``.
        level: Default ``logging.INFO``; traces with an error log at ``ERROR``.
    """

    name = "logging"

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO) -> None:
        self.logger = logger or logging.getLogger("flowtracker.traces")
        self.level = level

    async def export(self, traces: Sequence[Trace]) -> None:
        failures = BatchFailures(len(traces))
        failures.each(traces, self._log)
        failures.raise_if_any()

    def _log(self, trace: Trace) -> None:
        data = trace.to_dict()
        spans = data["spans"]
        root = next((s for s in spans if "parent_id" not in s), spans[0] if spans else None)
        failed = any(s["status"] == "error" for s in spans)
        level = logging.ERROR if failed and self.level < logging.ERROR else self.level
        if not self.logger.isEnabledFor(level):
            return
        self.logger.log(
            level,
            "Flow log %s: %s %s %.3f ms, %d spans",
            data["trace_id"],
            root["name"] if root else "-",
            root["status"] if root else "-",
            root["duration_ms"] if root else 0.0,
            len(spans),
            extra={"flowtracker_trace": data, "trace_id": data["trace_id"]},
        )

    async def aclose(self) -> None:
        pass
