"""A batch encoded trace by trace: a trace that cannot be encoded costs only itself.

Every exporter turns each trace of its batch into what it ships (a JSON line,
a Kafka record, OTLP spans, a log record, Sankey text) through
:meth:`BatchFailures.each`, which leaves out a trace whose conversion raises
and counts it. Once the rest is shipped, :meth:`BatchFailures.raise_if_any`
tells the tracker's lane how many failed by raising
:class:`PartialExportError`; the lane then counts exactly that many as failed
and the rest as exported (any other exception counts the whole batch as
failed). Third-party exporters may raise :class:`PartialExportError` too.

Example:
    >>> failures = BatchFailures(3)
    >>> failures.each([1, 0, 2], lambda n: 10 // n)
    [10, 5]
    >>> failures.failed, failures.error
    (1, ZeroDivisionError('integer division or modulo by zero'))
    >>> failures.raise_if_any()  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    flowtracker._wire.batch.PartialExportError: 1 of 3 traces failed: ZeroDivisionError(...)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

__all__ = ("BatchFailures", "PartialExportError")

_In = TypeVar("_In")
_Out = TypeVar("_Out")


class PartialExportError(Exception):
    """``failed`` traces of a batch were not exported; the others were.

    Raised by an exporter's ``export()`` after it shipped what it could. The
    tracker counts ``failed`` traces as failed and the rest of the batch as
    exported. ``failed`` may be the whole batch.

    Args:
        failed: Traces of the batch that were not exported.
        total: Traces in the batch.
        cause: The first error, named in the message (also ``__cause__``
            when raised ``from`` it).

    Example:
        >>> PartialExportError(2, 512, ValueError("bad trace")).failed
        2
    """

    def __init__(self, failed: int, total: int, cause: BaseException | None = None) -> None:
        reason = f": {cause!r}" if cause is not None else ""
        super().__init__(f"{failed} of {total} traces failed{reason}")
        self.failed = failed
        self.total = total
        self.cause = cause


class BatchFailures:
    """Counts the traces of one batch that could not be converted, and keeps the first error.

    Args:
        total: Traces in the batch (for the message).
    """

    __slots__ = ("error", "failed", "total")

    def __init__(self, total: int) -> None:
        self.total = total
        self.failed = 0
        self.error: BaseException | None = None

    def each(self, items: Iterable[_In], convert: Callable[[_In], _Out]) -> list[_Out]:
        """``convert`` of every item; an item whose conversion raises is left out and counted."""
        out: list[_Out] = []
        append = out.append
        for item in items:
            try:
                append(convert(item))
            except Exception as error:  # one odd trace must not cost its batch
                self.add(1, error)
        return out

    def add(self, count: int, error: BaseException) -> None:
        """Counts ``count`` more failed traces (say, a record the peer refused)."""
        self.failed += count
        if self.error is None:
            self.error = error

    def raise_if_any(self) -> None:
        """Raises :class:`PartialExportError` when any trace failed (call once the rest is shipped)."""
        if self.failed:
            raise PartialExportError(self.failed, self.total, self.error) from self.error
