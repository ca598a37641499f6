"""Every exporter, against its real peer: hostile strings export, and one bad trace costs only itself.

Each built-in exporter is run against what it writes to (a file, a stream, a
logger, a real aiohttp receiver for the webhook and OTLP, a real Kafka broker
and consumer, an OpenTelemetry SDK exporter). Two promises are checked for
each:

* a trace whose strings hold lone surrogates (bytes that were not UTF-8,
  decoded with ``surrogateescape``) is exported like any other;
* a trace that cannot be encoded at all is left out and counted, and the rest
  of its batch arrives: ``export`` raises ``PartialExportError`` with
  ``failed == 1``, and the tracker's lane counts exactly that.

A trace that cannot be encoded is a fault no public API can cause any more
(every value has a stand-in), so it is made directly: a ``Trace`` record
whose span list holds something that is no span.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from http_receiver import Receiver
from kafka_broker import BROKERS, Broker
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import flowtracker as ft
from flowtracker._pipeline.lane import Lane
from flowtracker._wire.record import Trace
from flowtracker.exporters import PartialExportError

#: A byte that is not UTF-8, as aiohttp, ``os.fsdecode`` and ``sys.argv`` hand it over.
BAD = b"\xff".decode("utf-8", "surrogateescape")

KINDS = (
    "file",
    "console",
    "logging",
    "memory",
    "webhook",
    "otlp-json",
    "otlp-protobuf",
    pytest.param("kafka", marks=pytest.mark.kafka),
    "sankey",
    "mermaid",
    "otel",
)


@dataclass
class Peer:
    """An exporter and a way to read back, as text, everything its peer received."""

    exporter: Any
    received: Callable[[], Awaitable[str]]


def otlp_names(receiver: Receiver, protobuf: bool) -> str:
    names = []
    for request in receiver.delivered:
        if protobuf:
            message = ExportTraceServiceRequest.FromString(request.body)
            names += [
                span.name for rs in message.resource_spans for ss in rs.scope_spans for span in ss.spans
            ]
        else:
            body = request.json()
            names += [
                span["name"]
                for rs in body["resourceSpans"]
                for ss in rs["scopeSpans"]
                for span in ss["spans"]
            ]
    return "\n".join(names)


async def kafka_values(broker: Broker, topic: str) -> str:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=3000)
        return "\n".join(record.value.decode() for batch in batches.values() for record in batch)
    finally:
        await consumer.stop()


@pytest.fixture(scope="module")
def kafka_broker() -> Iterator[Broker]:
    running = BROKERS[sorted(BROKERS)[0]]()
    running.start()
    yield running
    running.close()


@pytest.fixture
async def peer(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Peer]:
    """The exporter named by the test's parameter, with its real peer running."""
    kind = request.param
    if kind in ("file", "sankey", "mermaid"):
        path = tmp_path / "out.txt"
        exporter = {"file": ft.FileExporter, "sankey": ft.SankeyExporter, "mermaid": ft.MermaidExporter}[
            kind
        ](path)

        async def from_file() -> str:
            return path.read_bytes().decode("utf-8") if path.exists() else ""

        yield Peer(exporter, from_file)
    elif kind == "console":
        stream = io.StringIO()

        async def from_stream() -> str:
            return stream.getvalue()

        yield Peer(ft.ConsoleExporter(stream=stream), from_stream)
    elif kind == "logging":
        records: list[logging.LogRecord] = []
        handler = logging.Handler()
        handler.emit = records.append  # type: ignore[method-assign]
        logger = logging.getLogger(f"isolation.{uuid.uuid4().hex}")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)

        async def from_records() -> str:
            return "\n".join(json.dumps(r.flowtracker_trace) for r in records)  # type: ignore[attr-defined]

        yield Peer(ft.LoggingExporter(logger=logger), from_records)
    elif kind == "memory":
        memory = ft.MemoryExporter()

        async def from_memory() -> str:
            return "\n".join(json.dumps(trace) for trace in memory.traces)

        yield Peer(memory, from_memory)
    elif kind in ("webhook", "otlp-json", "otlp-protobuf"):
        async with Receiver() as receiver:
            if kind == "webhook":
                exporter = ft.WebhookExporter(receiver.url, backoff=0.01, max_backoff=0.05)

                async def from_receiver() -> str:
                    return "\n".join(request.body.decode() for request in receiver.delivered)

            else:
                protobuf = kind == "otlp-protobuf"
                exporter = ft.OTLPExporter(receiver.url, encoding="protobuf" if protobuf else "json")

                async def from_receiver() -> str:
                    return otlp_names(receiver, protobuf)

            yield Peer(exporter, from_receiver)
            await exporter.aclose()
    elif kind == "kafka":
        broker = request.getfixturevalue("kafka_broker")
        topic = f"isolation-{uuid.uuid4().hex[:8]}"
        kafka = ft.KafkaExporter(broker.bootstrap, topic)
        yield Peer(kafka, lambda: kafka_values(broker, topic))
        await kafka.aclose()
    elif kind == "otel":
        in_memory = InMemorySpanExporter()

        async def from_sdk() -> str:
            return "\n".join(span.name for span in in_memory.get_finished_spans())

        yield Peer(ft.OTelSpanExporterBridge(in_memory), from_sdk)
    else:
        raise AssertionError(kind)


def trace(tracker: ft.Tracker, marker: str) -> None:
    """One trace of a root and a child, both named after ``marker`` (Sankey and Mermaid show children)."""
    with ft.start_root_span(f"root {marker}", tracker=tracker), ft.span(marker, marker=marker):
        pass


async def records(count: int) -> list[Trace]:
    """``count`` finished Trace records, ``good-0`` ... (made by a real tracker)."""
    memory = ft.MemoryExporter()
    async with ft.Tracker(exporters=[memory], service="svc") as tracker:
        for index in range(count):
            trace(tracker, f"good-{index}")
    return list(memory.records)


def unencodable() -> Trace:
    """A record that cannot be encoded at all: its span list holds something that is no span."""
    return Trace(0x4BF92F3577B34DA6A3CE929D0E0E4736, "svc", [object()])  # type: ignore[list-item]


@pytest.mark.parametrize("peer", KINDS, indirect=True)
class TestEveryExporter:
    async def test_hostile_strings_are_exported(self, peer: Peer) -> None:
        """A trace whose service, names, tag keys and values hold a byte that is not UTF-8 is exported
        beside 20 ordinary ones: all 21 counted exported, the peer holds all of them."""
        async with ft.Tracker(exporters=[peer.exporter], service=f"svc{BAD}") as tracker:
            trace(tracker, f"hostile{BAD}")
            for index in range(20):
                trace(tracker, f"good-{index}")
        lane = next(iter(tracker.stats.exporters.values()))
        assert (lane.exported, lane.failed, lane.dropped) == (21, 0, 0)
        received = await peer.received()
        assert "hostile" in received
        assert all(f"good-{index}" in received for index in range(20))

    async def test_one_unencodable_trace_costs_only_itself(self, peer: Peer) -> None:
        """A batch of 10 with one record that cannot be encoded: the 9 others reach the peer, and
        ``export`` raises PartialExportError naming 1 failed trace."""
        good = await records(9)
        batch: Sequence[Trace] = [*good[:4], unencodable(), *good[4:]]
        with pytest.raises(PartialExportError) as raised:
            await peer.exporter.export(batch)
        await peer.exporter.aclose()
        assert (raised.value.failed, raised.value.total) == (1, 10)
        assert isinstance(raised.value.cause, AttributeError)
        received = await peer.received()
        assert all(f"good-{index}" in received for index in range(9))


class TestLaneAccounting:
    async def test_lane_counts_exactly_the_failed_traces(self, tmp_path: Path) -> None:
        """Through a real lane and FileExporter: 200 good records and 1 that cannot be encoded, in one
        batch, give exported 200, failed 1, and 200 lines in the file."""
        path = tmp_path / "t.jsonl"
        lane = Lane("file", ft.FileExporter(path), max_queue=1024, max_batch=512, timeout=10.0)
        lane.open()
        good = await records(200)
        for record in [*good[:100], unencodable(), *good[100:]]:
            assert lane.offer(record)
        task = asyncio.create_task(lane.run())
        await lane.wait_processed()
        lane.close()
        await task
        await lane.exporter.aclose()
        assert lane.stats() == (200, 1, 0, 0)
        assert len(path.read_text().splitlines()) == 200

    async def test_third_party_exporter_reports_part_of_a_batch(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A plug-in raising PartialExportError(3, ...) has exactly 3 traces counted failed, the rest
        exported, and the failure logged once with its cause."""

        class Lossy:
            name = "lossy"

            async def export(self, traces: Sequence[Trace]) -> None:
                raise PartialExportError(3, len(traces), ConnectionError("3 rows refused"))

            async def aclose(self) -> None:
                pass

        with caplog.at_level(logging.WARNING, logger="flowtracker"):
            async with ft.Tracker(exporters=[Lossy()], max_batch=512) as tracker:
                for index in range(10):
                    trace(tracker, f"t{index}")
        assert tracker.stats.exporters["lossy"] == (7, 3, 0, 0)
        [message] = [r.getMessage() for r in caplog.records if "lossy" in r.getMessage()]
        assert "3 of 10 traces failed" in message
        assert "3 rows refused" in message
