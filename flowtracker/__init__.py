"""flowtracker: asyncio-native tracing of one request through one service.

Example:
    >>> import flowtracker as ft
    >>> @ft.traced
    ... async def load_user(uid):
    ...     async with ft.span("FetchFromDB", db_system="postgres"):
    ...         ft.add_tag("db.query", "SELECT ...")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._core.span import Span as Span
from ._core.span import add_event as add_event
from ._core.span import add_tag as add_tag
from ._core.span import bind as bind
from ._core.span import current_span as current_span
from ._core.span import current_trace_id as current_trace_id
from ._core.span import span as span
from ._core.span import start_root_span as start_root_span
from ._core.span import start_span as start_span
from ._pipeline.sampling import keep_errors_and_slow as keep_errors_and_slow
from ._pipeline.stats import ExporterStats as ExporterStats
from ._pipeline.stats import TrackerStats as TrackerStats
from ._pipeline.tracker import Tracker as Tracker
from ._pipeline.tracker import default_tracker as default_tracker
from ._wire.policy import DEFAULT_REDACT_KEYS as DEFAULT_REDACT_KEYS
from ._wire.record import Trace as Trace
from .exporters import ConsoleExporter as ConsoleExporter
from .exporters import Exporter as Exporter
from .exporters import FileExporter as FileExporter
from .exporters import LoggingExporter as LoggingExporter
from .exporters import MemoryExporter as MemoryExporter
from .exporters import exporter_from_url as exporter_from_url
from .exporters import load_exporter as load_exporter

# The registry is light (it imports no instrumented library). The function
# `ft.instrument` and the package `flowtracker.instrumentation` have different
# names, so `import flowtracker.instrumentation.httpx` and mock.patch on its
# names work, and importing a submodule never rebinds `ft.instrument`.
from .instrumentation import instrument as instrument
from .instrumentation import uninstrument as uninstrument
from .integrations.traced import traced as traced
from .log_correlation import TraceContextFilter as TraceContextFilter
from .propagation import continue_trace as continue_trace
from .propagation import extract as extract
from .propagation import inject as inject

if TYPE_CHECKING:  # imported when first named (see __getattr__)
    from .loop_monitor import LoopMonitor as LoopMonitor
    from .loop_monitor import LoopMonitorStats as LoopMonitorStats
    from .loop_monitor import monitor_event_loop as monitor_event_loop

_LAZY_EXPORTERS = frozenset(
    {
        "WebhookExporter",
        "KafkaExporter",
        "OTLPExporter",
        "OTelSpanExporterBridge",
        "SankeyExporter",
        "MermaidExporter",
    }
)


def __getattr__(name: str) -> object:
    # Heavy exporters import their dependencies only when first named, and the
    # version only when asked for: importlib.metadata alone costs ~20 ms.
    if name in _LAZY_EXPORTERS:
        from . import exporters

        return getattr(exporters, name)
    if name in ("monitor_event_loop", "LoopMonitor", "LoopMonitorStats"):  # patches nothing until called
        from . import loop_monitor

        return getattr(loop_monitor, name)
    if name == "__version__":
        from ._core.version import package_version

        return package_version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = (
    "DEFAULT_REDACT_KEYS",
    "ConsoleExporter",
    "Exporter",
    "ExporterStats",
    "FileExporter",
    "KafkaExporter",
    "LoggingExporter",
    "LoopMonitor",
    "LoopMonitorStats",
    "MemoryExporter",
    "MermaidExporter",
    "OTLPExporter",
    "OTelSpanExporterBridge",
    "SankeyExporter",
    "Span",
    "Trace",
    "TraceContextFilter",
    "Tracker",
    "TrackerStats",
    "WebhookExporter",
    "__version__",
    "add_event",
    "add_tag",
    "bind",
    "continue_trace",
    "current_span",
    "current_trace_id",
    "default_tracker",
    "exporter_from_url",
    "extract",
    "inject",
    "instrument",
    "keep_errors_and_slow",
    "load_exporter",
    "monitor_event_loop",
    "span",
    "start_root_span",
    "start_span",
    "traced",
    "uninstrument",
)
