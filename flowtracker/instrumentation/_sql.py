"""What the database instrumentations share: a statement's span name, and the
context variable that keeps a driver from recording a statement an outer layer records.

A span is named by the statement's operation (its first keyword) plus, where
that is cheap to find, its target table: ``SELECT users``, ``INSERT orders``,
``UPDATE public.accounts``. Only the statement's head is read (at most
:data:`HEAD` characters, comments skipped), so a megabyte statement costs
what a short one does, and names are cached per statement text (statements
repeat: an application sends the same few hundred texts over and over).
The name comes from the statement's text, which carries placeholders
(``$1``, ``?``, ``:name``), never from parameter values.

Example:
    >>> span_name("SELECT id, name FROM users WHERE id = $1")
    'SELECT users'
    >>> span_name("  /* app */ insert into public.orders (id) values ($1)")
    'INSERT public.orders'
    >>> span_name("SELECT 1")
    'SELECT'
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._core import Span

__all__ = ("HEAD", "OUTER_STATEMENT", "span_name", "statement_text")

#: How many characters of a statement are read to name it.
HEAD = 1024

#: The span of a statement that an outer layer (the SQLAlchemy instrumentation)
#: is recording right now. A driver instrumentation (asyncpg) records no span of
#: its own while it is set and open: one statement, one span. SQLAlchemy's async
#: engines run their work in a greenlet that shares the caller's context, so the
#: driver call sees it.
OUTER_STATEMENT: ContextVar[Span | None] = ContextVar("flowtracker.outer_statement", default=None)

_IDENT = r'((?:"[^"]{1,128}"|[A-Za-z_][\w$]{0,127})(?:\.(?:"[^"]{1,128}"|[A-Za-z_][\w$]{0,127})){0,2})'
# Leading whitespace and comments, then the first keyword.
_OPERATION = re.compile(r"(?:\s|--[^\n]*(?:\n|$)|/\*.*?\*/)*([A-Za-z]{1,32})(?![A-Za-z])", re.S)
_TARGET = {
    "SELECT": re.compile(r"\bFROM\s+" + _IDENT, re.I),
    "DELETE": re.compile(r"\bFROM\s+(?:ONLY\s+)?" + _IDENT, re.I),
    "INSERT": re.compile(r"\bINTO\s+" + _IDENT, re.I),
    "REPLACE": re.compile(r"\bINTO\s+" + _IDENT, re.I),
    "MERGE": re.compile(r"\bINTO\s+" + _IDENT, re.I),
    "UPDATE": re.compile(r"^\s*UPDATE\s+(?:ONLY\s+)?" + _IDENT, re.I),
    "COPY": re.compile(r"^\s*COPY\s+" + _IDENT, re.I),
    "TRUNCATE": re.compile(r"^\s*TRUNCATE\s+(?:TABLE\s+)?(?:ONLY\s+)?" + _IDENT, re.I),
    "CREATE": re.compile(r"\b(?:TABLE|VIEW|INDEX)\s+(?:IF\s+NOT\s+EXISTS\s+)?" + _IDENT, re.I),
    "DROP": re.compile(r"\b(?:TABLE|VIEW|INDEX)\s+(?:IF\s+EXISTS\s+)?" + _IDENT, re.I),
    "ALTER": re.compile(r"\bTABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?" + _IDENT, re.I),
}
# Words that may follow a FROM/INTO keyword but are no table.
_NOT_A_TABLE = frozenset({"SELECT", "LATERAL", "ONLY", "UNNEST", "VALUES"})

_cache: dict[str, str] = {}
_CACHE_LIMIT = 512


def statement_text(statement: Any) -> str | None:
    """The statement as text: ``str`` as is, bytes decoded (UTF-8, bad bytes
    replaced), anything else ``None`` (the driver will reject it; no tag is set).

    Example:
        >>> statement_text(b"SELECT 1"), statement_text(42)
        ('SELECT 1', None)
    """
    if isinstance(statement, str):
        return statement
    if isinstance(statement, (bytes, bytearray, memoryview)):
        return bytes(statement).decode("utf-8", "replace")
    return None


def span_name(statement: str | None, default: str = "SQL") -> str:
    """``OPERATION target`` for ``statement`` (``default`` when no keyword is found).

    Example:
        >>> span_name("update accounts set balance = $1"), span_name(None, "postgresql")
        ('UPDATE accounts', 'postgresql')
    """
    if statement is None:
        return default
    name = _cache.get(statement)
    if name is None:
        name = _name(statement[:HEAD], default)
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()  # a program making endless distinct texts: start over, stay bounded
        # Keyed by the text itself, so a megabyte statement stays referenced while cached:
        # only heads are keys when the text is long.
        if len(statement) <= HEAD:
            _cache[statement] = name
    return name


def _name(head: str, default: str) -> str:
    found = _OPERATION.match(head)
    if found is None:
        return default
    operation = found.group(1).upper()
    pattern = _TARGET.get(operation)
    if pattern is None:
        return operation
    target = pattern.search(head, found.start(1))
    if target is None or target.group(1).upper() in _NOT_A_TABLE:
        return operation
    return f"{operation} {target.group(1)}"
