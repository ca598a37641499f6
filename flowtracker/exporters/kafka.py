"""``KafkaExporter``: one Kafka record per trace, through aiokafka.

Key: the trace id (so every record of one trace, follow-ups included, lands
in the same partition, in order). Value: the trace JSON, exactly what the
``FileExporter`` writes on one line.

Delivery is confirmed: ``export`` awaits the broker's acknowledgement of every
record (``acks="all"`` by default) before the batch counts as exported. Records
that fail with a retriable error (broker down, leader moving, request timed
out) are sent again with exponential backoff and jitter until they are
acknowledged or ``delivery_timeout`` runs out; then ``export`` raises and the
tracker counts the traces not acknowledged as failed (those acknowledged
count as exported). A record that can never succeed (say, larger than the
broker accepts) fails at once, alone, as does a trace that cannot be
encoded: the rest of its batch goes.

Broker outages: while ``export`` keeps retrying one batch, new traces wait in
the exporter's lane. The buffer is therefore the tracker's ``max_queue``
(8192 traces by default) plus the batch in flight (up to ``max_batch``);
traces beyond it are dropped and counted in ``tracker.stats`` (``dropped``),
and a batch whose outage outlasts ``delivery_timeout`` is counted ``failed``.
When the broker is back the producer reconnects by itself and the queued
traces follow.

aiokafka logs every failed reconnection (ten lines a second during an outage).
While the exporter runs, a filter lets each distinct aiokafka message through
at most once a minute (``quiet_client_logs=False`` turns that off).

Example:
    >>> from flowtracker.exporters import KafkaExporter
    >>> kafka = KafkaExporter("localhost:9092", "traces", compression_type="gzip")
    >>> KafkaExporter.from_url("kafka://localhost:9092/traces?compression=gzip").topic
    'traces'
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import anyio
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

from .._wire.batch import BatchFailures, PartialExportError
from ._http import RetrySettings

if TYPE_CHECKING:
    from .._wire.record import Trace

#: Producer options flowtracker sets unless you pass your own.
PRODUCER_DEFAULTS: dict[str, Any] = {"acks": "all", "request_timeout_ms": 10_000}

#: Seconds between two log lines with the same aiokafka message.
CLIENT_LOG_INTERVAL = 60.0

_CLIENT_LOGGERS = ("aiokafka", "aiokafka.conn", "aiokafka.cluster", "aiokafka.producer.sender")
_COMPRESSIONS = ("gzip", "snappy", "lz4", "zstd")


# One record: the value (the trace's JSON) and the key (its trace id).
_Record = tuple[bytes, bytes]


class KafkaDeliveryError(PartialExportError):
    """Some traces of a batch were not acknowledged by the broker (``failed`` of them)."""

    def __init__(self, failed: int, total: int, message: str, cause: BaseException | None = None) -> None:
        super().__init__(failed, total, cause)
        self.args = (message,)


class KafkaExporter:
    """Produces one record per trace to ``topic``.

    Args:
        bootstrap_servers: ``"host:port"``, comma-separated, or a list.
        topic: The topic; brokers that auto-create topics create it.
        delivery_timeout: Seconds one batch may take, retries included, before
            it counts as failed; keep it below the tracker's
            ``export_timeout`` (30). Default 25.
        backoff: Upper bound of the first retry delay, doubling per retry
            (full jitter). Default 0.2.
        max_backoff: Largest delay between two attempts. Default 2.
        quiet_client_logs: Rate-limit aiokafka's own log lines (see the module
            docstring). Default True.
        **producer_options: Passed to ``aiokafka.AIOKafkaProducer`` (checked
            here, so a typo fails at configuration), on top of
            ``acks="all"`` and ``request_timeout_ms=10000``. For example
            ``compression_type="gzip"``, ``linger_ms=5``, ``client_id``,
            ``security_protocol``, ``sasl_*``. ``enable_idempotence=True``
            needs a broker that implements InitProducerId.

    Example:
        >>> KafkaExporter(["k1:9092", "k2:9092"], "traces", linger_ms=5).topic
        'traces'
    """

    name = "kafka"

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        topic: str,
        *,
        delivery_timeout: float = 25.0,
        backoff: float = 0.2,
        max_backoff: float = 2.0,
        quiet_client_logs: bool = True,
        **producer_options: Any,
    ) -> None:
        if not topic:
            raise ValueError("KafkaExporter needs a topic")
        _check_options(producer_options)
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.delivery_timeout = delivery_timeout
        #: The delays between send rounds (retry statuses do not apply to Kafka).
        self.retry = RetrySettings(None, delivery_timeout, backoff, max_backoff, frozenset())
        self.quiet_client_logs = quiet_client_logs
        self.producer_options = {**PRODUCER_DEFAULTS, **producer_options}
        self.attempts = 0  # send rounds, retries included
        self._producer: AIOKafkaProducer | None = None
        self._quieting = False

    @classmethod
    def from_url(cls, url: str) -> KafkaExporter:
        """The exporter for ``kafka://host:port[,host2:port]/topic[?options]``.

        Options: ``compression`` (``gzip``, ``snappy``, ``lz4``, ``zstd``,
        ``none``), ``delivery_timeout`` (seconds), and any producer option by
        its aiokafka name (``acks``, ``linger_ms``, ``client_id``, ...);
        numeric values are read as numbers.

        Example:
            >>> kafka = KafkaExporter.from_url("kafka://k1:9092,k2:9092/traces?acks=1&linger_ms=5")
            >>> kafka.bootstrap_servers, kafka.producer_options["acks"], kafka.producer_options["linger_ms"]
            ('k1:9092,k2:9092', 1, 5)
        """
        parts = urlsplit(url)
        if parts.scheme.lower() != "kafka":
            raise ValueError(f"not a Kafka URL: {url!r}")
        topic = parts.path.strip("/")
        if not parts.netloc or not topic:
            raise ValueError(
                f"Kafka URL needs brokers and a topic, like kafka://host:9092/traces; got {url!r}"
            )
        options: dict[str, Any] = {}
        for key, value in parse_qsl(parts.query):
            if key == "compression":
                options["compression_type"] = None if value.lower() == "none" else value.lower()
            else:
                options[key] = _number(value)
        return cls(parts.netloc, topic, **options)

    async def export(self, traces: Sequence[Trace]) -> None:
        deadline = time.monotonic() + self.delivery_timeout
        # A send round ends by itself within about request_timeout_ms (records
        # the broker never acknowledged expire in the producer), so it is never
        # cancelled: a cancelled round would leave records in the producer that
        # reach the broker later although the batch was counted as failed.
        round_time = float(self.producer_options.get("request_timeout_ms", 40_000)) / 1000
        failures = BatchFailures(len(traces))
        pending = failures.each(traces, _record)
        attempt = 0
        last: BaseException | None = None
        while pending:
            attempt += 1
            self.attempts += 1
            producer = await self._reachable(attempt, deadline)
            if isinstance(producer, BaseException):
                last = producer
            else:
                pending, error = await self._send(producer, pending, failures)
                if not pending:
                    break
                last = error or last
            delay = self.retry.delay(attempt)
            if time.monotonic() + delay + round_time > deadline:
                raise KafkaDeliveryError(
                    len(pending) + failures.failed,
                    len(traces),
                    f"{len(pending)} of {len(traces)} traces not delivered to {self.topic!r}"
                    f" within {self.delivery_timeout}s ({attempt} attempts): {last!r}",
                    last,
                )
            await asyncio.sleep(delay)
        failures.raise_if_any()

    async def _reachable(self, attempt: int, deadline: float) -> AIOKafkaProducer | BaseException:
        """The started producer, once the cluster answers; else the reason it does not.

        Before a retry the cluster's metadata is refreshed first, so records
        are not queued into a producer that cannot reach any broker.
        """
        with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
            try:
                producer = await self._started()
                if attempt == 1 or await producer.client.force_metadata_update():
                    return producer
                return KafkaConnectionError("no broker answered a metadata request")
            except KafkaError as error:  # no broker reachable to bootstrap from
                return error
        return KafkaTimeoutError("no broker answered before delivery_timeout")

    async def _send(
        self, producer: AIOKafkaProducer, records: list[_Record], failures: BatchFailures
    ) -> tuple[list[_Record], BaseException | None]:
        """Sends ``records`` and awaits their acknowledgements.

        Returns the records to try again and the last error. A record no
        retry can fix (too large, say) is counted in ``failures``, alone.
        """
        sent: list[tuple[_Record, asyncio.Future[Any]]] = []
        unsent: list[_Record] = []
        last: BaseException | None = None
        for index, record in enumerate(records):
            try:
                future = await producer.send(self.topic, value=record[0], key=record[1])
            except Exception as error:  # metadata unavailable, buffer full, record too large
                last = error
                if not _retriable(error):
                    failures.add(1, error)
                    continue
                unsent = records[index:]
                break
            sent.append((record, future))
        results = await asyncio.gather(*(future for _, future in sent), return_exceptions=True)
        again: list[_Record] = []
        for (record, _), result in zip(sent, results, strict=True):
            if isinstance(result, BaseException):
                last = result
                if _retriable(result):
                    again.append(record)
                else:
                    failures.add(1, result)
        return again + unsent, last

    async def _started(self) -> AIOKafkaProducer:
        producer = self._producer
        if producer is not None:
            return producer
        if self.quiet_client_logs and not self._quieting:
            self._quieting = True
            _quiet_filter.attach()
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap_servers, **self.producer_options)
        try:
            await producer.start()
        except BaseException:
            with anyio.CancelScope(shield=True):  # a half-started producer still holds a client
                await producer.stop()
            raise
        self._producer = producer
        return producer

    async def aclose(self) -> None:
        """Waits for records still in the producer's buffer, then disconnects."""
        producer, self._producer = self._producer, None
        try:
            if producer is not None:
                await producer.stop()
        finally:
            if self._quieting:
                self._quieting = False
                _quiet_filter.detach()


def _record(trace: Trace) -> _Record:
    return trace.to_json(), trace.trace_id.encode()


def _retriable(error: BaseException) -> bool:
    if isinstance(error, (KafkaTimeoutError, KafkaConnectionError)):
        return True  # an expired request during an outage: worth another round
    return isinstance(error, KafkaError) and bool(getattr(error, "retriable", False))


def _check_options(options: dict[str, Any]) -> None:
    """Fails fast on options AIOKafkaProducer would reject at the first export."""
    accepted = inspect.signature(AIOKafkaProducer).parameters
    unknown = sorted(set(options) - set(accepted) - {"loop"})
    if unknown or "bootstrap_servers" in options:
        raise TypeError(f"unknown Kafka producer options: {', '.join(unknown or ['bootstrap_servers'])}")
    compression = options.get("compression_type")
    if compression is not None:
        if compression not in _COMPRESSIONS:
            raise ValueError(f"compression must be one of {', '.join(_COMPRESSIONS)}; got {compression!r}")
        from aiokafka import codec

        if not getattr(codec, f"has_{compression}")():
            raise RuntimeError(f"compression {compression!r} needs a library aiokafka did not find")


def _number(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


class _RateLimit(logging.Filter):
    """Lets each (logger, message template) pass at most once per interval."""

    def __init__(self) -> None:
        super().__init__()
        self.users = 0
        self._last: dict[tuple[str, object], float] = {}
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg)
        now = time.monotonic()
        if now - self._last.get(key, -CLIENT_LOG_INTERVAL) < CLIENT_LOG_INTERVAL:
            self.suppressed += 1
            return False
        self._last[key] = now
        return True

    def attach(self) -> None:
        if self.users == 0:
            for name in _CLIENT_LOGGERS:
                logging.getLogger(name).addFilter(self)
        self.users += 1

    def detach(self) -> None:
        self.users -= 1
        if self.users == 0:
            for name in _CLIENT_LOGGERS:
                logging.getLogger(name).removeFilter(self)
            self._last.clear()


_quiet_filter = _RateLimit()
