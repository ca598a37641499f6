"""Exporters that drop what they receive, one per tracer, counting it.

Each benchmark sends traces all the way through a tracer's pipeline and stops
at the exporter: what is measured is the tracer, not JSON or a network.

Example:
    >>> from benchmarks._sinks import DropExporter
    >>> DropExporter().traces
    0
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any


class DropExporter:
    """A flowtracker exporter whose ``export()`` counts and does nothing else."""

    name = "drop"

    def __init__(self) -> None:
        self.traces = 0

    async def export(self, traces: Sequence[Any]) -> None:
        self.traces += len(traces)

    async def aclose(self) -> None:
        pass


class StalledExporter:
    """A flowtracker exporter whose first ``export()`` hangs until ``release()``."""

    name = "stalled"

    def __init__(self) -> None:
        self.traces = 0
        self._release = asyncio.Event()

    def release(self) -> None:
        self._release.set()

    async def export(self, traces: Sequence[Any]) -> None:
        await self._release.wait()
        self.traces += len(traces)

    async def aclose(self) -> None:
        pass


def otel_drop_exporter() -> Any:
    """An OpenTelemetry SpanExporter that counts the spans it gets (``spans``) and drops them."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class DropSpanExporter(SpanExporter):
        def __init__(self) -> None:
            self.spans = 0

        def export(self, spans: Sequence[Any]) -> Any:
            self.spans += len(spans)
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

    return DropSpanExporter()


def otel_provider() -> tuple[Any, Any]:
    """An OpenTelemetry TracerProvider with a BatchSpanProcessor into a dropping exporter.

    Returns the provider and the exporter (whose ``spans`` counts what arrived).
    """
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter = otel_drop_exporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider, exporter


def zipkin_tracer() -> tuple[Any, Any]:
    """An aiozipkin Tracer (sample rate 1) whose transport drops each span record.

    Returns the tracer and the transport (whose ``spans`` counts what arrived).
    """
    import aiozipkin as az
    from aiozipkin.transport import TransportABC

    class DropTransport(TransportABC):
        def __init__(self) -> None:
            self.spans = 0

        def send(self, record: Any) -> None:
            self.spans += 1

        async def close(self) -> None:
            pass

    transport = DropTransport()
    tracer = az.Tracer(transport, az.Sampler(sample_rate=1.0), az.create_endpoint("bench"))
    return tracer, transport
