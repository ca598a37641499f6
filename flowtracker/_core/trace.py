"""A trace while it is being assembled: ``TraceState``.

Completion is decided without locks. Starting a span appends it to
``TraceState.spans`` and ending one takes the next number from
``TraceState.ended`` (an ``itertools.count``); both are single C calls, atomic
under the GIL, so spans may start and end in any thread. The span whose end
number equals the number of started spans *may* be the last one: it asks the
sink to check, and the sink (the pipeline's tracker) decides on its own thread (the
only place a trace is ever emitted), after the callbacks already scheduled on
the loop have run, so a fire-and-forget task that starts a child span right
after its parent ended still lands in the same trace.

Reference cycles: while a trace is open, ``state.spans`` holds the spans and
each span holds ``state``. On emission the span list moves into the finished
record and ``state.spans`` is replaced by a fresh list, so a finished trace is
an acyclic graph that reference counting frees at once, not the cyclic
garbage collector (whose pauses show up in request p99).

Example:
    >>> import flowtracker as ft
    >>> from flowtracker.testing import capture_traces
    >>> with capture_traces() as traces:
    ...     with ft.span("root"):
    ...         pass
    >>> traces[0]["spans"][0]["name"]
    'root'
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING

from . import clock

if TYPE_CHECKING:
    from .sink import TraceSink
    from .span import Span


#: ``TraceState.spans`` once emitted: empty, so the next span to start knows it
#: is late and calls ``reopen()`` (new list and count made only if one comes).
EMITTED: list[Span] = ()  # type: ignore[assignment]

#: ``TraceState.ended`` once emitted: one shared counter instead of the trace's
#: own, which is freed at emission (one GC-tracked object less per queued
#: trace). Its numbers never equal ``len(EMITTED)`` (0), so a span of an
#: emitted trace that ends late (an unfinished one) never triggers completion.
SPENT: Iterator[int] = itertools.count(1)


class TraceState:
    """One trace under assembly. Internal: users see ``Span`` and ``Trace``.

    No ``__slots__``: the rarely changed fields are class-level defaults, so
    starting a trace writes five attributes, not eleven.
    """

    #: Set once the trace (or a follow-up of it) has been emitted.
    emitted = False
    #: Spans not kept because of ``max_spans_per_trace``, since the last emission.
    dropped_spans = 0
    #: False when head sampling decided not to record this trace.
    sampled = True
    #: The caller's span id when the trace continues a remote one (``traceparent``).
    remote_parent_id: int | None = None
    #: The incoming ``tracestate`` header, passed on to outgoing calls.
    tracestate: str | None = None
    #: The caller's W3C Level 2 ``random`` trace flag, passed on to outgoing calls.
    random_flag = False
    #: The end count at the last completion trigger (see the pipeline's completion).
    ended_seen = -1
    #: How an event-loop monitor watched this trace's loop: ``"full"`` (busy
    #: time and blocks) or ``"blocks"`` (blocks only); ``None``: no monitor.
    #: Written by the loop monitor; the wire's optional trace field ``loop_monitor``.
    loop_monitor: str | None = None

    def __init__(self, sink: TraceSink, trace_id: int, created_ns: int) -> None:
        self.trace_id = trace_id
        self.sink = sink
        self.limits = sink.limits  # read by every child start: one lookup, not two
        self.spans: list[Span] = []
        self.ended: Iterator[int] = itertools.count(1)
        self.created_ns = created_ns

    @classmethod
    def unsampled(cls, sink: TraceSink, trace_id: int) -> TraceState:
        """A trace head sampling said no to: ids and flags for propagation only,
        no span list, no end count and no clock reads."""
        state = cls.__new__(cls)
        state.trace_id = trace_id
        state.sink = sink
        state.sampled = False
        return state

    @classmethod
    def silent(cls) -> TraceState:
        """The trace of a silent span (trace id 0): it records nothing and propagates nothing."""
        state = cls.__new__(cls)
        state.trace_id = 0
        state.spans = []
        state.sampled = False
        return state

    def reopen(self) -> list[Span]:
        """A span starts after the trace was emitted: a fresh span list and end
        count for the follow-up record, tracked again for the age limit."""
        spans: list[Span] = []
        self.spans = spans
        self.ended = itertools.count(1)
        self.created_ns = clock.now_ns()
        self.sink.open_traces.add(self)
        return spans

    def all_ended(self) -> bool:
        """True when every recorded span has ended (newest first: they end last)."""
        spans = self.spans
        for index in range(len(spans) - 1, -1, -1):
            if spans[index].end_ns is None:
                return False
        return bool(spans)

    def take(self) -> list[Span]:
        """Moves the spans out for emission; a late span will ``reopen()``."""
        spans = self.spans
        self.spans = EMITTED
        self.ended = SPENT
        return spans

    def take_unfinished(self) -> tuple[list[Span], int]:
        """Moves the spans out although some are still open (age limit, shutdown).

        Returns the spans and how many of them are open. The open ones stop
        recording, so their late end is not counted a second time.
        """
        spans = self.take()
        open_count = 0
        for span in spans:
            if span.end_ns is None:
                span.recording = False
                open_count += 1
        return spans, open_count
