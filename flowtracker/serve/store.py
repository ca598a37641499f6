"""The store: SQLite, one writer thread that batches, reader threads that never hold it up.

Ingest hands rows to :meth:`Store.write` and awaits their commit, so a ``200``
means stored: nothing acknowledged is lost at shutdown. The writer thread
takes everything queued (many requests at once when they arrive together),
writes it in one transaction, recomputes the summary of every trace it
touched, evicts the oldest whole traces beyond ``max_traces``, commits, then
answers the waiting requests and tells the live feed. Queries run on two
reader threads with their own connections; SQLite's WAL mode lets them read
while the writer writes, so ingest never waits on a query.

The queue is bounded (``max_pending`` spans): past it :meth:`Store.write`
raises :class:`StoreBusy` at once, and the receivers answer "retry later"
(HTTP 503, gRPC ``UNAVAILABLE``), as OTLP's back-pressure asks.

Example:
    >>> store = Store(":memory:", max_traces=100)
    >>> store.path
    ':memory:'
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import sqlite3
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, Union

import orjson

from .queries import SUMMARY_COLUMNS, summary_dict
from .rows import Row
from .schema import open_database, remove_database

__all__ = ("DEFAULT_MAX_PENDING", "DEFAULT_MAX_TRACES", "Store", "StoreBusy")

#: Traces kept by default (``--max-traces``).
DEFAULT_MAX_TRACES = 10_000
#: Spans waiting for the writer before new writes are turned away.
DEFAULT_MAX_PENDING = 200_000
#: Spans the writer puts in one transaction at most.
BATCH_SPANS = 20_000


_T = TypeVar("_T")
#: Who waits for a write: a thread (a concurrent future) or a coroutine (its loop and an asyncio future).
_Waiter = Union["concurrent.futures.Future[None]", "tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]"]
_log = logging.getLogger("flowtracker.serve")


class StoreBusy(Exception):
    """The writer is behind by more than ``max_pending`` spans: try again shortly."""


class Store:
    """The SQLite store behind ``flowtracker serve``.

    Args:
        path: The database file (created when missing), or ``":memory:"``
            for a store that keeps nothing: a temporary file, deleted at close
            (a file so that WAL lets queries read while ingest writes).
        max_traces: The newest traces kept (by start time); older whole
            traces are evicted. Default 10,000.
        max_pending: Spans queued for the writer before :class:`StoreBusy`.
        on_commit: Called on the writer thread after each commit with the
            summaries (:func:`~flowtracker.serve.queries.summary_dict`) of the
            traces it added or changed.
    """

    def __init__(
        self,
        path: str,
        *,
        max_traces: int = DEFAULT_MAX_TRACES,
        max_pending: int = DEFAULT_MAX_PENDING,
        on_commit: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        if max_traces < 1:
            raise ValueError(f"max_traces must be at least 1, got {max_traces}")
        self.path = path
        self.max_traces = max_traces
        self.max_pending = max_pending
        self.on_commit = on_commit
        self._file = path
        self._temporary: str | None = None
        self._queue: deque[tuple[list[Row], _Waiter]] = deque()
        self._pending = 0
        self._wake = threading.Condition()
        self._closing = False
        self._writer: threading.Thread | None = None
        self._readers: concurrent.futures.ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection  # the writer's, from open()
        self._count = 0

    # ---- life ------------------------------------------------------------------------------

    def open(self) -> None:
        """Opens (or creates) the database and starts the writer thread.

        Raises:
            StoreRefused: the file is not a store this flowtracker can use.
        """
        if self.path == ":memory:":
            self._temporary = tempfile.mkdtemp(prefix="flowtracker-serve-")
            self._file = os.path.join(self._temporary, "store.db")
        else:
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
        self._connection = open_database(self._file)
        self._count = int(self._connection.execute("SELECT count(*) FROM traces").fetchone()[0])
        self._readers = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="flowtracker-serve-query")
        self._writer = threading.Thread(target=self._write_loop, name="flowtracker-serve-writer", daemon=True)
        self._writer.start()

    def close(self) -> None:
        """Writes everything queued, stops the threads and closes the database (idempotent)."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        if self._writer is not None:
            self._writer.join()
            self._writer = None
            with contextlib.suppress(Exception):
                self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._connection.close()
        if self._readers is not None:
            self._readers.shutdown(wait=True)
            self._readers = None
        with self._lock:
            for connection in self._reader_connections:
                connection.close()
            self._reader_connections.clear()
        if self._temporary is not None:
            remove_database(self._file)
            with contextlib.suppress(OSError):
                os.rmdir(self._temporary)
            self._temporary = None

    @property
    def pending(self) -> int:
        """Spans queued and not yet taken by the writer."""
        return self._pending

    @property
    def trace_count(self) -> int:
        """Traces stored after the last commit."""
        return self._count

    # ---- writing ---------------------------------------------------------------------------

    def submit(self, rows: list[Row]) -> concurrent.futures.Future[None]:
        """Queues rows for the writer (any thread); the future completes at their commit.

        Raises:
            StoreBusy: more than ``max_pending`` spans are already queued.
            RuntimeError: the store is closing.
        """
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._enqueue(rows, future)
        return future

    async def write(self, rows: list[Row]) -> None:
        """Stores rows; returns once they are committed (raises as :meth:`submit`)."""
        if rows:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()
            self._enqueue(rows, (loop, future))
            await future

    def _enqueue(self, rows: list[Row], waiter: _Waiter) -> None:
        with self._wake:
            if self._closing:
                raise RuntimeError("the store is closing")
            if self._pending and self._pending + len(rows) > self.max_pending:
                raise StoreBusy(f"{self._pending} spans are waiting to be stored")
            self._queue.append((rows, waiter))
            self._pending += len(rows)
            self._wake.notify()

    def _write_loop(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closing:
                    self._wake.wait()
                if not self._queue:
                    return  # closing, and everything is written
                batch: list[tuple[list[Row], _Waiter]] = []
                size = 0
                while self._queue and (not batch or size + len(self._queue[0][0]) <= BATCH_SPANS):
                    rows, future = self._queue.popleft()
                    batch.append((rows, future))
                    size += len(rows)
                self._pending -= size
            self._commit(batch)

    def _commit(self, batch: list[tuple[list[Row], _Waiter]]) -> None:
        connection = self._connection
        try:
            connection.execute("BEGIN IMMEDIATE")
            summaries, added = self._store(batch)
            evicted = self._evict(added)
            connection.execute("COMMIT")
        except Exception as error:
            with contextlib.suppress(Exception):
                connection.execute("ROLLBACK")
            self._count = int(connection.execute("SELECT count(*) FROM traces").fetchone()[0])
            _log.exception("flowtracker serve: could not store %d requests", len(batch))
            _settle([waiter for _, waiter in batch], error)
            return
        _settle([waiter for _, waiter in batch], None)
        if self.on_commit is not None:
            changed = [summary_dict(row[:9]) for row in summaries if row[0] not in evicted]
            if changed:
                try:
                    self.on_commit(changed)
                except Exception:
                    _log.exception("flowtracker serve: the live feed failed")

    def _store(self, batch: list[tuple[list[Row], _Waiter]]) -> tuple[list[Any], int]:
        """Writes the spans and the summaries of their traces; the summaries, and how many traces are new.

        A trace met for the first time gets the next ``seq`` and is summarized
        from the batch alone; one already stored is summarized again from all
        its spans in the store.
        """
        connection = self._connection
        rows = [row for request, _ in batch for row in request]
        by_trace: dict[str, dict[str, Row]] = {}
        for row in rows:
            by_trace.setdefault(row[0], {})[row[1]] = row  # a span sent twice: the last wins, as in the table
        known = self._known(list(by_trace))
        # Numbered after the last number in the file, read in this transaction: another serve may
        # write this file too (the index on seq makes it one step).
        last: int = connection.execute("SELECT coalesce(max(seq), 0) FROM traces").fetchone()[0]
        seqs = dict(known)
        for trace_id in by_trace:
            if trace_id not in seqs:
                last += 1
                seqs[trace_id] = last
        connection.executemany(
            "INSERT OR REPLACE INTO spans VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [(seqs[row[0]], *row[1:]) for row in rows],
        )
        summaries = []
        services = []
        for trace_id, spans in by_trace.items():
            if trace_id in known:
                stored = connection.execute(
                    "SELECT ?, span_id, parent_id, service, name, start_ns, end_ns, status, blocked, "
                    "NULL, extra FROM spans WHERE trace_seq = ?",
                    (trace_id, known[trace_id]),
                ).fetchall()
                summary = _summary(trace_id, stored)
            else:
                summary = _summary(trace_id, spans.values())
            summaries.append(summary)
            services += [(trace_id, service, summary[4]) for service in summary[-1]]
        connection.executemany(
            f"INSERT OR REPLACE INTO traces ({SUMMARY_COLUMNS}, extra, seq) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [(*summary[:10], seqs[summary[0]]) for summary in summaries],
        )
        if known:
            connection.executemany("DELETE FROM trace_services WHERE trace_id = ?", [(key,) for key in known])
        connection.executemany("INSERT INTO trace_services VALUES (?,?,?)", services)
        connection.executemany(
            "INSERT OR IGNORE INTO names VALUES (?)", [(name,) for name in {row[1] for row in summaries}]
        )
        return summaries, len(by_trace) - len(known)

    def _known(self, trace_ids: list[str]) -> dict[str, int]:
        """Which of these traces are stored already, and their ``seq`` (one query per 500 ids)."""
        known: dict[str, int] = {}
        for start in range(0, len(trace_ids), 500):
            chunk = trace_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT trace_id, seq FROM traces WHERE trace_id IN ({marks})"
            known.update(self._connection.execute(query, chunk))
        return known

    def _evict(self, added: int) -> set[str]:
        """Deletes the oldest whole traces beyond ``max_traces``; their ids."""
        connection = self._connection
        self._count += added
        excess = self._count - self.max_traces
        if excess <= 0:
            return set()
        found = connection.execute(
            "SELECT trace_id, name, seq FROM traces ORDER BY start_ns LIMIT ?", (excess,)
        ).fetchall()
        oldest = [(row[0],) for row in found]
        connection.executemany("DELETE FROM spans WHERE trace_seq = ?", [(row[2],) for row in found])
        connection.executemany("DELETE FROM trace_services WHERE trace_id = ?", oldest)
        connection.executemany("DELETE FROM traces WHERE trace_id = ?", oldest)
        connection.executemany(
            "DELETE FROM names WHERE name = ?1 AND NOT EXISTS (SELECT 1 FROM traces WHERE name = ?1)",
            [(name,) for name in {row[1] for row in found}],
        )
        self._count -= len(oldest)
        return {row[0] for row in found}

    # ---- reading ---------------------------------------------------------------------------

    async def query(self, function: Callable[..., _T], *args: Any) -> _T:
        """Runs ``function(connection, *args)`` on a reader thread (never the writer's)."""
        if self._readers is None:
            raise RuntimeError("the store is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._run_query, function, args)

    def _run_query(self, function: Callable[..., _T], args: tuple[Any, ...]) -> _T:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self._file, check_same_thread=False)
            connection.execute("PRAGMA query_only = 1")
            self._local.connection = connection
            with self._lock:
                self._reader_connections.append(connection)
        return function(connection, *args)


def _settle(waiters: list[_Waiter], error: BaseException | None) -> None:
    """Answers everyone who waited for a commit: one wake-up per event loop, not one per request.

    (A wake-up per request meant a GIL hand-over per request for the writer thread.)
    """
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for waiter in waiters:
        if isinstance(waiter, tuple):
            by_loop.setdefault(waiter[0], []).append(waiter[1])
        elif error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)
    for loop, futures in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(_resolve, futures, error)


def _resolve(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():  # the request went away (cancelled)
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


def _summary(trace_id: str, spans: Iterable[Row]) -> tuple[Any, ...]:
    """The ``traces`` row of one trace from its spans (:data:`Row`-shaped; the body is not read).

    The root is the earliest span whose parent is not in the trace (a cycle
    has none: then the earliest span). The status is ``error`` when any span
    failed, else the root's. One more item follows the row: the services as a
    list, for ``trace_services`` (not decoded back from the row's JSON).
    """
    spans = list(spans)
    ids = {span[1] for span in spans}
    roots = [span for span in spans if span[2] is None or span[2] not in ids]
    root = min(roots or spans, key=lambda span: (span[5], span[1]))
    services = sorted({span[3] for span in spans})
    return (
        trace_id,
        root[4],
        root[3],
        orjson.dumps(services).decode(),
        min(span[5] for span in spans),
        max(span[6] for span in spans),
        len(spans),
        "error" if any(span[7] == "error" for span in spans) else root[7],
        int(any(span[8] for span in spans)),
        _joined_extra(span[10] for span in spans if span[10] is not None),
        services,
    )


def _joined_extra(records: Iterable[bytes]) -> bytes | None:
    """The trace fields of a trace's records joined: counts add up, the first ``loop_monitor`` wins."""
    joined: dict[str, Any] = {}
    for record in records:
        for field, value in orjson.loads(record).items():
            if field == "loop_monitor" or field == "follow_up":
                joined.setdefault(field, value)
            elif isinstance(value, int):
                joined[field] = joined.get(field, 0) + value
    joined.pop("follow_up", None)  # a follow-up record is joined to its trace here: nothing to say
    return orjson.dumps(joined) if joined else None
