"""The public surface: names, laziness, and import cost."""

from __future__ import annotations

import subprocess
import sys

import flowtracker as ft

CONTRACT = {  # the public API contract (README "The API"; code outside the project relies on it)
    "span",
    "traced",
    "start_span",
    "add_tag",
    "add_event",
    "current_span",
    "current_trace_id",
    "Tracker",
    "ConsoleExporter",
    "FileExporter",
    "MemoryExporter",
    "WebhookExporter",
    "KafkaExporter",
    "OTLPExporter",
    "Exporter",
    "LoggingExporter",
    "bind",
    "Span",
    "Trace",
    "instrument",
    "uninstrument",
    "monitor_event_loop",
    "LoopMonitor",
}


class TestPublicNames:
    def test_contract_names_exported(self):
        """Every name of the public API contract is in flowtracker.__all__."""
        assert set(ft.__all__) >= CONTRACT

    def test_all_names_resolve(self):
        """Every name in __all__ exists (a missing one fails here, as anyio's test does)."""
        for name in ft.__all__:
            assert getattr(ft, name) is not None, name

    def test_version(self):
        """__version__ comes from the installed distribution's metadata."""
        from importlib.metadata import version

        assert ft.__version__ == version("flowtracker")

    def test_instrument_is_the_function_not_the_subpackage(self):
        """ft.instrument is the function even though flowtracker.instrument is also a subpackage."""
        from flowtracker.instrument import httpx as httpx_instrumentation

        assert callable(ft.instrument)
        assert ft.instrument.__module__ == "flowtracker.instrument"
        assert httpx_instrumentation.LIBRARY == "httpx"

    def test_py_typed_shipped(self):
        """The package ships the py.typed marker."""
        from importlib.resources import files

        assert files("flowtracker").joinpath("py.typed").is_file()


class TestImportCost:
    def test_import_is_light(self):
        """`import flowtracker` loads no framework, OpenTelemetry, broker client nor instrumented library."""
        code = (
            "import sys, flowtracker\n"
            "heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('aiohttp', 'aiokafka', 'starlette', 'opentelemetry', 'httpx', 'uvicorn',"
            " 'redis', 'asyncpg', 'sqlalchemy')]\n"
            "print(heavy)"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "[]"

    def test_otel_bridge_is_imported_only_when_used(self):
        """`import flowtracker` neither loads `flowtracker.otel` nor the OpenTelemetry API it needs;
        importing `flowtracker.otel` loads the API and never the SDK."""
        code = (
            "import sys, flowtracker\n"
            "before = sorted(m for m in sys.modules if m.startswith(('flowtracker.otel', 'opentelemetry')))\n"
            "import flowtracker.otel\n"
            "sdk = sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk'))\n"
            "print(before, sdk, 'opentelemetry.trace' in sys.modules)"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "[] [] True"
