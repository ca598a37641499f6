"""Log correlation: ``trace_id`` and ``span_id`` on every log record.

:class:`TraceContextFilter` is a ``logging.Filter`` that never filters
anything out; it adds two attributes to each record: the trace id (32 hex
characters) and span id (16 hex characters) of the span current where the
record was emitted, or ``"-"`` outside any span. A formatter can then print
them, and a log search for a trace id finds the request's log lines next to
its trace.

Attach it to a *handler* (filters on a logger do not see records that
propagate up from child loggers)::

    import logging
    from flowtracker.log_correlation import TraceContextFilter

    handler = logging.StreamHandler()
    handler.addFilter(TraceContextFilter())
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s [trace=%(trace_id)s span=%(span_id)s] %(name)s: %(message)s"
    ))
    logging.basicConfig(level=logging.INFO, handlers=[handler])

Records are formatted in the thread that emits them (unless a
``QueueHandler`` defers it), and the filter runs there too, so it sees the
emitting code's current span.

Example:
    >>> import logging, flowtracker as ft
    >>> record = logging.LogRecord("app", logging.INFO, __file__, 1, "hi", None, None)
    >>> TraceContextFilter().filter(record), record.trace_id
    (True, '-')
"""

from __future__ import annotations

import logging

from ._core import current_span

__all__ = ("TraceContextFilter",)


class TraceContextFilter(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` to each record (``missing`` outside a span).

    Args:
        missing: The value outside any span. Default ``"-"``.
        overwrite: Replace ``trace_id``/``span_id`` already on the record (set
            with ``extra=``, say). Default ``False``: keep them.

    Example:
        >>> import logging
        >>> handler = logging.StreamHandler()
        >>> handler.addFilter(TraceContextFilter(missing=""))
    """

    def __init__(self, missing: str = "-", *, overwrite: bool = False) -> None:
        super().__init__()
        self.missing = missing
        self.overwrite = overwrite

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.overwrite and hasattr(record, "trace_id"):
            return True
        span = current_span()
        context = None if span is None else span.span_context()
        if context is None:  # outside a span, or in an exporter's silent one
            record.trace_id = record.span_id = self.missing
        else:
            record.trace_id = f"{context.trace_id:032x}"
            record.span_id = f"{context.span_id:016x}"
        return True
