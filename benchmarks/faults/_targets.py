"""Where the traces go in a scenario, and how the suite reads back what arrived.

A target gives the exporter URL the app is configured with, can go down and
come back (the outage scenarios), and counts what arrived once the app has
exited:

* :class:`FileTarget`: a JSON Lines file (``file:///...``), every worker appending;
* :class:`ReceiverTarget`: an HTTP receiver for the webhook or OTLP/HTTP
  (JSON) exporter, on the suite's loop;
* :class:`KafkaTarget`: a real Kafka-compatible broker (noida-db, which keeps
  its records across a restart, from ``tests/kafka_broker.py``), read back
  with a consumer.

Example:
    >>> from pathlib import Path
    >>> FileTarget(Path("/tmp/t.jsonl")).url
    'file:///tmp/t.jsonl'
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

from ._count import Written, read_json_lines
from ._receiver import Receiver


class FileTarget:
    """A JSON Lines file; it has no outage of its own (see the full-disk scenario)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"file://{path}"

    async def up(self) -> None:
        """Nothing to start."""

    async def down(self) -> None:
        """Nothing to stop."""

    async def read(self, expected: int) -> Written:
        return read_json_lines(self.path)


class ReceiverTarget:
    """The webhook (``kind="webhook"``) or OTLP/JSON (``"otlp"``) exporter's receiver."""

    def __init__(self, kind: str, latency: float = 0.0) -> None:
        self.kind = kind
        self.receiver = Receiver(latency)
        port = self.receiver.port
        self.url = (
            f"http://127.0.0.1:{port}/hook" if kind == "webhook" else f"otlp://127.0.0.1:{port}?encoding=json"
        )

    async def up(self) -> None:
        await self.receiver.up()

    async def down(self) -> None:
        await self.receiver.down()

    async def read(self, expected: int) -> Written:
        written = Written()
        add = written.add_webhook_body if self.kind == "webhook" else written.add_otlp_json_body
        for body in self.receiver.bodies:
            add(body)
        return written


class KafkaTarget:
    """A topic on a noida-db broker of the scenario's own; a restart keeps its records."""

    def __init__(self) -> None:
        from tests.kafka_broker import NoidaBroker  # the brokers the Kafka tests run

        self.broker = NoidaBroker()
        self.topic = f"faults-{uuid.uuid4().hex[:8]}"
        self.url = f"kafka://{self.broker.bootstrap}/{self.topic}"

    async def up(self) -> None:
        if self.broker.process is None:
            await asyncio.to_thread(self.broker.start)

    async def down(self) -> None:
        await asyncio.to_thread(self.broker.stop)

    async def read(self, expected: int, timeout: float = 15.0) -> Written:
        """Reads the topic from its start until ``expected`` records came, then a little longer."""
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.broker.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        values: list[Any] = []
        try:
            deadline = time.monotonic() + timeout
            while len(values) < expected and time.monotonic() < deadline:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    values.extend(record.value for record in batch)
            for batch in (await consumer.getmany(timeout_ms=300)).values():  # a duplicate would show here
                values.extend(record.value for record in batch)
        finally:
            await consumer.stop()
        written = Written()
        for value in values:
            written.add_json_lines(value)
        return written

    def close(self) -> None:
        self.broker.close()


Target = FileTarget | ReceiverTarget | KafkaTarget
