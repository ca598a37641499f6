"""Failures inside flowtracker's own instrumentation: counted, logged once, never raised.

An instrumentation wraps a library's call in a little work of its own
(building a statement, starting or ending a span). When that work fails, the
user's call must behave exactly as it would without flowtracker: the failure
is counted per library (:func:`failures`), logged once per library at
``WARNING`` with its traceback on the ``flowtracker.instrument`` logger, and
the call goes on untraced.

Example:
    >>> try:
    ...     raise RuntimeError("a bug in a wrapper")
    ... except RuntimeError as exc:
    ...     instrumentation_failed("docs-example", exc)
    >>> failures()["docs-example"]
    1
"""

from __future__ import annotations

import logging
import threading

__all__ = ("failures", "instrumentation_failed")

logger = logging.getLogger("flowtracker.instrument")

_lock = threading.Lock()
_counts: dict[str, int] = {}


def instrumentation_failed(library: str, exc: BaseException) -> None:
    """Counts a failure of ``library``'s instrumentation; logs the first one with its traceback."""
    with _lock:
        count = _counts[library] = _counts.get(library, 0) + 1
    if count == 1:
        # Once per library: a broken wrapper on a hot call must not flood the log.
        logger.warning(
            "flowtracker's %s instrumentation failed; the call went on untraced "
            "(further failures are counted, not logged)",
            library,
            exc_info=exc,
        )


def failures() -> dict[str, int]:
    """How many times each library's instrumentation failed, since the process started."""
    with _lock:
        return dict(_counts)
