"""Automatic spans for SQLAlchemy: one client span per statement, on every Engine, sync or async.

Hooked through SQLAlchemy's event API on the :class:`~sqlalchemy.engine.Engine`
class (so every engine is covered, including the sync engine inside each
``AsyncEngine``): ``before_cursor_execute`` starts the span,
``after_cursor_execute`` ends it, ``handle_error`` ends it with status
``error``. No SQLAlchemy internals are patched; the listeners are added and
removed (``event.remove`` in :func:`uninstall`) through the ``Patches`` every
instrumentation uses (:mod:`._patch`).

Each span is a child of the current span, kind ``client``, named by the
statement's operation (and target table where cheap: ``SELECT users``), with
the tags ``db.system`` (the dialect's name: ``sqlite``, ``postgresql``),
``db.statement`` (the SQL string as handed to the driver, with its
bound-parameter placeholders; parameter values are never read), ``db.name``
(the URL's database), and ``net.peer.name``/``net.peer.port`` when the URL has a
host. A statement made with no current span starts no trace.

Async engines run the sync engine in a greenlet that SQLAlchemy gives the
caller's ``contextvars`` context (``greenlet.gr_context``), so the span's parent
is the caller's current span, in the caller's trace.

**One statement, one span.** With SQLAlchemy on asyncpg and both instrumented,
the SQLAlchemy span is the statement's span, and the asyncpg driver call inside
it records none (it would repeat the same statement, one level down); the
SQLAlchemy span carries ``net.peer.*`` from the URL instead. asyncpg calls
SQLAlchemy does outside a statement (``COMMIT``, a pool's pre-ping) are
recorded by the asyncpg instrumentation as usual.

**uninstall() during a statement.** A statement whose ``after_cursor_execute``
can no longer arrive (its listener is gone) is ended by :func:`uninstall` itself,
with status ``unfinished``: its real end is not known. The statement runs on,
untouched.

Example:
    >>> import flowtracker as ft
    >>> from sqlalchemy import create_engine, text
    >>> from flowtracker.testing import capture_traces
    >>> from flowtracker.instrumentation import sqlalchemy as instrument_sqlalchemy
    >>> instrument_sqlalchemy.install()
    >>> engine = create_engine("sqlite://")
    >>> with capture_traces() as traces, ft.span("report"), engine.connect() as connection:
    ...     connection.execute(text("SELECT count(*) FROM sqlite_master")).scalar()
    0
    >>> instrument_sqlalchemy.uninstall(); engine.dispose()
    >>> [span["name"] for span in traces[0]["spans"]]
    ['report', 'SELECT sqlite_master']
"""

from __future__ import annotations

import contextvars
import functools
from typing import Any

from .._core import STATUS_OK, STATUS_UNFINISHED, Span, current_span, start_child
from ._patch import Patches
from ._safety import report_failure
from ._sql import OUTER_STATEMENT, span_name, statement_text

__all__ = ("LIBRARY", "PIP", "install", "uninstall")

LIBRARY = "sqlalchemy"
#: What to install when SQLAlchemy is missing (the registry puts it in its ``pip install`` message).
PIP = "flowtracker[sqlalchemy]"

_Entry = tuple[Span, "contextvars.Token[Span | None]"]

#: Statements between before_cursor_execute and their end, by ``id()`` of their
#: execution context, or of their DBAPI cursor for the few statements SQLAlchemy
#: runs without a context. (``ExceptionContext.cursor`` is documented but not set
#: by SQLAlchemy 2.1, hence the context first.)
_in_flight: dict[int, _Entry] = {}
_patches = Patches(LIBRARY, "a client span per statement (event listeners)")


def _before(conn: Any, cursor: Any, statement: Any, parameters: Any, context: Any, executemany: bool) -> None:
    if current_span() is None:  # the common no-trace case: nothing else to do
        return
    try:
        text = statement_text(statement)
        dialect = conn.dialect.name
        tags: dict[str, Any] = {"db.system": dialect}
        if text is not None:
            tags["db.statement"] = text
        url = conn.engine.url
        if url.database:
            tags["db.name"] = url.database
        if url.host:
            tags["net.peer.name"] = url.host
            if url.port:
                tags["net.peer.port"] = url.port
        span = start_child(span_name(text, dialect), tags, kind="client")
        if span is not None:
            _in_flight[id(cursor if context is None else context)] = (span, OUTER_STATEMENT.set(span))
    except Exception as exc:
        report_failure(LIBRARY, exc)


def _finish(key: int, exc: BaseException | None) -> None:
    entry = _in_flight.pop(key, None)
    if entry is None:
        return
    span, token = entry
    try:
        # Plain try, not contextlib.suppress: this runs once per statement.
        try:  # noqa: SIM105
            OUTER_STATEMENT.reset(token)
        except ValueError:  # reset in another context than set: leave it, it names an ended span
            pass
        if exc is None:
            span.end(STATUS_OK)
        else:
            span.end_with_exception(exc)
    except Exception as failure:
        report_failure(LIBRARY, failure)


def _after(conn: Any, cursor: Any, statement: Any, parameters: Any, context: Any, executemany: bool) -> None:
    if _in_flight:
        _finish(id(cursor if context is None else context), None)


def _error(exception_context: Any) -> None:
    if not _in_flight:
        return
    try:
        context = exception_context.execution_context
        key = id(getattr(exception_context, "cursor", None) if context is None else context)
        # What the caller will see: SQLAlchemy's wrapper when it wraps the driver's error.
        exc = exception_context.sqlalchemy_exception or exception_context.original_exception
    except Exception as failure:
        report_failure(LIBRARY, failure)
        return
    _finish(key, exc)


_LISTENERS = (("before_cursor_execute", _before), ("after_cursor_execute", _after), ("handle_error", _error))


def install() -> None:
    """Listens on every Engine (imports SQLAlchemy: an ImportError propagates); idempotent.

    Example:
        >>> install(); install()  # the second call does nothing
        >>> uninstall()
    """
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    if _patches.active:
        return
    for name, listener in _LISTENERS:
        _patches.hook(
            f"sqlalchemy.engine.Engine.{name}",
            functools.partial(event.listen, Engine, name, listener),
            functools.partial(_remove, Engine, name, listener),
        )


def _remove(target: Any, name: str, listener: Any) -> None:
    from sqlalchemy import event

    if event.contains(target, name, listener):
        event.remove(target, name, listener)


def uninstall() -> None:
    """Removes the listeners; statements still in flight end ``unfinished``. Idempotent."""
    if not _patches.active:
        return
    _patches.restore()
    while _in_flight:
        _, (span, _token) = _in_flight.popitem()
        span.end(STATUS_UNFINISHED)
