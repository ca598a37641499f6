"""A failure inside flowtracker's own instrumentation never breaks the user's call.

Every instrumentation wraps its bookkeeping (naming the span, reading tags,
starting and ending it) in :func:`guard`, or catches around it and calls
:func:`report_failure`. An exception there is swallowed, counted per library in
:data:`failures`, and logged once per library (a bug that fires on every
statement must not flood the log), with its traceback, on the
``flowtracker.instrumentation`` logger. Only :class:`Exception` is caught:
cancellation and ``KeyboardInterrupt`` pass through, as they would without
flowtracker.

Example:
    >>> from flowtracker.instrumentation import _safety
    >>> with _safety.guard("example"):
    ...     raise RuntimeError("a bug in the instrumentation")
    >>> _safety.failures["example"]
    1
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

__all__ = ("Guard", "failures", "guard", "report_failure")

logger = logging.getLogger("flowtracker.instrumentation")

#: Failures of flowtracker's own instrumentation code, per library name. Never reset by
#: flowtracker; tests and health checks read it.
failures: dict[str, int] = {}

_logged: set[str] = set()
# Counting is a read-modify-write: the lock keeps counts exact when threads (a
# sync SQLAlchemy engine in a thread pool) fail at once. Only the failure path takes it.
_lock = threading.Lock()


def report_failure(library: str, exc: BaseException) -> None:
    """Counts a failure of ``library``'s instrumentation and logs the first one.

    Example:
        >>> report_failure("example-report", ValueError("bad tag"))
        >>> failures["example-report"]
        1
    """
    with _lock:
        failures[library] = failures.get(library, 0) + 1
        first = library not in _logged
        _logged.add(library)
    if first:
        logger.error(
            "flowtracker's %s instrumentation failed; the call went on untraced "
            "(logged once; later failures are only counted in flowtracker.instrumentation._safety.failures)",
            library,
            exc_info=(type(exc), exc, exc.__traceback__),
        )


class Guard:
    """A reusable context manager that reports and swallows an :class:`Exception`.

    Stateless, so one instance per library serves every call and thread
    (no object is made per statement).

    Example:
        >>> GUARD = Guard("example-guard")
        >>> with GUARD:
        ...     {}["missing"]
        >>> failures["example-guard"]
        1
    """

    __slots__ = ("library",)

    def __init__(self, library: str) -> None:
        self.library = library

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        report_failure(self.library, exc)
        return True


_guards: dict[str, Guard] = {}


def guard(library: str) -> Guard:
    """The :class:`Guard` for ``library`` (one shared instance per name).

    Example:
        >>> guard("asyncpg") is guard("asyncpg")
        True
    """
    found = _guards.get(library)
    if found is None:
        found = _guards.setdefault(library, Guard(library))
    return found
