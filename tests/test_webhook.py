"""WebhookExporter against a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import logging
import socket
import ssl
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from http_receiver import Receiver

import flowtracker as ft
from flowtracker.exporters.webhook import DELIVERY_HEADER, SIGNATURE_HEADER, WebhookExporter, verify


def emit(count: int, prefix: str = "t") -> None:
    """Finishes ``count`` one-span traces in the current tracker."""
    for index in range(count):
        with ft.span(f"{prefix}{index}", index=index):
            pass


def delivered_ids(receiver: Receiver) -> list[str]:
    """Trace ids in every request the receiver answered 2xx (duplicates kept)."""
    return [trace["trace_id"] for request in receiver.delivered for trace in request.json()]


def fast(url: str, **options: object) -> WebhookExporter:
    """An exporter with test-sized backoff."""
    options = {"backoff": 0.01, "max_backoff": 0.05, "max_time": 10.0, **options}
    return WebhookExporter(url, **options)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def receiver() -> Receiver:
    async with Receiver() as running:
        yield running  # type: ignore[misc]


class TestDelivery:
    async def test_each_batch_is_one_json_array(self, receiver: Receiver) -> None:
        """Every request body is a JSON array of wire-format traces; all of them arrive once."""
        hook = fast(receiver.url + "/hook")
        async with ft.Tracker(exporters=[hook], service="svc", max_batch=8) as tracker:
            emit(50)
        assert tracker.stats.exporters["webhook"].exported == 50
        assert len(receiver.requests) >= 7
        for request in receiver.requests:
            assert request.path == "/hook"
            assert request.headers["Content-Type"] == "application/json"
            body = request.json()
            assert isinstance(body, list)
            assert 1 <= len(body) <= 8
            assert body[0]["service"] == "svc"
        ids = delivered_ids(receiver)
        assert len(ids) == len(set(ids)) == 50

    async def test_one_session_and_connection_reused(self, receiver: Receiver) -> None:
        """Sequential batches go over one kept-alive connection, not one per batch."""
        hook = fast(receiver.url)
        async with ft.Tracker(exporters=[hook]) as tracker:
            for _ in range(5):
                emit(3)
                await tracker.flush()
        assert len(receiver.requests) == 5
        assert len({request.peer_port for request in receiver.requests}) == 1

    async def test_gzip(self, receiver: Receiver) -> None:
        """With compress=True the body on the wire is gzip, declared in Content-Encoding."""
        async with ft.Tracker(exporters=[fast(receiver.url, compress=True)]):
            emit(10)
        request = receiver.requests[0]
        assert request.headers["Content-Encoding"] == "gzip"
        assert request.raw[:2] == b"\x1f\x8b"
        assert len(request.json()) == 10

    async def test_custom_headers_and_user_agent(self, receiver: Receiver) -> None:
        """Configured headers go with every request, next to a flowtracker User-Agent."""
        hook = fast(receiver.url, headers={"Authorization": "Bearer t0k"})
        async with ft.Tracker(exporters=[hook]):
            emit(1)
        headers = receiver.requests[0].headers
        assert headers["Authorization"] == "Bearer t0k"
        assert headers["User-Agent"].startswith("flowtracker/")


class TestRetries:
    async def test_503s_then_recovery_loses_nothing(self, receiver: Receiver) -> None:
        """Three 503s are retried; after close the receiver holds exactly the N traces, once each."""
        receiver.script = [503, 503, 503]
        hook = fast(receiver.url)
        async with ft.Tracker(exporters=[hook], max_batch=16) as tracker:
            emit(200)
        stats = tracker.stats.exporters["webhook"]
        ids = delivered_ids(receiver)
        assert len(ids) == len(set(ids)) == 200
        assert (stats.exported, stats.failed, stats.dropped, stats.queued) == (200, 0, 0, 0)
        assert hook.attempts == len(receiver.requests) == len(receiver.delivered) + 3

    async def test_retry_after_is_honoured(self, receiver: Receiver) -> None:
        """A 429 with Retry-After: 1 delays the next attempt by at least about a second."""
        receiver.script = [(429, {"Retry-After": "1"})]
        async with ft.Tracker(exporters=[fast(receiver.url)]) as tracker:
            emit(1)
        first, second = receiver.requests
        assert second.at - first.at >= 0.9
        assert tracker.stats.exporters["webhook"].exported == 1

    async def test_other_4xx_not_retried(self, receiver: Receiver) -> None:
        """A 400 fails the batch at once (one request); the next batch goes through."""
        receiver.script = [400]
        async with ft.Tracker(exporters=[fast(receiver.url)]) as tracker:
            emit(4)
            await tracker.flush()
            emit(3)
        assert [request.status for request in receiver.requests] == [400, 200]
        stats = tracker.stats.exporters["webhook"]
        assert (stats.exported, stats.failed) == (3, 4)

    async def test_gives_up_after_max_retries(self, receiver: Receiver) -> None:
        """With max_retries=2 a batch is tried three times, then counted failed."""
        receiver.script = [500] * 10
        async with ft.Tracker(exporters=[fast(receiver.url, max_retries=2)]) as tracker:
            emit(5)
        assert len(receiver.requests) == 3
        assert tracker.stats.exporters["webhook"].failed == 5

    async def test_retry_after_beyond_budget_fails_without_waiting(self, receiver: Receiver) -> None:
        """A Retry-After longer than what is left of max_time ends the batch right away."""
        receiver.script = [(503, {"Retry-After": "120"})]
        async with ft.Tracker(exporters=[fast(receiver.url, max_time=5.0)]) as tracker:
            emit(2)
            assert await tracker.flush(timeout=4.0)
        assert len(receiver.requests) == 1
        assert tracker.stats.exporters["webhook"].failed == 2

    async def test_timeout_retried_with_same_delivery_id(self, receiver: Receiver) -> None:
        """An attempt that times out is retried, carrying the same delivery id."""
        receiver.script = [("hang", 1.0)]
        async with ft.Tracker(exporters=[fast(receiver.url, timeout=0.2)]) as tracker:
            emit(2)
        first, second = receiver.requests
        assert first.headers[DELIVERY_HEADER] == second.headers[DELIVERY_HEADER]
        assert len(receiver.delivered) == 1
        assert tracker.stats.exporters["webhook"].exported == 2

    async def test_a_batch_sent_again_carries_its_delivery_id(self, receiver: Receiver) -> None:
        """A batch sent a second time (as the lane does when the loop ended under its export)
        carries the same delivery id, so a receiver drops it; another batch has its own id."""
        memory = ft.MemoryExporter()
        async with ft.Tracker(exporters=[memory]):
            emit(3)
        batch, other = memory.records[:2], memory.records[2:]
        hook = fast(receiver.url)
        try:
            for traces in (batch, batch, other):
                await hook.export(traces)
        finally:
            await hook.aclose()
        first, again, third = (request.headers[DELIVERY_HEADER] for request in receiver.delivered)
        assert first == again != third
        assert len(first) == 32

    async def test_connection_refused_then_server_starts(self) -> None:
        """Connection errors are retried until the server comes up; nothing is lost."""
        port = free_port()
        late = Receiver()
        hook = fast(f"http://127.0.0.1:{port}/", max_retries=1000)

        async def start_later() -> None:
            await asyncio.sleep(0.3)
            await late.start(port)

        try:
            async with ft.Tracker(exporters=[hook], max_batch=10) as tracker:
                starter = asyncio.create_task(start_later())
                emit(30)
                await tracker.flush()
                await starter
            assert len(delivered_ids(late)) == 30
            assert tracker.stats.exporters["webhook"].exported == 30
            assert hook.attempts > len(late.requests)  # some attempts found nobody listening
        finally:
            await late.close()

    async def test_unreachable_is_counted_and_logged_once(self, caplog: pytest.LogCaptureFixture) -> None:
        """Batches that cannot be delivered are counted failed, the app sees nothing, one log line."""
        hook = fast(f"http://127.0.0.1:{free_port()}/", max_retries=1)
        caplog.set_level(logging.WARNING)
        async with ft.Tracker(exporters=[hook]) as tracker:
            for _ in range(3):
                emit(2)
                await tracker.flush()
        stats = tracker.stats.exporters["webhook"]
        assert (stats.exported, stats.failed) == (0, 6)
        assert hook.attempts == 6
        warnings = [record for record in caplog.records if record.levelno >= logging.WARNING]
        assert len(warnings) == 1, [record.getMessage() for record in warnings]


class TestOutageLogging:
    async def test_receiver_down_then_up_says_failed_then_recovered(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The webhook's peer refuses connections, then listens: one line for the failure, one for
        the recovery (with the failed count), nothing per batch or per retry."""
        port = free_port()
        late = Receiver()
        hook = fast(f"http://127.0.0.1:{port}/", max_retries=0)
        caplog.set_level(logging.WARNING, logger="flowtracker")
        try:
            async with ft.Tracker(exporters=[hook]) as tracker:
                for _ in range(4):
                    emit(2)
                    await tracker.flush()
                await late.start(port)
                for _ in range(3):
                    emit(1)
                    await tracker.flush()
        finally:
            await late.close()
        assert tracker.stats.exporters["webhook"][:2] == (3, 8)
        lines = [r.getMessage() for r in caplog.records if r.name == "flowtracker"]
        assert len(lines) == 2, lines
        assert lines[0].startswith("exporter webhook failed: DeliveryError(")
        assert lines[0].endswith("; 2 traces failed")
        assert lines[1] == (
            "exporter webhook recovered: exporting again after 8 failed traces (6 since the last message)"
        )


class TestRetrySettings:
    def test_one_settings_object_for_webhook_and_otlp(self) -> None:
        """The webhook and OTLP exporters hold one RetrySettings, built from the same keyword
        arguments with the same documented defaults; only the statuses they retry differ."""
        from flowtracker.exporters._http import OTLP_RETRY_STATUSES, WEBHOOK_RETRY_STATUSES, RetrySettings

        assert WebhookExporter("http://h/").retry == RetrySettings(5, 25.0, 0.5, 10.0, WEBHOOK_RETRY_STATUSES)
        assert ft.OTLPExporter("http://h/v1/traces", encoding="json").retry == RetrySettings(
            5, 25.0, 0.5, 10.0, OTLP_RETRY_STATUSES
        )
        options = {"max_retries": 2, "max_time": 5.0, "backoff": 0.1, "max_backoff": 1.0}
        hook = WebhookExporter("http://h/", **options)  # type: ignore[arg-type]
        otlp = ft.OTLPExporter("http://h/v1/traces", encoding="json", **options)  # type: ignore[arg-type]
        assert dataclasses.replace(hook.retry, retry_statuses=OTLP_RETRY_STATUSES) == otlp.retry
        assert hook.retry.retries(500)
        assert not otlp.retry.retries(500)
        assert hook.retry.retries(429)
        assert otlp.retry.retries(429)

    @pytest.mark.parametrize(
        "options", [{"max_retries": -1}, {"max_time": 0}, {"backoff": -0.1}, {"max_backoff": -1}]
    )
    def test_bad_settings_fail_at_construction(self, options: dict[str, float]) -> None:
        """A negative retry count or delay, or no time at all, raises when the exporter is made."""
        with pytest.raises(ValueError, match="must be"):
            WebhookExporter("http://h/", **options)  # type: ignore[arg-type]

    def test_delays_stay_below_the_doubling_bound(self) -> None:
        """The n-th retry waits a random time below min(max_backoff, backoff * 2**(n-1))."""
        from flowtracker.exporters._http import RetrySettings

        settings = RetrySettings(backoff=0.1, max_backoff=0.5)
        for retry, bound in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (10, 0.5)):
            delays = [settings.delay(retry) for _ in range(200)]
            assert all(0 <= delay <= bound for delay in delays)
            assert max(delays) > bound / 2  # drawn across the range, not pinned


class TestSignature:
    @staticmethod
    def receiver_verifies(secret: bytes, body: bytes, header: str) -> bool:
        """The receiver check from docs/exporters.md, verbatim."""
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, header)

    @pytest.mark.parametrize("compress", [False, True])
    async def test_signature_verifies(self, receiver: Receiver, compress: bool) -> None:
        """The signature header is the HMAC-SHA256 of the (decompressed) JSON body."""
        hook = fast(receiver.url, secret="s3cret", compress=compress)
        async with ft.Tracker(exporters=[hook]):
            emit(3)
        request = receiver.requests[0]
        header = request.headers[SIGNATURE_HEADER]
        assert self.receiver_verifies(b"s3cret", request.body, header)
        assert verify("s3cret", request.body, header)
        assert not self.receiver_verifies(b"wrong", request.body, header)
        assert not verify("s3cret", request.body + b" ", header)

    async def test_no_signature_without_secret(self, receiver: Receiver) -> None:
        """Without a secret no signature header is sent."""
        async with ft.Tracker(exporters=[fast(receiver.url)]):
            emit(1)
        assert SIGNATURE_HEADER not in receiver.requests[0].headers


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl CLI."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


class TestTLS:
    async def test_self_signed_rejected_by_default(self, certificate: tuple[Path, Path]) -> None:
        """Certificates are verified by default: an untrusted one fails the batch, not retried."""
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(*certificate)
        async with Receiver() as receiver:
            await receiver.close()
            url = await receiver.start(ssl_context=server)
            hook = fast(url)
            async with ft.Tracker(exporters=[hook]) as tracker:
                emit(2)
        assert receiver.requests == []
        assert hook.attempts == 1
        assert tracker.stats.exporters["webhook"].failed == 2

    async def test_trusted_context_delivers(self, certificate: tuple[Path, Path]) -> None:
        """An SSLContext that trusts the server's certificate delivers over HTTPS."""
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(*certificate)
        client = ssl.create_default_context(cafile=str(certificate[0]))
        async with Receiver() as receiver:
            await receiver.close()
            url = await receiver.start(ssl_context=server)
            async with ft.Tracker(exporters=[fast(url, tls=client)]) as tracker:
                emit(2)
        assert len(delivered_ids(receiver)) == 2
        assert tracker.stats.exporters["webhook"].exported == 2


class TestCounting:
    async def test_stats_account_for_every_trace(self, receiver: Receiver) -> None:
        """exported + failed + dropped equals traces_completed, with a failure in the middle."""
        receiver.script = [404]
        async with ft.Tracker(exporters=[fast(receiver.url)], max_batch=5) as tracker:
            emit(5)
            await tracker.flush()
            emit(20)
        stats = tracker.stats
        lane = stats.exporters["webhook"]
        assert lane.exported + lane.failed + lane.dropped + lane.queued == stats.traces_completed == 25
        assert lane.failed == 5
        assert Counter(delivered_ids(receiver)).most_common(1)[0][1] == 1
