"""Exporters chosen by URL and by FLOWTRACKER_EXPORTERS."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import pytest
from http_receiver import Receiver

import flowtracker as ft
from flowtracker.exporters import (
    ConsoleExporter,
    FileExporter,
    KafkaExporter,
    OTLPExporter,
    WebhookExporter,
    exporter_from_url,
    exporters_from_env,
)
from flowtracker.exporters._config import QUERY_KEYS, split_urls


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as running:
        yield running


class TestSchemes:
    def test_each_scheme_builds_its_exporter(self) -> None:
        """console, file, http(s), kafka and the otlp schemes map to their exporters."""
        assert isinstance(exporter_from_url("console"), ConsoleExporter)
        file = exporter_from_url("file:///tmp/traces.jsonl")
        assert isinstance(file, FileExporter)
        assert str(file.path) == "/tmp/traces.jsonl"
        hook = exporter_from_url("https://hooks.example/x?token=1")
        assert isinstance(hook, WebhookExporter)
        assert hook.url == "https://hooks.example/x?token=1"
        kafka = exporter_from_url("kafka://k1:9092/traces")
        assert isinstance(kafka, KafkaExporter)
        assert (kafka.bootstrap_servers, kafka.topic) == ("k1:9092", "traces")

    @pytest.mark.parametrize(
        ("url", "endpoint", "encoding"),
        [
            ("otlp://collector", "http://collector:4318/v1/traces", "protobuf"),
            ("otlp+http://jaeger:4318", "http://jaeger:4318/v1/traces", "protobuf"),
            ("otlp+https://tempo.example", "https://tempo.example:4318/v1/traces", "protobuf"),
            ("otlp+http://c:9999/custom/path?encoding=json", "http://c:9999/custom/path", "json"),
        ],
    )
    def test_otlp_urls(self, url: str, endpoint: str, encoding: str) -> None:
        """OTLP URLs default to port 4318 and /v1/traces; the query picks the encoding."""
        otlp = exporter_from_url(url)
        assert isinstance(otlp, OTLPExporter)
        assert (otlp.endpoint, otlp.encoding) == (endpoint, encoding)

    def test_otlp_compression_and_headers_from_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """?compression=gzip turns gzip on; OTEL_EXPORTER_OTLP_HEADERS supplies headers."""
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s%20ecret,x-tenant=7")
        otlp = exporter_from_url("otlp://c?compression=gzip")
        assert isinstance(otlp, OTLPExporter)
        assert otlp.compression == "gzip"
        assert otlp._sender.headers == {"api-key": "s ecret", "x-tenant": "7"}

    def test_webhook_secret_from_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A webhook URL takes its signing secret from FLOWTRACKER_WEBHOOK_SECRET."""
        monkeypatch.setenv("FLOWTRACKER_WEBHOOK_SECRET", "s3cret")
        hook = exporter_from_url("http://127.0.0.1/x")
        assert isinstance(hook, WebhookExporter)
        assert hook.secret == "s3cret"

    def test_unknown_scheme_names_the_known_ones(self) -> None:
        """An unknown scheme fails with a message listing what is known."""
        with pytest.raises(ValueError, match=r"unknown flowtracker exporter 'ftp://x'.*kafka.*otlp\+http"):
            exporter_from_url("ftp://x")

    def test_missing_extra_is_named(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without aiokafka, a kafka:// URL says which extra to install."""
        monkeypatch.setitem(sys.modules, "aiokafka", None)
        monkeypatch.delitem(sys.modules, "flowtracker.exporters.kafka", raising=False)
        with pytest.raises(ModuleNotFoundError, match=r"flowtracker\[kafka\]"):
            exporter_from_url("kafka://k:9092/t")


# One valid value per documented query key, to build each scheme with each key.
KEY_VALUES = {
    "tag": "a",
    "tags": "a;b",
    "all_tags": "1",
    "markers": "1",
    "direction": "LR",
    "encoding": "json",
    "compression": "gzip",
    "service": "s",
    "timeout": "5",
}
BASES = {"otlp": "c", "otlp+http": "c", "otlp+https": "c", "otlp+grpc": "c", "otlp+grpcs": "c",
         "sankey": "/tmp/f.txt", "mermaid": "/tmp/f.md"}  # fmt: skip


class TestURLQuirks:
    @pytest.mark.parametrize("url", ["file://tmp/x.jsonl", "sankey://tmp/f.txt", "mermaid://out/f.md"])
    def test_host_part_in_a_path_url_is_refused(self, url: str) -> None:
        """A host in file:// (and the other path schemes) is probably a missing slash: say how to fix it."""
        scheme, rest = url.split("://")
        with pytest.raises(ValueError, match=rf"host part .*{scheme}:///{rest}"):
            exporter_from_url(url)

    def test_localhost_and_three_slashes_are_paths(self) -> None:
        """file://localhost/p and file:///p both name the absolute path /p."""
        for url in ("file://localhost/tmp/x.jsonl", "file:///tmp/x.jsonl"):
            exporter = exporter_from_url(url)
            assert isinstance(exporter, FileExporter)
            assert str(exporter.path) == "/tmp/x.jsonl"

    @pytest.mark.parametrize(
        ("url", "known"),
        [
            ("sankey:///tmp/f.txt?tga=currency", "all_tags, markers, tag, tags"),
            ("mermaid:///tmp/f.md?markers=1", "all_tags, direction, tag, tags"),
            ("otlp://c?encodng=json", "compression, encoding, service, timeout"),
            ("file:///tmp/x.jsonl?mode=a", "none"),
        ],
    )
    def test_unknown_query_key_lists_the_known_ones(self, url: str, known: str) -> None:
        """A query key the scheme does not read raises, naming it and the keys that scheme takes."""
        key = url.split("?")[1].split("=")[0]
        with pytest.raises(ValueError, match=rf"unknown option '{key}'.*URLs take: {known}$"):
            exporter_from_url(url)

    @pytest.mark.parametrize(
        ("scheme", "key"),
        [(scheme, key) for scheme, keys in QUERY_KEYS.items() if keys for key in sorted(keys)],
    )
    def test_every_known_key_is_accepted(self, scheme: str, key: str) -> None:
        """Each key in the table is one its scheme reads (the table and from_url agree)."""
        exporter_from_url(f"{scheme}://{BASES[scheme]}?{key}={KEY_VALUES[key]}")

    def test_webhook_query_belongs_to_the_target(self) -> None:
        """A webhook URL's query is part of the address, so it is not checked."""
        hook = exporter_from_url("https://hooks.example/x?anything=1")
        assert isinstance(hook, WebhookExporter)
        assert hook.url.endswith("?anything=1")


class TestEnvironment:
    def test_list_with_multi_broker_kafka_url(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Commas inside a Kafka broker list stay in that URL; others separate exporters."""
        monkeypatch.setenv("FLOWTRACKER_EXPORTERS", "console, kafka://k1:9092,k2:9092/traces,otlp://c")
        console, kafka, otlp = exporters_from_env()
        assert isinstance(console, ConsoleExporter)
        assert isinstance(kafka, KafkaExporter)
        assert kafka.bootstrap_servers == "k1:9092,k2:9092"
        assert isinstance(otlp, OTLPExporter)

    def test_split_urls(self) -> None:
        """Pieces that start no exporter continue the previous URL."""
        assert split_urls("a.jsonl,logging,,https://h/x?a=1,2") == ["a.jsonl", "logging", "https://h/x?a=1,2"]

    def test_none_means_no_exporters(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """FLOWTRACKER_EXPORTERS=none configures nothing."""
        monkeypatch.setenv("FLOWTRACKER_EXPORTERS", "none")
        assert exporters_from_env() == []

    def test_unknown_scheme_fails_at_tracker_creation(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A bad FLOWTRACKER_EXPORTERS fails when the tracker is made, not at the first trace."""
        monkeypatch.setenv("FLOWTRACKER_EXPORTERS", "console,gopher://x")
        with pytest.raises(ValueError, match="gopher"):
            ft.Tracker()

    async def test_tracker_exports_where_the_environment_says(
        self, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Tracker(exporters=None) delivers to the webhook and OTLP receiver named in the variable."""
        monkeypatch.setenv(
            "FLOWTRACKER_EXPORTERS",
            f"{receiver.url}/hook,otlp+http://127.0.0.1:{receiver.port}?encoding=json",
        )
        async with ft.Tracker(service="env") as tracker:
            with ft.span("from-env"):
                pass
        assert sorted(tracker.stats.exporters) == ["otlp", "webhook"]
        assert sorted(request.path for request in receiver.delivered) == ["/hook", "/v1/traces"]
