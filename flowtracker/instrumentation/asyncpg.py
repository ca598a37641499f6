"""Automatic spans for asyncpg: one client span per statement sent to PostgreSQL.

Covered, on connections and therefore on pools (a pool's ``execute``/``fetch``/…
call the connection's methods): ``execute``, ``executemany``, ``fetch``,
``fetchrow``, ``fetchval``, ``fetchmany``, ``copy_from_table``,
``copy_from_query``, ``copy_to_table``, ``copy_records_to_table``; prepared
statements' ``fetch``, ``fetchrow``, ``fetchval``, ``fetchmany`` and
``executemany``; cursors, one span per round trip (each prefetch of
``async for row in con.cursor(...)``, each ``Cursor.fetch``/``fetchrow``/``forward``).

Each span is a child of the current span, kind ``client``, named by
:func:`flowtracker.instrumentation._sql.span_name` (``SELECT users``), with the tags
``db.system`` (``"postgresql"``), ``db.statement`` (the text as sent, with its
``$n`` placeholders; parameter values are never read), ``db.name``,
``net.peer.name`` and ``net.peer.port``; status ``error`` when the statement
fails, and the exception propagates unchanged. A call made with no current
span starts no trace. For ``copy_*_table``, ``db.statement`` is the ``COPY``
command without its options (``COPY public.users FROM STDIN``).

While the SQLAlchemy instrumentation records a statement (SQLAlchemy on
asyncpg), the driver call inside it records no second span
(:data:`~flowtracker.instrumentation._sql.OUTER_STATEMENT`).

The methods are wrapped on asyncpg's classes by :func:`install` and the
originals put back by :func:`uninstall`, through the wrapper and the
``Patches`` every instrumentation uses (:mod:`._patch`). Connection details come from
asyncpg's ``Connection._params`` / ``_addr``, and cursors' round trips from
``BaseCursor._bind_exec`` / ``_exec`` (asyncpg internals, read defensively;
``tests/test_instrument_asyncpg.py`` fails if a new asyncpg moves them).

Once installed, ``await con.fetchval("SELECT count(*) FROM users WHERE team = $1", team)``
inside a span records a child span ``SELECT users`` (``tests/test_instrument_asyncpg.py``
runs it against a real PostgreSQL).

Example:
    >>> from flowtracker.instrumentation import asyncpg as instrument_asyncpg
    >>> instrument_asyncpg.install()
    >>> instrument_asyncpg.uninstall()
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .._core import Span, start_child
from ._patch import Patches, async_wrapper
from ._safety import report_failure
from ._sql import OUTER_STATEMENT, span_name, statement_text

__all__ = ("LIBRARY", "PIP", "install", "uninstall")

LIBRARY = "asyncpg"
#: What to install when asyncpg is missing (the registry puts it in its ``pip install`` message).
PIP = "flowtracker[asyncpg]"

#: ``describe(instance, args, kwargs)`` returns the statement (as given, or None) and the
#: connection it runs on, for one kind of method.
_Describe = Callable[[Any, tuple[Any, ...], dict[str, Any]], tuple[Any, Any]]

_patches = Patches(LIBRARY, "a client span per statement")


def _connection_query(con: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    # execute(query, ...), executemany(command, ...), fetch*(query, ...): the first argument.
    if args:
        return args[0], con
    return kwargs.get("query", kwargs.get("command")), con


def _table(kwargs: dict[str, Any], args: tuple[Any, ...]) -> str:
    table = args[0] if args else kwargs.get("table_name")
    schema = kwargs.get("schema_name")
    return f"{schema}.{table}" if schema else str(table)


def _copy_out_table(con: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    return f"COPY {_table(kwargs, args)} TO STDOUT", con


def _copy_in_table(con: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    return f"COPY {_table(kwargs, args)} FROM STDIN", con


def _copy_out_query(con: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    query = statement_text(args[0] if args else kwargs.get("query"))
    return (None if query is None else f"COPY ({query}) TO STDOUT"), con


def _prepared(stmt: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    return stmt.get_query(), getattr(stmt, "_connection", None)


def _cursor(cursor: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    return getattr(cursor, "_query", None), getattr(cursor, "_connection", None)


def _start(describe: _Describe, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Span | None:
    """The statement's span, or None (no trace here, or SQLAlchemy records this statement)."""
    outer = OUTER_STATEMENT.get()
    if outer is not None and outer.end_ns is None:
        return None
    statement, con = describe(instance, args, kwargs)
    text = statement_text(statement)
    tags: dict[str, Any] = {"db.system": "postgresql"}
    if text is not None:
        tags["db.statement"] = text
    params = getattr(con, "_params", None)
    database = getattr(params, "database", None)
    if database:
        tags["db.name"] = database
    addr = getattr(con, "_addr", None)
    if isinstance(addr, tuple) and len(addr) >= 2:
        tags["net.peer.name"] = addr[0]
        tags["net.peer.port"] = addr[1]
    elif isinstance(addr, str):  # a Unix socket's path
        tags["net.peer.name"] = addr
    return start_child(span_name(text, "postgresql"), tags, kind="client")


def _targets() -> list[tuple[type, tuple[str, ...], _Describe, bool]]:
    """(class, methods, how to describe a call, whether the call's span is current during it).

    A method that makes statements of its own through the public methods
    (``copy_to_table`` quotes its options with a ``fetchval``) has its span
    current for the call, so those become its children.
    """
    import asyncpg.connection
    import asyncpg.cursor
    import asyncpg.prepared_stmt

    connection = asyncpg.connection.Connection
    statement = asyncpg.prepared_stmt.PreparedStatement
    cursor = asyncpg.cursor.BaseCursor
    return [
        (connection, ("execute", "executemany", "fetch", "fetchval", "fetchrow"), _connection_query, False),
        (connection, ("fetchmany",), _connection_query, False),
        (connection, ("copy_from_table",), _copy_out_table, True),
        (connection, ("copy_to_table", "copy_records_to_table"), _copy_in_table, True),
        (connection, ("copy_from_query",), _copy_out_query, True),
        (statement, ("fetch", "fetchval", "fetchrow", "fetchmany", "executemany"), _prepared, False),
        # One span per round trip: the first batch (bind + execute) and each later one.
        (cursor, ("_bind_exec", "_exec"), _cursor, False),
        (asyncpg.cursor.Cursor, ("forward",), _cursor, False),
    ]


def install() -> None:
    """Patches asyncpg (imported here: an ImportError propagates); a second call does nothing.

    Example:
        >>> install(); install()  # the second call does nothing
        >>> uninstall()
    """
    if _patches.active:
        return
    for cls, names, describe, nests in _targets():
        make = async_wrapper(LIBRARY, functools.partial(_start, describe), current=nests)
        for name in names:
            if name not in cls.__dict__:  # a newer asyncpg moved it: the rest still works; say so once
                report_failure(LIBRARY, AttributeError(f"{cls.__qualname__}.{name} not found"))
                continue
            _patches.wrap(cls, name, make)


def uninstall() -> None:
    """Puts asyncpg's own methods back; a second call (or one before install) does nothing.

    Calls already in flight keep their span and end it.
    """
    _patches.restore()
