"""Export policy: redaction of secret-looking tags, truncation, tail sampling helpers."""

from __future__ import annotations

import asyncio

import pytest

import flowtracker as ft
from flowtracker._wire.policy import ExportPolicy


class TestRedaction:
    @pytest.mark.parametrize(
        "key",
        [
            "authorization",
            "Authorization",
            "http.request.header.cookie",
            "http.response.header.set-cookie",
            "db.password",
            "user_passwd",
            "client_secret",
            "access_token",
            "x-api-key",
            "API_KEY",
        ],
    )
    def test_secret_keys(self, key):
        """Keys whose last part is, or ends in, a secret word are redacted."""
        assert ExportPolicy().is_secret(key)

    @pytest.mark.parametrize(
        "key",
        ["llm.token_count", "tokenizer", "secretary", "cookie_consent_shown", "http.method", "db.query"],
    )
    def test_innocent_keys(self, key):
        """Keys that merely contain a secret word are not (no false positives)."""
        assert not ExportPolicy().is_secret(key)

    async def test_redacted_at_export_and_counted(self, memory):
        """Secret tag values never reach an exporter; the count is in stats; values are never scrubbed."""
        async with ft.Tracker(exporters=[memory]) as tracker:  # noqa: SIM117 - close after the span
            async with ft.span("login", password="hunter2", user="bob") as s:
                s.set_tag("http.request.header.authorization", "Bearer abc")
                s.set_tag("note", "my password is hunter2")  # a value: left alone
                s.add_event("retry", api_key="k-123")
        span = memory.traces[0]["spans"][0]
        assert span["tags"]["password"] == "[REDACTED]"
        assert span["tags"]["http.request.header.authorization"] == "[REDACTED]"
        assert span["tags"]["user"] == "bob"
        assert span["tags"]["note"] == "my password is hunter2"
        assert span["events"][0]["attributes"]["api_key"] == "[REDACTED]"
        assert tracker.stats.tags_redacted == 3

    async def test_configurable_and_off(self, memory):
        """redact_keys replaces the default words; an empty set turns redaction off."""
        async with ft.Tracker(exporters=[memory], redact_keys={"ssn"}):
            with ft.span("a", ssn="123", password="p"):
                pass
        async with ft.Tracker(exporters=[memory], redact_keys=()):
            with ft.span("b", password="p"):
                pass
        first, second = (t["spans"][0]["tags"] for t in memory.traces)
        assert first == {"ssn": "[REDACTED]", "password": "p"}
        assert second == {"password": "p"}


class TestTruncation:
    async def test_max_value_length_counts(self, memory):
        """Strings over max_value_length are cut, marked, and counted in stats."""
        async with ft.Tracker(exporters=[memory], max_value_length=32) as tracker:
            with ft.span("n" * 40, sql="s" * 100):
                pass
        span = memory.traces[0]["spans"][0]
        assert span["tags"]["sql"] == "s" * 32 + "…[truncated 68 chars]"
        assert span["name"] == "n" * 32 + "…[truncated 8 chars]"
        assert tracker.stats.values_truncated == 2

    def test_nonsense_limit_rejected(self):
        """A limit too small to be useful is a clear error."""
        with pytest.raises(ValueError, match="max_string"):
            ft.Tracker(exporters=[], max_value_length=3)


class TestTailSamplers:
    async def test_keep_errors_and_slow(self, memory):
        """keep_errors_and_slow keeps every error and every slow trace, and drops the rest at rate 0."""
        sampler = ft.keep_errors_and_slow(slower_than_ms=30, rate=0.0)
        async with ft.Tracker(exporters=[memory], tail_sampler=sampler) as tracker:
            for _ in range(10):
                with ft.span("fast"):
                    pass
            async with ft.span("slow"):
                await asyncio.sleep(0.04)
            with pytest.raises(KeyError), ft.span("failed"), ft.span("inner"):
                raise KeyError("x")
        assert sorted(t["spans"][0]["name"] for t in memory.traces) == ["failed", "slow"]
        assert tracker.stats.traces_sampled_out == 10

    async def test_rate_keeps_a_share(self, memory):
        """rate keeps about that share of the unremarkable traces."""
        async with ft.Tracker(exporters=[memory], tail_sampler=ft.keep_errors_and_slow(10_000, rate=0.3)):
            for _ in range(2000):
                with ft.span("fast"):
                    pass
        assert 450 < len(memory.traces) < 750

    def test_rate_validated(self):
        """A rate outside 0..1 is rejected."""
        with pytest.raises(ValueError, match="rate"):
            ft.keep_errors_and_slow(1, rate=1.5)
