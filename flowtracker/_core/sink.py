"""The one interface through which the core hands traces to whatever assembles them.

The core (spans, trace state, the current-span context) knows nothing of
trackers, event loops or exporters. A span reports to a :class:`TraceSink`:
the pipeline's ``Tracker`` is one, and so is anything a test or another
runtime wants to put in its place. The core asks the sink four things, all
cheap and none on the common path but the first:

* ``span_ended(root)``: a span of the trace ``root`` carries ended and may
  have been its last open one (the sink decides, on its own thread, whether
  the trace is complete);
* ``open_traces``: a set the core adds each trace's root to when the trace
  starts (or restarts for a late span), so the sink can bound its age;
* ``sample(trace_id, sampled)``: whether a new root is recorded (only asked
  when ``sampling`` is true or the caller sent a sampled flag);
* ``limits``: the per-trace bounds, and the counters of what they dropped.

Which sink a new root reports to: the one given explicitly (middlewares),
else the one bound to the current context (:data:`BOUND_SINK`, set by
``async with tracker``), else whatever :func:`set_default_sink_resolver`
installed (the pipeline installs its own when ``flowtracker`` is imported).

Example:
    >>> from flowtracker._core.sink import Limits
    >>> limits = Limits(max_spans_per_trace=10)
    >>> limits.spans_dropped
    0
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .span import Span

__all__ = (
    "BOUND_SINK",
    "Limits",
    "TraceSink",
    "default_sink",
    "set_default_sink_resolver",
)


class Limits:
    """Per-trace bounds a sink sets, and the counters of what they dropped.

    The core writes the counters (plain int increments, only when a limit is
    hit); the sink reads them for its statistics.

    Example:
        >>> limits = Limits(max_tags_per_span=2)
        >>> limits.max_tags_per_span
        2
    """

    __slots__ = (
        "events_dropped",
        "max_events_per_span",
        "max_spans_per_trace",
        "max_tags_per_span",
        "spans_dropped",
        "tags_dropped",
    )

    def __init__(
        self,
        *,
        max_spans_per_trace: int = 10_000,
        max_tags_per_span: int = 128,
        max_events_per_span: int = 128,
    ) -> None:
        self.max_spans_per_trace = max_spans_per_trace
        self.max_tags_per_span = max_tags_per_span
        self.max_events_per_span = max_events_per_span
        self.spans_dropped = 0
        self.tags_dropped = 0
        self.events_dropped = 0


class TraceSink(Protocol):
    """What the core reports to (the pipeline's ``Tracker`` is one)."""

    #: The bounds and drop counters for this sink's traces.
    limits: Limits
    #: True when head sampling may say no, so roots must ask :meth:`sample`.
    sampling: bool
    #: True once the sink takes no new traces (a closed tracker).
    closed: bool
    #: Traces under assembly, by their root span: the core adds each one as it
    #: starts (one C call, no method call per trace); the sink removes it when emitted.
    open_traces: set[Span]

    def sample(self, trace_id: int, sampled: bool | None) -> bool:
        """Whether a new root with ``trace_id`` is recorded (``sampled``: the caller's flag)."""
        ...

    def span_ended(self, root: Span) -> None:
        """A span of the trace ``root`` carries ended, and it may have been the last open one."""
        ...


#: The sink bound to the current context (``async with tracker``); ``None``: not bound.
BOUND_SINK: ContextVar[TraceSink | None] = ContextVar("flowtracker.tracker", default=None)

_default_resolver: Callable[[], TraceSink] | None = None


def set_default_sink_resolver(resolver: Callable[[], TraceSink]) -> None:
    """Installs the function that picks a sink when none is bound or given.

    The pipeline installs its own (the last started tracker, else the
    default tracker) when ``flowtracker`` is imported.
    """
    global _default_resolver
    _default_resolver = resolver


def default_sink() -> TraceSink:
    """The sink a new root reports to when none is given, and none is bound or the bound one is closed.

    (The core reads :data:`BOUND_SINK` itself, where a root starts: most
    roots find their sink there, with no call.)
    """
    if _default_resolver is None:
        raise RuntimeError("no trace sink: import flowtracker (its pipeline installs the default)")
    return _default_resolver()
