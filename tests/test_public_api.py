"""The public surface: names, laziness, and import cost."""

from __future__ import annotations

import subprocess
import sys

import flowtracker as ft

CONTRACT = {  # design.md's public API
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
    "monitor_event_loop",
    "LoopMonitor",
}


class TestPublicNames:
    def test_contract_names_exported(self):
        """Every name design.md promises is in flowtracker.__all__."""
        assert set(ft.__all__) >= CONTRACT

    def test_all_names_resolve(self):
        """Every name in __all__ exists (a missing one fails here, as anyio's test does)."""
        for name in ft.__all__:
            assert getattr(ft, name) is not None, name

    def test_version(self):
        """__version__ comes from the installed distribution's metadata."""
        from importlib.metadata import version

        assert ft.__version__ == version("flowtracker")

    def test_py_typed_shipped(self):
        """The package ships the py.typed marker."""
        from importlib.resources import files

        assert files("flowtracker").joinpath("py.typed").is_file()


class TestImportCost:
    def test_import_is_light(self):
        """`import flowtracker` loads no aiohttp, aiokafka, starlette or opentelemetry."""
        code = (
            "import sys, flowtracker\n"
            "heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('aiohttp', 'aiokafka', 'starlette', 'opentelemetry', 'httpx', 'uvicorn')]\n"
            "print(heavy)"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "[]"
