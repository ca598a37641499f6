"""Export policy: redaction of secret-looking tags, truncation, tail sampling helpers."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from web_helpers import collected, fetch, serve

import flowtracker as ft
from flowtracker._wire.policy import ExportPolicy, is_secret_name
from flowtracker.aiohttp import middleware
from flowtracker.integrations.http_server import build_options, header_tags

# Request headers whose values are credentials: recorded as [REDACTED], and
# redacted at export under any tag key that ends in them.
SECRET_HEADERS = [
    "Authorization",
    "Proxy-Authorization",
    "Cookie",
    "Set-Cookie",
    "X-Api-Key",
    "Api-Key",
    "X-Auth",
    "X-Auth-Token",
    "X-Access-Token",
    "X-CSRF-Token",
    "X-Session-Id",
    "X-Amz-Security-Token",
    "X-Hub-Signature-256",
    "X-Client-Secret",
]
# Header names that only look like one: recorded as they are.
INNOCENT_HEADERS = [
    "User-Agent",
    "X-Request-Id",
    ":authority",
    "WWW-Authenticate",
    "X-Session-Timeout",
    "X-Auth-User",
    "X-Tokenizer-Version",
    "X-Cookie-Consent",
    "Traceparent",
]
# Tag keys written in code: camelCase, dotted, SCREAMING_SNAKE.
SECRET_TAGS = [
    "accessToken",
    "APIKey",
    "user.sessionID",
    "aws_secret_access_key",
    "SECRET_KEY",
    "webhook.signature",
    "oauth2_refresh_token",
    "smtp.passphrase",
]
INNOCENT_TAGS = [
    "gen_ai.usage.input_tokens",
    "llm.max_tokens",
    "password_reset_requested",
    "cache.key",
    "redis.key",
    "game.possession",
    "auth.method_count",
]


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


class TestOneSecretRule:
    @pytest.mark.parametrize("name", SECRET_HEADERS)
    def test_secret_headers_are_caught_when_recorded_and_at_export(self, name):
        """A credential header is redacted when the middleware records it, and its tag key at export."""
        options = build_options(record_headers=[name])
        assert header_tags(options, {name: "v"}) == {f"http.request.header.{name.lower()}": "[REDACTED]"}
        assert ExportPolicy().is_secret(f"http.request.header.{name.lower()}")

    @pytest.mark.parametrize("name", INNOCENT_HEADERS)
    def test_innocent_headers_are_recorded_and_exported_as_they_are(self, name):
        """A header that merely contains a secret word (authority, authenticate, a timeout) is kept."""
        options = build_options(record_headers=[name])
        assert header_tags(options, {name: "v"}) == {f"http.request.header.{name.lower()}": "v"}
        assert not ExportPolicy().is_secret(f"http.request.header.{name.lower()}")

    @pytest.mark.parametrize("key", SECRET_TAGS)
    def test_secret_tag_keys(self, key):
        """Keys are cut into words at dots, dashes, underscores and camelCase humps; the last ones count."""
        assert ExportPolicy().is_secret(key)
        assert is_secret_name(key)

    @pytest.mark.parametrize("key", INNOCENT_TAGS)
    def test_innocent_tag_keys(self, key):
        """A secret word that does not end the key (token counts, flags, cache keys) is no secret."""
        assert not ExportPolicy().is_secret(key)

    async def test_recorded_headers_stay_redacted_when_export_redaction_is_off(self):
        """A real request: credentials recorded as [REDACTED] even with Tracker(redact_keys=()),
        other headers as sent (the header rule is applied before anything is stored)."""
        memory = ft.MemoryExporter()
        async with ft.Tracker(exporters=[memory], redact_keys=()) as tracker:

            async def ok(request: web.Request) -> web.Response:
                return web.Response(text="ok")

            recorded = [*SECRET_HEADERS, "X-Tenant"]
            app = web.Application(middlewares=[middleware(tracker, record_headers=recorded)])
            app.router.add_get("/", ok)
            sent = {name: f"value-{n}" for n, name in enumerate(SECRET_HEADERS)}
            async with serve(app) as url:
                await fetch(url + "/", headers={**sent, "X-Tenant": "acme"})
            (trace,) = await collected(tracker, memory, 1)
        tags = trace["spans"][0]["tags"]
        for name in sent:
            assert tags[f"http.request.header.{name.lower()}"] == "[REDACTED]", name
        assert tags["http.request.header.x-tenant"] == "acme"


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
