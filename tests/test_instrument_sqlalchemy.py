"""SQLAlchemy instrumentation: sync and async engines, on SQLite (aiosqlite) and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import create_async_engine

import flowtracker as ft
from flowtracker.instrumentation import _safety
from flowtracker.instrumentation import asyncpg as instrument_asyncpg
from flowtracker.instrumentation import sqlalchemy as instrument_sqlalchemy
from tests.postgres_server import DATABASE, PostgresServer, postgres, wait_for_backend  # noqa: F401

SECRET = "s3cret-parameter-value"
users = sa.table("users", sa.column("id", sa.Integer), sa.column("name", sa.String))


@pytest.fixture
def instrumented() -> Iterator[None]:
    """SQLAlchemy instrumented for the test, restored afterwards."""
    instrument_sqlalchemy.install()
    yield
    instrument_sqlalchemy.uninstall()


@pytest.fixture
def engine(tmp_path: Path, instrumented: None) -> Iterator[Engine]:
    """A sync engine on a SQLite file with a ``users`` table."""
    created = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    with created.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    yield created
    created.dispose()


def client_spans(memory: ft.MemoryExporter) -> list[dict[str, Any]]:
    return [s for t in memory.traces for s in t["spans"] if s.get("kind") == "client"]


class TestSyncEngine:
    """A sync Engine records one client span per statement."""

    async def test_statements_named_and_tagged(self, engine, tracker, memory, tmp_path) -> None:
        """INSERT (one and many) and SELECT: spans named by operation, dialect and placeholders as tags."""
        with ft.span("handler"), engine.begin() as conn:
            conn.execute(users.insert(), {"id": 1, "name": SECRET})
            conn.execute(users.insert(), [{"id": 2, "name": "b"}, {"id": 3, "name": SECRET}])
            rows = conn.execute(sa.select(users.c.id).where(users.c.name == SECRET)).all()
            assert [r.id for r in rows] == [1, 3]
        await tracker.flush()
        spans = client_spans(memory)
        assert [s["name"] for s in spans] == ["INSERT users", "INSERT users", "SELECT users"]
        root = memory.traces[0]["spans"][0]
        assert {s["parent_id"] for s in spans} == {root["span_id"]}
        assert spans[2]["tags"] == {
            "db.system": "sqlite",
            "db.statement": "SELECT users.id \nFROM users \nWHERE users.name = ?",
            "db.name": str(tmp_path / "app.db"),
        }
        assert SECRET not in orjson.dumps(memory.traces).decode()

    async def test_no_current_span_no_trace(self, engine, tracker, memory) -> None:
        """Statements outside any span start no trace."""
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
        await tracker.flush()
        assert memory.traces == []

    async def test_statement_error(self, engine, tracker, memory) -> None:
        """A failing statement: status error, and the caller gets SQLAlchemy's own exception."""
        with ft.span("handler"), pytest.raises(sa.exc.OperationalError), engine.connect() as conn:
            conn.execute(sa.text("SELECT * FROM no_such_table"))
        await tracker.flush()
        (span,) = client_spans(memory)
        assert (span["name"], span["status"]) == ("SELECT no_such_table", "error")
        assert span["error"]["type"] == "sqlalchemy.exc.OperationalError"  # what the caller got

    async def test_bytes_statement_behaves_as_uninstrumented(self, engine, tracker, memory) -> None:
        """A statement given as bytes does what it does without flowtracker (here: the same error)."""

        def run() -> BaseException | None:
            try:
                with engine.connect() as conn:
                    conn.exec_driver_sql(b"SELECT 1")  # type: ignore[arg-type]
            except Exception as exc:
                return exc
            return None

        with ft.span("handler"):
            traced_error = run()
        instrument_sqlalchemy.uninstall()
        plain_error = run()
        assert type(traced_error) is type(plain_error)
        assert str(traced_error) == str(plain_error)

    async def test_megabyte_statement_is_cut_like_any_tag(self, engine, tracker, memory) -> None:
        """A megabyte statement runs; its db.statement goes through the value-length limit."""
        with ft.span("handler"), engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1 -- " + "x" * 1_000_000)).scalar() == 1
        await tracker.flush()
        (span,) = client_spans(memory)
        assert span["name"] == "SELECT"
        assert len(span["tags"]["db.statement"]) < 10_000
        assert tracker.stats.values_truncated >= 1

    async def test_own_failure_never_breaks_the_call(self, engine, tracker, memory, monkeypatch) -> None:
        """A bug in flowtracker's naming is counted; the statement returns its result."""

        def broken(*args: object) -> str:
            raise RuntimeError("naming bug")

        monkeypatch.setattr(instrument_sqlalchemy, "span_name", broken)
        before = _safety.failures.get("sqlalchemy", 0)
        with ft.span("handler"), engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 41 + 1")).scalar() == 42
        assert _safety.failures["sqlalchemy"] == before + 1
        await tracker.flush()
        assert client_spans(memory) == []


class TestAsyncEngine:
    """Async engines (greenlets) record into the caller's trace."""

    async def test_aiosqlite_spans_land_in_the_callers_trace(
        self, instrumented, tracker, memory, tmp_path
    ) -> None:
        """Concurrent tasks, each in its own span: each statement's span is a child of its own task's span."""
        db = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
        try:

            async def task(n: int) -> int:
                async with ft.span(f"task{n}"), db.connect() as conn:
                    return (await conn.execute(sa.text(f"SELECT {n} AS n"))).scalar_one()

            async with ft.span("handler"):
                assert await asyncio.gather(task(1), task(2)) == [1, 2]
        finally:
            await db.dispose()
        await tracker.flush()
        (trace,) = memory.traces
        by_id = {s["span_id"]: s for s in trace["spans"]}
        spans = client_spans(memory)
        assert sorted(
            (s["tags"]["db.statement"], by_id[s["parent_id"]]["name"], s["tags"]["db.system"]) for s in spans
        ) == [("SELECT 1 AS n", "task1", "sqlite"), ("SELECT 2 AS n", "task2", "sqlite")]

    async def test_postgresql_one_span_per_statement(self, postgres, instrumented, tracker, memory) -> None:  # noqa: F811
        """SQLAlchemy on asyncpg with both instrumented: the SQLAlchemy span alone, with net.peer.*; the
        driver's COMMIT, outside any statement, still recorded by asyncpg."""
        instrument_asyncpg.install()
        db = create_async_engine(postgres.dsn.replace("postgresql://", "postgresql+asyncpg://"))
        try:
            async with db.begin() as conn:
                await conn.execute(sa.text("CREATE TABLE IF NOT EXISTS users (id int, name text)"))
            async with ft.span("handler"), db.begin() as conn:
                await conn.execute(users.insert(), {"id": 1, "name": SECRET})
                rows = (await conn.execute(sa.select(users.c.id).where(users.c.name == SECRET))).all()
                assert [r.id for r in rows] == [1]
        finally:
            await db.dispose()
            instrument_asyncpg.uninstall()
        await tracker.flush()
        spans = client_spans(memory)
        assert [(s["name"], s["tags"]["db.system"]) for s in spans] == [
            ("INSERT users", "postgresql"), ("SELECT users", "postgresql"), ("COMMIT", "postgresql"),
        ]  # fmt: skip
        select = spans[1]
        statement = "SELECT users.id \nFROM users \nWHERE users.name = $1::VARCHAR"
        assert select["tags"]["db.statement"] == statement
        assert (select["tags"]["db.name"], select["tags"]["net.peer.name"]) == (DATABASE, "127.0.0.1")
        assert select["tags"]["net.peer.port"] == postgres.port
        assert SECRET not in orjson.dumps(memory.traces).decode()

    async def test_connection_lost_mid_query(self, postgres, instrumented, tracker, memory) -> None:  # noqa: F811
        """pg_terminate_backend mid-statement: SQLAlchemy's own exception, span error; the task's
        later asyncpg calls are recorded again (the statement's marker was cleared)."""
        instrument_asyncpg.install()
        db = create_async_engine(postgres.dsn.replace("postgresql://", "postgresql+asyncpg://"))
        killer = await asyncpg.connect(postgres.dsn)
        try:
            async with ft.span("handler"), db.connect() as conn:
                raw = await conn.get_raw_connection()
                pid = raw.driver_connection.get_server_pid()
                query = asyncio.ensure_future(conn.execute(sa.text("SELECT pg_sleep(30)")))
                await wait_for_backend(killer, pid, "state = 'active'")
                await killer.fetchval("SELECT pg_terminate_backend($1)", pid)
                with pytest.raises(sa.exc.DBAPIError) as caught:
                    await query
                assert await killer.fetchval("SELECT 7") == 7
        finally:
            await killer.close()
            await db.dispose()
            instrument_asyncpg.uninstall()
        await tracker.flush()
        by_statement = {s["tags"]["db.statement"]: s for s in client_spans(memory)}
        lost = by_statement["SELECT pg_sleep(30)"]
        assert (lost["status"], lost["tags"]["db.system"]) == ("error", "postgresql")
        assert lost["error"]["type"] == f"{type(caught.value).__module__}.{type(caught.value).__qualname__}"
        assert by_statement["SELECT 7"]["status"] == "ok"


class TestInstallUninstall:
    """install() and uninstall() are idempotent and exact."""

    async def test_install_twice_never_doubles_a_span(self, engine, tracker, memory) -> None:
        """A second install() adds no listener: one statement, one span."""
        instrument_sqlalchemy.install()
        with ft.span("handler"), engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        await tracker.flush()
        assert len(client_spans(memory)) == 1

    def test_uninstall_removes_every_listener(self) -> None:
        """After uninstall() (twice), Engine carries none of flowtracker's listeners."""
        instrument_sqlalchemy.install()
        instrument_sqlalchemy.uninstall()
        instrument_sqlalchemy.uninstall()
        functions = [fn for fn in vars(instrument_sqlalchemy).values() if callable(fn)]
        for name in ("before_cursor_execute", "after_cursor_execute", "handle_error"):
            assert not any(event.contains(Engine, name, fn) for fn in functions)

    async def test_uninstall_while_a_statement_is_in_flight(self, engine, tracker, memory) -> None:
        """A statement running when uninstall() is called returns its result; its span ends
        ``unfinished``; later statements record nothing."""
        started, release = threading.Event(), threading.Event()

        def wait_here() -> int:
            started.set()
            release.wait(30)
            return 5

        @event.listens_for(engine, "connect")
        def add_function(dbapi_connection: sqlite3.Connection, record: object) -> None:
            dbapi_connection.create_function("wait_here", 0, wait_here)

        engine.dispose()  # new connections get the function
        result: list[int] = []

        def statement() -> None:
            with engine.connect() as conn:
                result.append(conn.execute(sa.text("SELECT wait_here()")).scalar_one())
                result.append(conn.execute(sa.text("SELECT 6")).scalar_one())

        with ft.span("handler"):
            worker = threading.Thread(target=ft.bind(statement))
            worker.start()
            await asyncio.to_thread(started.wait, 30)
            instrument_sqlalchemy.uninstall()
            release.set()
            await asyncio.to_thread(worker.join, 30)
        assert result == [5, 6]
        await tracker.flush()
        assert [(s["tags"]["db.statement"], s["status"]) for s in client_spans(memory)] == [
            ("SELECT wait_here()", "unfinished")
        ]
