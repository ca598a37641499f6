"""The store's SQLite schema, its version, and opening a file safely.

One row per span (``spans``), keyed by its trace's number (``traces.seq``,
given as traces arrive) and its span id, one summary row per trace
(``traces``, keyed by trace id) for the list, indexed by start time, status and name,
the services of each trace (``trace_services``) for the list's ``service=``
filter, and the distinct trace names (``names``) for its ``name=`` filter.
Every index serves a query: the list filters traces, never spans, so spans
carry no index of their own beyond their key (version 1 had four more, on
service, start time, name and status, which no query read and which cost a
quarter of each span's insert). The file
says what it is with two header fields SQLite keeps for applications:
``application_id`` (``FTRC``) and ``user_version`` (the schema version).

Opening never damages a file it does not understand. Everything is checked
before the first write (even switching to WAL writes to the header):

* an empty or new file gets the schema;
* a file of this schema version is used as it is;
* an older version is migrated in one transaction, through
  :data:`MIGRATIONS`, or refused when no migration is known;
* a newer version, another application's database, or a file that is not
  SQLite at all is refused with a :class:`StoreRefused` that says what it is.

Example:
    >>> connection = open_database(":memory:")
    >>> connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    True
    >>> connection.close()
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable

__all__ = (
    "APPLICATION_ID",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "StoreRefused",
    "open_database",
    "remove_database",
)

#: ``PRAGMA application_id`` of a flowtracker store: b"FTRC" as a big-endian int.
APPLICATION_ID = int.from_bytes(b"FTRC", "big")
#: The schema this flowtracker writes.
SCHEMA_VERSION = 3

SCHEMA = """
CREATE TABLE spans (
    trace_seq INTEGER NOT NULL,  -- its trace's traces.seq: new traces append to the key, not insert at random
    span_id   TEXT    NOT NULL,
    parent_id TEXT,
    service   TEXT    NOT NULL,
    name      TEXT    NOT NULL,
    start_ns  INTEGER NOT NULL,
    end_ns    INTEGER NOT NULL,
    status    TEXT    NOT NULL,
    blocked   INTEGER NOT NULL,
    body      BLOB    NOT NULL,  -- the span as it came: its OTLP Span message, or wire JSON (rows.py)
    extra     BLOB,              -- trace fields of the record this span came in (JSON), on its first span
    UNIQUE (trace_seq, span_id)  -- finds a trace's spans (get, summary, eviction), keeps a span once
);
CREATE TABLE traces (
    trace_id   TEXT    PRIMARY KEY,
    name       TEXT    NOT NULL,  -- the root's (the earliest span whose parent is not in the trace)
    service    TEXT    NOT NULL,  -- the root's
    services   TEXT    NOT NULL,  -- JSON list of every span's service, sorted
    start_ns   INTEGER NOT NULL,
    end_ns     INTEGER NOT NULL,
    span_count INTEGER NOT NULL,
    status     TEXT    NOT NULL,  -- error when any span failed, else the root's
    blocked    INTEGER NOT NULL,  -- any span blocked the event loop
    extra      BLOB,              -- the trace fields of its records, joined (JSON)
    seq        INTEGER NOT NULL   -- when it was first stored, in order: its spans' trace_seq
) WITHOUT ROWID;
-- The list reads newest first and filters inside this index (no table lookups for rows it skips).
CREATE INDEX traces_list ON traces (start_ns, status, blocked, end_ns, name);
-- name= finds the matching names first (few: they are routes and operations), then their traces.
CREATE INDEX traces_name ON traces (name, start_ns);
-- The writer reads the last number given in each transaction (another process may write this file).
CREATE UNIQUE INDEX traces_seq ON traces (seq);
CREATE TABLE names (name TEXT PRIMARY KEY) WITHOUT ROWID;
-- service= reads this index newest first: a rare service costs its own traces, not a scan of all.
CREATE TABLE trace_services (
    trace_id TEXT    NOT NULL,
    service  TEXT    NOT NULL,
    start_ns INTEGER NOT NULL,
    PRIMARY KEY (trace_id, service)
) WITHOUT ROWID;
CREATE INDEX trace_services_list ON trace_services (service, start_ns);
"""


def _drop_unused_span_indexes(connection: sqlite3.Connection) -> None:
    """1 -> 2: the span indexes no query reads go (the list filters the ``traces`` table)."""
    for index in ("spans_service", "spans_start", "spans_name", "spans_status"):
        connection.execute(f"DROP INDEX IF EXISTS {index}")


def _trace_seq(connection: sqlite3.Connection) -> None:
    """2 -> 3: spans name their trace by ``traces.seq``, a number given in order, not by its random id.

    A new trace's spans then append to the end of the spans key instead of
    landing at random places in it (a third of each span's insert). Bodies
    may be OTLP ``Span`` messages from now on; the JSON ones stay as they are.
    """
    connection.execute("ALTER TABLE traces ADD COLUMN seq INTEGER NOT NULL DEFAULT 0")
    oldest_first = connection.execute("SELECT trace_id FROM traces ORDER BY start_ns, trace_id").fetchall()
    connection.executemany(  # not UPDATE ... FROM: SQLite before 3.33 (Ubuntu 20.04's) lacks it
        "UPDATE traces SET seq = ? WHERE trace_id = ?",
        [(number, trace_id) for number, (trace_id,) in enumerate(oldest_first, 1)],
    )
    connection.execute(_statement("CREATE UNIQUE INDEX traces_seq"))
    connection.execute("ALTER TABLE spans RENAME TO spans_2")
    connection.execute(_statement("CREATE TABLE spans"))
    connection.execute(
        "INSERT INTO spans SELECT traces.seq, span_id, parent_id, spans_2.service, spans_2.name, "
        "spans_2.start_ns, spans_2.end_ns, spans_2.status, spans_2.blocked, body, spans_2.extra "
        "FROM spans_2 JOIN traces USING (trace_id)"
    )  # every stored span has its trace's row (the writer writes both in one transaction)
    connection.execute("DROP TABLE spans_2")


def _statement(start: str) -> str:
    """The statement of :data:`SCHEMA` that begins with ``start`` (its comment lines aside)."""
    for statement in SCHEMA.split(";"):
        lines = [line for line in statement.strip().splitlines() if not line.startswith("--")]
        if lines and lines[0].startswith(start):
            return statement
    raise LookupError(start)


#: Schema version -> the function that migrates a connection from it to the next.
#: Each runs inside the opening transaction, so a failure leaves the file as it was.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _drop_unused_span_indexes,
    2: _trace_seq,
}

_SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreRefused(Exception):
    """A store file this flowtracker will not touch; the message says why and what to do."""


def open_database(path: str) -> sqlite3.Connection:
    """A connection to the store at ``path``, with the schema ready (see the module docstring).

    The connection may be used from another thread than the one that opened
    it (the store hands it to its writer thread). ``path`` ``":memory:"``
    gives a private in-memory database (tests).

    Raises:
        StoreRefused: the file is not a store this flowtracker can use.
    """
    if path != ":memory:":
        _check_header(path)
    try:
        connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as error:
        raise StoreRefused(f"cannot open the store {path!r}: {error}") from None
    try:
        _prepare(connection, path)
    except BaseException:
        connection.close()
        raise
    return connection


def _check_header(path: str) -> None:
    try:
        with open(path, "rb") as file:
            head = file.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except OSError as error:
        raise StoreRefused(f"cannot read the store {path!r}: {error.strerror or error}") from None
    if head and head != _SQLITE_MAGIC:
        raise StoreRefused(f"{path!r} is not a SQLite database, so not a flowtracker store; left untouched")


def _prepare(connection: sqlite3.Connection, path: str) -> None:
    try:
        application = connection.execute("PRAGMA application_id").fetchone()[0]
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.DatabaseError as error:
        raise StoreRefused(
            f"{path!r} cannot be read as a SQLite database ({error}); left untouched"
        ) from None
    if tables and application != APPLICATION_ID:
        raise StoreRefused(
            f"{path!r} is another application's SQLite database, not a flowtracker store; left untouched "
            "(name a new file with --db)"
        )
    if tables and version > SCHEMA_VERSION:
        raise StoreRefused(
            f"{path!r} was written by a newer flowtracker (store schema {version}; this one knows up to "
            f"{SCHEMA_VERSION}); left untouched: upgrade flowtracker or name another file with --db"
        )
    missing = [step for step in range(version, SCHEMA_VERSION) if step not in MIGRATIONS]
    if tables and version < SCHEMA_VERSION and missing:
        raise StoreRefused(
            f"{path!r} has store schema {version}, which this flowtracker cannot migrate to "
            f"{SCHEMA_VERSION}; left untouched: name another file with --db (or delete this one)"
        )
    if path != ":memory:":
        connection.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, nor it them
        # Checkpoint every ~40 MB of WAL, not SQLite's 4 MB: each checkpoint syncs the file, and at
        # the default the writer spent about a fifth of its time in them (serve benchmark: +28%).
        connection.execute("PRAGMA wal_autocheckpoint=10000")
    connection.execute("PRAGMA synchronous=NORMAL")  # durable at each checkpoint; safe against corruption
    connection.execute("BEGIN IMMEDIATE")
    try:
        if not tables:
            _create(connection)
        else:
            for step in range(version, SCHEMA_VERSION):
                MIGRATIONS[step](connection)
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def _create(connection: sqlite3.Connection) -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            connection.execute(statement)


def remove_database(path: str) -> None:
    """Deletes a store file and its WAL companions (the ``:memory:`` store's temporary file)."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)
