"""KafkaExporter against a real broker (Tansu) and a real aiokafka consumer."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord
from kafka_broker import BROKERS, Broker, NoidaBroker, free_port

import flowtracker as ft
from flowtracker.exporters import exporter_from_url
from flowtracker.exporters.kafka import KafkaExporter

pytestmark = pytest.mark.kafka


def emit(count: int, prefix: str = "t") -> None:
    """Finishes ``count`` one-span traces in the current tracker."""
    for index in range(count):
        with ft.span(f"{prefix}{index}", index=index):
            pass


async def consume(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list[ConsumerRecord]:
    """Reads ``topic`` from the start until ``expected`` records came, then a little longer
    (so a duplicate or a stray record would show up too)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        for batch in (await consumer.getmany(timeout_ms=300)).values():
            records.extend(batch)
    finally:
        await consumer.stop()
    return records


def trace_ids(records: list[ConsumerRecord]) -> list[str]:
    return [orjson.loads(record.value)["trace_id"] for record in records]


@pytest.fixture(scope="module", params=sorted(BROKERS))
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """One broker of each kind for the tests that do not stop it."""
    running = BROKERS[request.param]()
    running.start()
    yield running
    running.close()


@pytest.fixture(params=sorted(BROKERS))
def own_broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """A broker of the test's own, free to be stopped and restarted."""
    running = BROKERS[request.param]()
    running.start()
    yield running
    running.close()


@pytest.fixture
def topic() -> str:
    return f"traces-{uuid.uuid4().hex[:8]}"


class TestDelivery:
    async def test_consumer_reads_exactly_the_exported_traces(self, broker: Broker, topic: str) -> None:
        """Each trace is one record: key = trace id, value = the trace JSON; all N, once each."""
        memory = ft.MemoryExporter()
        kafka = KafkaExporter(broker.bootstrap, topic)
        async with ft.Tracker(exporters=[kafka, memory], service="orders", max_batch=50) as tracker:
            emit(200)
        records = await consume(broker.bootstrap, topic, 200)
        assert len(records) == 200
        expected = {trace["trace_id"]: trace for trace in memory.traces}
        for record in records:
            value = orjson.loads(record.value)
            assert record.key == value["trace_id"].encode()
            assert value == expected[value["trace_id"]]
        assert sorted(trace_ids(records)) == sorted(expected)
        stats = tracker.stats.exporters["kafka"]
        assert (stats.exported, stats.failed, stats.dropped, stats.queued) == (200, 0, 0, 0)

    async def test_url_with_gzip_compression(self, broker: Broker, topic: str) -> None:
        """kafka://host:port/topic?compression=gzip configures a gzip producer whose records read back."""
        kafka = exporter_from_url(f"kafka://{broker.bootstrap}/{topic}?compression=gzip&linger_ms=5")
        assert isinstance(kafka, KafkaExporter)
        assert kafka.producer_options["compression_type"] == "gzip"
        async with ft.Tracker(exporters=[kafka]) as tracker:
            emit(30)
        records = await consume(broker.bootstrap, topic, 30)
        assert len(set(trace_ids(records))) == len(records) == 30
        assert tracker.stats.exporters["kafka"].exported == 30


class TestIdempotence:
    async def test_idempotent_producer_on_a_broker_that_supports_it(self, topic: str) -> None:
        """enable_idempotence=True passes through to aiokafka and delivers (noida-db implements
        InitProducerId; Tansu does not)."""
        noida = NoidaBroker()
        noida.start()
        try:
            kafka = KafkaExporter(noida.bootstrap, topic, enable_idempotence=True)
            async with ft.Tracker(exporters=[kafka]) as tracker:
                emit(20)
            records = await consume(noida.bootstrap, topic, 20)
            assert len(set(trace_ids(records))) == len(records) == 20
            assert tracker.stats.exporters["kafka"].exported == 20
        finally:
            noida.close()


class TestOutage:
    async def test_broker_restart_mid_run_loses_nothing(
        self, own_broker: Broker, topic: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Traces finished while the broker is down are delivered once it is back: N sent, N read."""
        caplog.set_level(logging.INFO)
        kafka = KafkaExporter(own_broker.bootstrap, topic, backoff=0.05, max_backoff=0.2)
        async with ft.Tracker(exporters=[kafka], max_batch=50) as tracker:
            emit(100, "before")
            await tracker.flush()
            # An in-memory broker forgets on restart: read what it holds first.
            before = [] if own_broker.persistent else await consume(own_broker.bootstrap, topic, 100)
            own_broker.stop()
            emit(150, "during")
            await asyncio.sleep(1.0)  # the exporter meets the outage
            attempts_during_outage = kafka.attempts
            own_broker.start()
        records = before + await consume(own_broker.bootstrap, topic, 250 - len(before))
        assert len(records) == 250
        assert len(set(trace_ids(records))) == 250
        stats = tracker.stats.exporters["kafka"]
        assert (stats.exported, stats.failed, stats.dropped, stats.queued) == (250, 0, 0, 0)
        assert attempts_during_outage > 2
        # aiokafka complains about every reconnection; each distinct complaint shows once.
        client_lines = Counter(
            (record.name, record.msg)
            for record in caplog.records
            if record.name.startswith("aiokafka") and record.levelno >= logging.WARNING
        )
        assert client_lines
        assert max(client_lines.values()) == 1
        assert not [record for record in caplog.records if record.name == "flowtracker"]

    async def test_outage_beyond_buffer_is_counted(self, own_broker: Broker, topic: str) -> None:
        """During an outage the lane buffers max_queue traces; the rest are dropped and counted."""
        kafka = KafkaExporter(own_broker.bootstrap, topic, backoff=0.05, max_backoff=0.2)
        async with ft.Tracker(exporters=[kafka], max_queue=20, max_batch=10) as tracker:
            emit(1, "warm-up")
            await tracker.flush()
            own_broker.stop()
            emit(60, "during")
            await asyncio.sleep(0.5)
            own_broker.start()
        # The 60 traces finish in one burst and are offered to the lane
        # together, before its task runs: its buffer keeps max_queue of them.
        records = await consume(own_broker.bootstrap, topic, 21 if own_broker.persistent else 20)
        during = [r for r in records if orjson.loads(r.value)["spans"][0]["name"].startswith("during")]
        assert len(set(trace_ids(during))) == len(during) == 20
        stats = tracker.stats
        lane = stats.exporters["kafka"]
        assert (lane.exported, lane.failed, lane.dropped, lane.queued) == (21, 0, 40, 0)
        assert stats.traces_completed == 61

    async def test_outage_longer_than_delivery_timeout_fails_the_batch(
        self, own_broker: Broker, topic: str
    ) -> None:
        """A batch not acknowledged within delivery_timeout is counted failed; later ones go through."""
        kafka = KafkaExporter(
            own_broker.bootstrap,
            topic,
            delivery_timeout=1.0,
            backoff=0.05,
            max_backoff=0.2,
            request_timeout_ms=300,
        )
        async with ft.Tracker(exporters=[kafka]) as tracker:
            emit(1, "warm-up")
            await tracker.flush()
            own_broker.stop()
            emit(5, "lost")
            await tracker.flush()
            own_broker.start()
            emit(7, "after")
        records = await consume(own_broker.bootstrap, topic, 8 if own_broker.persistent else 7)
        names = Counter(orjson.loads(r.value)["spans"][0]["name"].rstrip("0123456789") for r in records)
        assert names["after"] == 7
        assert names["lost"] == 0
        lane = tracker.stats.exporters["kafka"]
        assert (lane.exported, lane.failed, lane.dropped) == (8, 5, 0)

    @pytest.mark.parametrize("kind", sorted(BROKERS))
    async def test_broker_down_at_start_then_up(self, topic: str, kind: str) -> None:
        """A producer that cannot bootstrap yet is retried until the broker comes up."""
        late = BROKERS[kind](free_port())
        kafka = KafkaExporter(late.bootstrap, topic, backoff=0.05, max_backoff=0.2)
        try:
            async with ft.Tracker(exporters=[kafka]) as tracker:
                emit(10)
                await asyncio.sleep(0.5)
                late.start()
            records = await consume(late.bootstrap, topic, 10)
            assert len(set(trace_ids(records))) == len(records) == 10
            assert tracker.stats.exporters["kafka"].exported == 10
        finally:
            late.close()


class TestConfiguration:
    def test_from_url_options(self) -> None:
        """URL query options become producer options; numbers are numbers."""
        kafka = KafkaExporter.from_url(
            "kafka://a:9092,b:9092/spans?compression=gzip&acks=1&delivery_timeout=5"
        )
        assert kafka.bootstrap_servers == "a:9092,b:9092"
        assert kafka.topic == "spans"
        assert kafka.delivery_timeout == 5
        assert kafka.producer_options == {"acks": 1, "request_timeout_ms": 10_000, "compression_type": "gzip"}

    def test_bad_configuration_fails_early(self) -> None:
        """A missing topic, an unknown option or an unknown codec fail at construction."""
        with pytest.raises(ValueError, match="topic"):
            KafkaExporter.from_url("kafka://a:9092")
        with pytest.raises(TypeError, match="lingr_ms"):
            KafkaExporter("a:9092", "t", lingr_ms=5)
        with pytest.raises(ValueError, match="compression"):
            KafkaExporter("a:9092", "t", compression_type="brotli")


class TestOneRecordCostsOnlyItself:
    async def test_a_record_too_large_fails_alone(self, broker: Broker, topic: str) -> None:
        """One trace larger than the producer's ``max_request_size`` among nine ordinary ones in one
        batch: it alone is counted failed, the nine are acknowledged, counted exported and consumed."""
        kafka = KafkaExporter(broker.bootstrap, topic, max_request_size=4096)
        async with ft.Tracker(exporters=[kafka], max_batch=64) as tracker:
            emit(4)
            with ft.span("huge", pad="x" * 8000):
                pass
            emit(5, prefix="u")
        lane = tracker.stats.exporters["kafka"]
        assert (lane.exported, lane.failed, lane.dropped, lane.queued) == (9, 1, 0, 0)
        names = sorted(
            orjson.loads(record.value)["spans"][0]["name"]
            for record in await consume(broker.bootstrap, topic, 9)
        )
        assert names == ["t0", "t1", "t2", "t3", "u0", "u1", "u2", "u3", "u4"]
