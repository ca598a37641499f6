"""Exporters: where finished traces go.

Built in: :class:`ConsoleExporter`, :class:`FileExporter`,
:class:`MemoryExporter`, :class:`LoggingExporter`. Third-party exporters
register a factory in the ``flowtracker.exporters`` entry-point group and are
found by :func:`load_exporter` and by name in ``FLOWTRACKER_EXPORTERS``.
An exporter that shipped part of a batch raises :class:`PartialExportError`
with the number that failed; the tracker counts exactly those as failed.

Example:
    >>> from flowtracker.exporters import exporter_from_url
    >>> type(exporter_from_url("console")).__name__
    'ConsoleExporter'
"""

from __future__ import annotations

from .._pipeline.fork import needs_modules
from .._pipeline.tracker import OnConfigError as OnConfigError
from .._pipeline.tracker import set_exporter_resolver
from .._wire.batch import PartialExportError as PartialExportError
from ._base import Exporter as Exporter
from ._config import ENV_VAR as ENV_VAR
from ._config import exporter_from_url as exporter_from_url
from ._config import exporters_from_env as exporters_from_env
from ._config import load_exporter as load_exporter
from ._config import resolve_exporters as resolve_exporters
from .console import ConsoleExporter as ConsoleExporter
from .file import FileExporter as FileExporter
from .logging import LoggingExporter as LoggingExporter
from .memory import MemoryExporter as MemoryExporter

# The tracker reads exporter URLs and the environment through this package,
# which knows the schemes (the pipeline sits below the exporters).
set_exporter_resolver(resolve_exporters)

# The OTLP and webhook exporters read their version through importlib.metadata
# on first export, on the tracker's loop: imported instead before a tracker
# thread starts, where a fork() cannot cut the import.
needs_modules("importlib.metadata")

# Exporters with heavier dependencies (aiohttp, aiokafka, opentelemetry) load
# on first use, so ``import flowtracker`` stays light.
_LAZY = {
    "WebhookExporter": ".webhook",
    "KafkaExporter": ".kafka",
    "OTLPExporter": ".otlp",
    "OTLPGrpcExporter": ".otlp_grpc",
    "OTelSpanExporterBridge": ".otel_bridge",
    "SankeyExporter": ".sankey",
    "MermaidExporter": ".mermaid",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module, __name__), name)


__all__ = (
    "ENV_VAR",
    "ConsoleExporter",
    "Exporter",
    "FileExporter",
    "KafkaExporter",
    "LoggingExporter",
    "MemoryExporter",
    "MermaidExporter",
    "OTLPExporter",
    "OTLPGrpcExporter",
    "OTelSpanExporterBridge",
    "OnConfigError",
    "PartialExportError",
    "SankeyExporter",
    "WebhookExporter",
    "exporter_from_url",
    "exporters_from_env",
    "load_exporter",
    "resolve_exporters",
)
