"""asyncpg instrumentation, against a real PostgreSQL (tests/postgres_server.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import orjson
import pytest

import flowtracker as ft
from flowtracker.instrumentation import _safety
from flowtracker.instrumentation import asyncpg as instrument_asyncpg
from tests.postgres_server import DATABASE, PostgresServer, postgres, wait_for_backend  # noqa: F401

SECRET = "s3cret-parameter-value"


@pytest.fixture
def instrumented() -> Iterator[None]:
    """asyncpg instrumented for the test, restored afterwards."""
    instrument_asyncpg.install()
    yield
    instrument_asyncpg.uninstall()


@pytest.fixture
async def con(postgres: PostgresServer, instrumented: None) -> AsyncIterator[asyncpg.Connection]:  # noqa: F811
    """A connection to the test database with an empty ``users`` table."""
    connection = await asyncpg.connect(postgres.dsn)
    await connection.execute(
        "CREATE TABLE IF NOT EXISTS users (id int PRIMARY KEY, name text); TRUNCATE users"
    )
    yield connection
    await connection.close()


def client_spans(memory: ft.MemoryExporter) -> list[dict[str, Any]]:
    return [s for t in memory.traces for s in t["spans"] if s.get("kind") == "client"]


async def traced(fn: Any) -> Any:
    """Runs ``fn()`` inside a ``handler`` span and returns its result."""
    async with ft.span("handler"):
        return await fn()


class TestStatements:
    """Every statement method of a connection records one client span."""

    async def test_connection_methods(self, con, tracker, memory, postgres) -> None:  # noqa: F811
        """execute, executemany, fetch, fetchrow, fetchval, fetchmany: one span each, named and tagged."""

        async def work() -> None:
            await con.execute("INSERT INTO users VALUES ($1, $2)", 1, SECRET)
            await con.executemany("INSERT INTO users VALUES ($1, $2)", [(2, "b"), (3, SECRET)])
            assert len(await con.fetch("SELECT * FROM users WHERE name = $1", SECRET)) == 2
            assert (await con.fetchrow("SELECT name FROM users WHERE id = $1", 2))["name"] == "b"
            assert await con.fetchval("SELECT count(*) FROM users") == 3
            rows = await con.fetchmany("UPDATE users SET name = $2 WHERE id = $1 RETURNING id", [(1, "x")])
            assert [r["id"] for r in rows] == [1]

        await traced(work)
        await tracker.flush()
        spans = client_spans(memory)
        assert [s["name"] for s in spans] == [
            "INSERT users", "INSERT users", "SELECT users", "SELECT users", "SELECT users", "UPDATE users",
        ]  # fmt: skip
        root = memory.traces[0]["spans"][0]
        assert {s["parent_id"] for s in spans} == {root["span_id"]}
        assert spans[0]["tags"] == {
            "db.system": "postgresql",
            "db.statement": "INSERT INTO users VALUES ($1, $2)",
            "db.name": DATABASE,
            "net.peer.name": "127.0.0.1",
            "net.peer.port": postgres.port,
        }
        assert all(s["status"] == "ok" for s in spans)
        assert SECRET not in orjson.dumps(memory.traces).decode()

    async def test_pool_methods(self, postgres, instrumented, tracker, memory) -> None:  # noqa: F811
        """A pool's execute/fetchval, an acquired connection's calls and the pool's reset on release
        are recorded like a connection's."""
        async with asyncpg.create_pool(postgres.dsn, min_size=1, max_size=2) as pool:

            async def work() -> None:
                assert await pool.fetchval("SELECT 1") == 1
                await pool.execute("SELECT pg_catalog.now()")
                async with pool.acquire() as connection:
                    assert await connection.fetchrow("SELECT 2 AS two") is not None

            await traced(work)
        await tracker.flush()
        statements = [s["tags"]["db.statement"] for s in client_spans(memory)]
        # Each release runs the pool's reset query: a round trip the caller waits for, so recorded
        # too, and named for what it is (it starts with a SELECT, which read as a query of the app's).
        reset = statements[1]
        assert reset.startswith("SELECT pg_advisory_unlock_all();")
        assert statements == ["SELECT 1", reset, "SELECT pg_catalog.now()", reset, "SELECT 2 AS two", reset]
        names = [s["name"] for s in client_spans(memory)]
        assert names == ["SELECT", "RESET connection"] * 3
        assert {s["tags"]["db.name"] for s in client_spans(memory)} == {DATABASE}

    async def test_prepared_statements(self, con, tracker, memory) -> None:
        """A prepared statement's fetch/fetchrow/fetchval/fetchmany/executemany each record a span."""
        insert = await con.prepare("INSERT INTO users VALUES ($1, $2)")
        select = await con.prepare("SELECT id FROM users WHERE id >= $1 ORDER BY id")

        async def work() -> None:
            await insert.executemany([(1, SECRET), (2, "b")])
            assert [r["id"] for r in await select.fetch(1)] == [1, 2]
            assert (await select.fetchrow(2))["id"] == 2
            assert await select.fetchval(1) == 1
            assert len(await select.fetchmany([(1,), (2,)])) == 3

        await traced(work)
        await tracker.flush()
        spans = client_spans(memory)
        assert [s["name"] for s in spans] == ["INSERT users"] + ["SELECT users"] * 4
        assert spans[1]["tags"]["db.statement"] == "SELECT id FROM users WHERE id >= $1 ORDER BY id"
        assert spans[1]["tags"]["net.peer.name"] == "127.0.0.1"
        assert SECRET not in orjson.dumps(memory.traces).decode()

    async def test_cursors_one_span_per_round_trip(self, con, tracker, memory) -> None:
        """Iterating a cursor records one span per prefetch batch; Cursor.fetch/fetchrow/forward one each."""
        await con.executemany("INSERT INTO users VALUES ($1, $2)", [(i, "n") for i in range(5)])

        async def work() -> None:
            async with con.transaction():
                seen = [r["id"] async for r in con.cursor("SELECT id FROM users ORDER BY id", prefetch=2)]
                assert seen == [0, 1, 2, 3, 4]
                cursor = await con.cursor("SELECT id FROM users WHERE id >= $1 ORDER BY id", 0)
                assert len(await cursor.fetch(2)) == 2
                assert await cursor.forward(1) == 1
                assert (await cursor.fetchrow())["id"] == 3

        await traced(work)
        await tracker.flush()
        names = [s["name"] for s in client_spans(memory)]
        # BEGIN; 3 batches of 2, 2, 1 (the last one finds the end); fetch, forward, fetchrow; COMMIT.
        assert names == ["BEGIN", *["SELECT users"] * 6, "COMMIT"]
        cursor_span = client_spans(memory)[4]
        assert cursor_span["tags"]["db.statement"] == "SELECT id FROM users WHERE id >= $1 ORDER BY id"

    async def test_copy(self, con, tracker, memory, tmp_path) -> None:
        """copy_records_to_table, copy_to_table, copy_from_table and copy_from_query each record a span."""
        source = tmp_path / "in.csv"
        source.write_text("10,ten\n11,eleven\n")
        out = tmp_path / "out.csv"

        async def work() -> None:
            await con.copy_records_to_table("users", records=[(1, SECRET)], schema_name="public")
            await con.copy_to_table("users", source=source, format="csv")
            await con.copy_from_table("users", output=out)
            await con.copy_from_query("SELECT id FROM users WHERE id > $1", 5, output=tmp_path / "q")

        await traced(work)
        await tracker.flush()
        assert len(out.read_text().splitlines()) == 3
        spans = client_spans(memory)
        copy_query = spans[3]
        # copy_from_query quotes its arguments through the server: a nested round trip, the COPY span's child.
        quoting = next(s for s in spans if s["parent_id"] == copy_query["span_id"])
        assert quoting["tags"]["db.statement"].startswith("SELECT quote_literal(")
        spans.remove(quoting)
        assert [(s["name"], s["tags"]["db.statement"]) for s in spans] == [
            ("COPY public.users", "COPY public.users FROM STDIN"),
            ("COPY users", "COPY users FROM STDIN"),
            ("COPY users", "COPY users TO STDOUT"),
            ("COPY", "COPY (SELECT id FROM users WHERE id > $1) TO STDOUT"),
        ]
        assert SECRET not in orjson.dumps(memory.traces).decode()


class TestNoTrace:
    """A statement made with no current span starts no trace."""

    async def test_no_current_span_no_trace(self, con, tracker, memory) -> None:
        """Pool pings and background queries outside any span produce nothing."""
        assert await con.fetchval("SELECT 1") == 1
        await con.execute("SELECT 2")
        await tracker.flush()
        assert memory.traces == []
        assert tracker.stats.traces_completed == 0

    async def test_suppressed_work_records_nothing(self, con, tracker, memory) -> None:
        """Inside flowtracker's own suppressed work, statements record no span."""
        from flowtracker._core import suppressed

        async with ft.span("handler"):
            with suppressed():
                await con.fetchval("SELECT 1")
        await tracker.flush()
        assert client_spans(memory) == []


class TestErrors:
    """A failing statement: status error, and the caller sees exactly what asyncpg raised."""

    async def test_statement_error(self, con, tracker, memory) -> None:
        """A SQL error ends the span with status error; the same exception reaches the caller."""

        async def work() -> None:
            await con.fetch("SELECT * FROM no_such_table WHERE id = $1", 1)

        with pytest.raises(asyncpg.UndefinedTableError):
            await traced(work)
        await tracker.flush()
        (span,) = client_spans(memory)
        assert span["name"] == "SELECT no_such_table"
        assert span["status"] == "error"
        assert span["error"]["type"] == "asyncpg.exceptions.UndefinedTableError"

    async def test_connection_lost_mid_query(self, postgres, con, tracker, memory) -> None:  # noqa: F811
        """pg_terminate_backend from another connection mid-query: same exception, span error."""
        killer = await asyncpg.connect(postgres.dsn)
        try:
            pid = con.get_server_pid()

            async def work() -> None:
                await con.fetchval("SELECT pg_sleep(30)")

            query = asyncio.ensure_future(traced(work))
            await wait_for_backend(killer, pid, "state = 'active'")
            assert await killer.fetchval("SELECT pg_terminate_backend($1)", pid) is True
            with pytest.raises((asyncpg.AdminShutdownError, asyncpg.ConnectionDoesNotExistError)) as caught:
                await query
        finally:
            await killer.close()
        await tracker.flush()
        (span,) = client_spans(memory)
        assert span["status"] == "error"
        assert span["error"]["type"] == f"asyncpg.exceptions.{type(caught.value).__name__}"

    async def test_cancelled_mid_query(self, postgres, con, tracker, memory) -> None:  # noqa: F811
        """A task cancelled mid-statement: CancelledError reaches the caller, the span is
        ``cancelled`` (not an error), and the connection stays usable as asyncpg leaves it."""
        observer = await asyncpg.connect(postgres.dsn)
        try:
            query = asyncio.ensure_future(traced(lambda: con.fetchval("SELECT pg_sleep(30)")))
            await wait_for_backend(observer, con.get_server_pid(), "state = 'active'")
            query.cancel()
            with pytest.raises(asyncio.CancelledError):
                await query
        finally:
            await observer.close()
        assert await con.fetchval("SELECT 3") == 3
        await tracker.flush()
        by_statement = {s["tags"]["db.statement"]: s for s in client_spans(memory)}
        assert by_statement["SELECT pg_sleep(30)"]["status"] == "cancelled"

    async def test_bytes_statement_behaves_as_uninstrumented(self, postgres, con, tracker, memory) -> None:  # noqa: F811
        """A statement given as bytes fails exactly as it does without flowtracker (type and message)."""
        async with ft.span("handler"):
            with pytest.raises(Exception) as traced_error:  # noqa: PT011 (whatever asyncpg raises)
                await con.fetchval(b"SELECT 1")
        instrument_asyncpg.uninstall()
        plain = await asyncpg.connect(postgres.dsn)
        try:
            with pytest.raises(Exception) as plain_error:  # noqa: PT011
                await plain.fetchval(b"SELECT 1")
        finally:
            await plain.close()
        assert type(traced_error.value) is type(plain_error.value)
        assert str(traced_error.value) == str(plain_error.value)
        await tracker.flush()
        (span,) = client_spans(memory)
        assert (span["name"], span["tags"]["db.statement"], span["status"]) == ("SELECT", "SELECT 1", "error")

    async def test_megabyte_statement_is_cut_like_any_tag(self, con, tracker, memory) -> None:
        """A megabyte statement runs; its db.statement tag goes through the value-length limit."""
        statement = "SELECT 1 " + "-" * 1_000_000 + "\n"
        async with ft.span("handler"):
            assert await con.fetchval(statement) == 1
        await tracker.flush()
        (span,) = client_spans(memory)
        assert span["name"] == "SELECT"
        assert len(span["tags"]["db.statement"]) < 10_000
        assert tracker.stats.values_truncated >= 1

    async def test_statement_key_redaction(self, con, memory) -> None:
        """db.statement is a tag like any other: a tracker redacting 'statement' keys redacts it."""
        async with ft.Tracker(exporters=[memory], redact_keys={"statement"}) as tracker:
            async with ft.span("handler"):
                await con.fetchval("SELECT $1::text", SECRET)
            await tracker.flush()
        (span,) = client_spans(memory)
        assert span["tags"]["db.statement"] == "[REDACTED]"

    async def test_own_failure_never_breaks_the_call(self, con, tracker, memory, monkeypatch) -> None:
        """A bug in flowtracker's naming is counted and logged once; the query still returns its rows."""

        def broken(*args: object) -> str:
            raise RuntimeError("naming bug")

        monkeypatch.setattr(instrument_asyncpg, "span_name", broken)
        before = _safety.failures.get("asyncpg", 0)
        async with ft.span("handler"):
            assert await con.fetchval("SELECT 41 + 1") == 42
        assert _safety.failures["asyncpg"] == before + 1
        await tracker.flush()
        assert client_spans(memory) == []


class TestInstallUninstall:
    """install() and uninstall() are idempotent and exact."""

    async def test_install_twice_never_doubles_a_span(self, con, tracker, memory) -> None:
        """A second install() changes nothing: one statement, one span."""
        instrument_asyncpg.install()
        async with ft.span("handler"):
            await con.fetchval("SELECT 1")
        await tracker.flush()
        assert len(client_spans(memory)) == 1

    def test_uninstall_restores_the_original_functions(self) -> None:
        """After uninstall() (twice), asyncpg's classes hold their own functions again."""
        from asyncpg.connection import Connection
        from asyncpg.cursor import BaseCursor
        from asyncpg.prepared_stmt import PreparedStatement

        names = ("execute", "fetch", "fetchval", "copy_to_table")
        before = {name: Connection.__dict__[name] for name in names}
        before_stmt, before_exec = PreparedStatement.__dict__["fetch"], BaseCursor.__dict__["_exec"]
        instrument_asyncpg.install()
        assert Connection.__dict__["fetch"] is not before["fetch"]
        instrument_asyncpg.uninstall()
        instrument_asyncpg.uninstall()
        assert {name: Connection.__dict__[name] for name in names} == before
        assert PreparedStatement.__dict__["fetch"] is before_stmt
        assert BaseCursor.__dict__["_exec"] is before_exec

    async def test_missing_method_reported_not_fatal(self, postgres, tracker, memory, monkeypatch) -> None:  # noqa: F811
        """If a newer asyncpg lacks a method flowtracker wraps, install() reports it and wraps the rest."""
        from asyncpg.cursor import BaseCursor

        instrument_asyncpg.uninstall()
        monkeypatch.delattr(BaseCursor, "_exec")
        before = _safety.failures.get("asyncpg", 0)
        instrument_asyncpg.install()
        try:
            assert _safety.failures["asyncpg"] == before + 1
            connection = await asyncpg.connect(postgres.dsn)
            async with ft.span("handler"):
                assert await connection.fetchval("SELECT 1") == 1
            await connection.close()
        finally:
            instrument_asyncpg.uninstall()
        assert "_exec" not in BaseCursor.__dict__  # uninstall put back only what install changed
        await tracker.flush()
        assert [s["name"] for s in client_spans(memory)] == ["SELECT"]

    async def test_uninstall_while_a_call_is_in_flight(self, postgres, con, tracker, memory) -> None:  # noqa: F811
        """A statement in flight when uninstall() runs completes normally and ends its span;
        the next statement records nothing."""
        holder = await asyncpg.connect(postgres.dsn)
        try:
            await holder.execute("SELECT pg_advisory_lock(7)")

            async with ft.span("handler"):
                blocked = asyncio.ensure_future(con.execute("SELECT pg_advisory_lock(7)"))
                await wait_for_backend(holder, con.get_server_pid(), "wait_event_type = 'Lock'")
                instrument_asyncpg.uninstall()
                await holder.execute("SELECT pg_advisory_unlock(7)")
                assert await blocked == "SELECT 1"
                await con.execute("SELECT pg_advisory_unlock(7)")
        finally:
            await holder.close()
        await tracker.flush()
        spans = [s for s in client_spans(memory) if "pg_stat_activity" not in s["tags"]["db.statement"]]
        assert [(s["tags"]["db.statement"], s["status"]) for s in spans] == [
            ("SELECT pg_advisory_lock(7)", "ok")
        ]
