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

    def test_instrument_is_the_function_and_the_package_has_its_own_name(self):
        """ft.instrument is the function; the instrumentations live in flowtracker.instrumentation,
        a package of another name, so importing one of its modules never shadows the function."""
        import importlib

        module = importlib.import_module("flowtracker.instrumentation.httpx")
        assert module.LIBRARY == "httpx"
        assert callable(ft.instrument)
        assert callable(ft.uninstrument)
        assert ft.instrument.__module__ == "flowtracker.instrumentation"
        assert ft.instrument is importlib.import_module("flowtracker.instrumentation").instrument

    def test_plain_import_of_an_instrumentation_module(self, tmp_path):
        """`import flowtracker.instrumentation.httpx as m` works in a fresh interpreter (it raised
        ImportError while the package and the function shared the name `instrument`)."""
        import subprocess
        import sys

        code = (
            "import flowtracker as ft\n"
            "import flowtracker.instrumentation.httpx as m\n"
            "import flowtracker.instrumentation.redis\n"
            "assert m.LIBRARY == 'httpx' and callable(ft.instrument)\n"
            "print('ok')\n"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "ok"

    def test_names_of_an_instrumentation_module_can_be_mocked(self):
        """mock.patch reaches a name inside an instrumentation module by its dotted path."""
        from unittest import mock

        import flowtracker.instrumentation.redis as redis_instrumentation

        with mock.patch("flowtracker.instrumentation.redis.LIBRARY", "patched"):
            assert redis_instrumentation.LIBRARY == "patched"
        assert redis_instrumentation.LIBRARY == "redis"

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
