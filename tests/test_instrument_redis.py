"""ft.instrument("redis"): a span per command and per pipeline, asyncio and sync clients.

Against a real Redis (Debian's redis-server, started once for the session by
``tests/redis_server.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.client
import redis.client
from redis_server import redis_url  # noqa: F401  (the session's Redis)
from web_helpers import collected

import flowtracker as ft
from flowtracker.instrumentation import _safety

OWN = {
    (owner, name): owner.__dict__[name]
    for owner, name in (
        (redis.client.Redis, "execute_command"),
        (redis.client.Pipeline, "immediate_execute_command"),
        (redis.client.Pipeline, "execute"),
        (redis.asyncio.client.Redis, "execute_command"),
        (redis.asyncio.client.Pipeline, "immediate_execute_command"),
        (redis.asyncio.client.Pipeline, "execute"),
    )
}


def client_spans(trace: dict[str, Any]) -> list[dict[str, Any]]:
    return [span for span in trace["spans"] if span.get("kind") == "client"]


@pytest.fixture(autouse=True)
def instrumented() -> Iterator[None]:
    """redis instrumented for the test, restored afterwards."""
    assert ft.instrument("redis") == ["redis"]
    yield
    ft.uninstrument("redis")


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:  # noqa: F811
    """An asyncio client of the session's Redis, database 3 (emptied first)."""
    connection = redis.asyncio.Redis.from_url(redis_url.removesuffix("/0") + "/3")
    await connection.flushdb()
    yield connection
    await connection.aclose()


def peer_tags(client: Any) -> dict[str, Any]:
    kwargs = client.connection_pool.connection_kwargs
    return {
        "db.system": "redis",
        "db.redis.database_index": 3,
        "net.peer.name": "127.0.0.1",
        "net.peer.port": kwargs["port"],
    }


class TestCommands:
    async def test_commands_are_spans_named_by_the_command(self, tracker, memory, client):
        """SET and GET are `client` children named SET and GET; values become `?`, keys stay."""
        async with ft.span("handler") as parent:
            await client.set("user:1", "alice", ex=60)
            assert await client.get("user:1") == b"alice"
        (trace,) = await collected(tracker, memory, 1)
        set_span, get_span = client_spans(trace)
        assert (set_span["name"], get_span["name"]) == ("SET", "GET")
        assert set_span["parent_id"] == parent.span_id_hex
        assert set_span["tags"] == {**peer_tags(client), "db.statement": "SET user:1 ? ? ?"}
        assert get_span["tags"] == {**peer_tags(client), "db.statement": "GET user:1"}
        assert set_span["status"] == get_span["status"] == "ok"

    async def test_sync_client_in_a_worker_thread(self, tracker, memory, redis_url):  # noqa: F811
        """The sync client's commands (in a thread that copied the context) are spans too."""

        def work() -> Any:
            with redis.Redis.from_url(redis_url) as sync:
                sync.hset("h", mapping={"a": "1", "b": "2"})
                return sync.hgetall("h")

        async with ft.span("job"):
            assert await asyncio.to_thread(work) == {b"a": b"1", b"b": b"2"}
        (trace,) = await collected(tracker, memory, 1)
        statements = [s["tags"]["db.statement"] for s in client_spans(trace)]
        assert statements == ["HSET h ? ? ? ?", "HGETALL h"]
        assert client_spans(trace)[0]["tags"]["db.redis.database_index"] == 0

    async def test_auth_and_echo_hide_their_argument(self, tracker, memory, client):
        """ECHO's message is a value, AUTH's a secret: neither is recorded."""
        async with ft.span("handler"):
            assert await client.echo("private words") == b"private words"
            with pytest.raises(redis.AuthenticationError):
                await client.auth("s3cret")
        (trace,) = await collected(tracker, memory, 1)
        assert [s["tags"]["db.statement"] for s in client_spans(trace)] == ["ECHO ?", "AUTH ?"]

    async def test_library_error_propagates_unchanged(self, tracker, memory, client):
        """A command Redis rejects raises redis-py's own error, unchanged; its span is an error."""
        await client.lpush("list", "x")
        async with ft.span("handler"):
            with pytest.raises(redis.ResponseError) as traced:
                await client.get("list")
        ft.uninstrument("redis")
        with pytest.raises(redis.ResponseError) as plain:
            await client.get("list")
        assert str(traced.value) == str(plain.value)
        (trace,) = await collected(tracker, memory, 1)
        (span,) = client_spans(trace)
        assert span["status"] == "error"
        assert span["error"]["type"] == "redis.exceptions.ResponseError"
        assert span["error"]["message"].startswith("WRONGTYPE")

    async def test_binary_keys(self, tracker, memory, client):
        """A key that is not UTF-8 works, and is recorded with replacement characters."""
        key = b"\xff\xfeuser:\x00\x01"
        async with ft.span("handler"):
            await client.set(key, b"\x80value")
            assert await client.get(key) == b"\x80value"
        (trace,) = await collected(tracker, memory, 1)
        assert [s["tags"]["db.statement"] for s in client_spans(trace)] == [
            "SET \ufffd\ufffduser:\x00\x01 ?",
            "GET \ufffd\ufffduser:\x00\x01",
        ]

    async def test_megabyte_values(self, tracker, memory, client):
        """A megabyte value is stored and read back whole; the statement records `?` for it."""
        value = bytes(range(256)) * 4096
        async with ft.span("handler"):
            await client.set("big", value)
            assert await client.get("big") == value
        (trace,) = await collected(tracker, memory, 1)
        assert [s["tags"]["db.statement"] for s in client_spans(trace)] == ["SET big ?", "GET big"]


class TestPipelines:
    async def test_pipeline_is_one_span_with_count_and_names(self, tracker, memory, client):
        """A pipeline is one PIPELINE span: its length, command names and one `?`-statement per line."""
        async with ft.span("handler"):
            results = await client.pipeline(transaction=False).set("a", "1").incr("n").get("a").execute()
        assert results == [True, 1, b"1"]
        (trace,) = await collected(tracker, memory, 1)
        (span,) = client_spans(trace)
        assert span["name"] == "PIPELINE"
        assert span["tags"] == {
            **peer_tags(client),
            "db.statement": "SET a ?\nINCRBY n ?\nGET a",
            "db.redis.pipeline_length": 3,
            "db.redis.commands": "SET INCRBY GET",
        }

    async def test_transaction_and_watch(self, tracker, memory, client):
        """A MULTI/EXEC transaction is one PIPELINE span marked a transaction; WATCH-mode reads are spans."""
        await client.set("balance", "10")
        async with ft.span("handler"), client.pipeline() as pipe:
            await pipe.watch("balance")
            balance = int(await pipe.get("balance"))
            pipe.multi()
            pipe.set("balance", balance - 3)
            assert await pipe.execute() == [True]
        (trace,) = await collected(tracker, memory, 1)
        spans = client_spans(trace)
        assert [s["name"] for s in spans] == ["WATCH", "GET", "PIPELINE"]
        assert spans[2]["tags"]["db.redis.transaction"] is True
        assert spans[2]["tags"]["db.statement"] == "SET balance ?"

    async def test_sync_pipeline(self, tracker, memory, redis_url):  # noqa: F811
        """The sync client's pipeline is one PIPELINE span too; an empty one sends and records nothing."""

        def work() -> list[Any]:
            with redis.Redis.from_url(redis_url) as sync:
                assert sync.pipeline().execute() == []
                return list(sync.pipeline().set("k", "v").get("k").execute())

        async with ft.span("job"):
            assert await asyncio.to_thread(work) == [True, b"v"]
        (trace,) = await collected(tracker, memory, 1)
        (span,) = client_spans(trace)
        assert (span["name"], span["tags"]["db.redis.commands"]) == ("PIPELINE", "SET GET")
        assert span["tags"]["db.redis.transaction"] is True


class TestNotTraced:
    async def test_outside_a_span_nothing_is_recorded(self, tracker, memory, client):
        """A command with no current span (a background ping) starts no trace."""
        assert await client.ping() is True
        await tracker.flush()
        assert memory.traces == []

    async def test_uninstrument_restores_redis_exactly(self, tracker, memory, client):
        """After ft.uninstrument("redis") every wrapped method is redis-py's own and nothing is traced."""
        ft.uninstrument("redis")
        for (owner, name), own in OWN.items():
            assert owner.__dict__[name] is own
        async with ft.span("handler"):
            await client.get("k")
        (trace,) = await collected(tracker, memory, 1)
        assert client_spans(trace) == []

    async def test_uninstrument_while_a_command_is_in_flight(self, tracker, memory, client, redis_url):  # noqa: F811
        """A blocking BLPOP in flight when redis is uninstrumented returns its value; its span ends ok."""
        other = redis.asyncio.Redis.from_url(redis_url.removesuffix("/0") + "/3")
        try:
            async with ft.span("handler"):
                pop = asyncio.ensure_future(client.blpop(["queue"], timeout=5))
                for _ in range(500):  # until Redis says the BLPOP is blocked
                    if any(c.get("cmd") == "blpop" for c in await other.client_list()):
                        break
                    await asyncio.sleep(0.01)
                ft.uninstrument("redis")
                await other.lpush("queue", "job-1")
                assert list(await pop) == [b"queue", b"job-1"]
        finally:
            await other.aclose()
        (trace,) = await collected(tracker, memory, 1)
        # CLIENT LIST ran before the uninstrument (spans), LPUSH after it (none).
        statuses = {s["name"]: s["status"] for s in client_spans(trace)}
        assert statuses == {"BLPOP": "ok", "CLIENT LIST": "ok"}


class KeyThatBreaksDecoding(bytes):
    """A key redis-py sends as it is, but whose decode() (the instrumentation's) fails."""

    def decode(self, *args: Any, **kwargs: Any) -> str:
        raise RuntimeError("no decoding this key")


class TestOwnFailures:
    async def test_a_failure_in_the_instrumentation_never_breaks_the_call(
        self, tracker, memory, client, caplog
    ):
        """When building the statement fails the command still runs; the failure is counted, logged once."""
        before = _safety.failures.get("redis", 0)
        key = KeyThatBreaksDecoding(b"odd-key")
        with caplog.at_level(logging.ERROR, logger="flowtracker.instrumentation"):
            async with ft.span("handler"):
                await client.set(key, "v1")
                assert await client.get(key) == b"v1"
        assert _safety.failures["redis"] == before + 2
        logged = [r for r in caplog.records if "redis instrumentation failed" in r.getMessage()]
        assert len(logged) == (1 if before == 0 else 0)  # once per process
        (trace,) = await collected(tracker, memory, 1)
        assert client_spans(trace) == []
