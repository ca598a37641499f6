"""A trace while it is being assembled (``TraceState``) and once finished (``Trace``).

Completion is decided without locks. Starting a span appends it to
``TraceState.spans`` and ending one takes the next number from
``TraceState.ended`` (an ``itertools.count``); both are single C calls, atomic
under the GIL, so spans may start and end in any thread. The span whose end
number equals the number of started spans *may* be the last one: it asks the
tracker to check, and the tracker decides on its own event loop thread (the
only place a trace is ever emitted), after the callbacks already scheduled on
the loop have run, so a fire-and-forget task that starts a child span right
after its parent ended still lands in the same trace.

Reference cycles: while a trace is open, ``state.spans`` holds the spans and
each span holds ``state``. On emission the span list moves into the ``Trace``
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
from typing import TYPE_CHECKING, Any

from ._policy import DEFAULT_POLICY
from ._wire import encode, trace_to_dict

if TYPE_CHECKING:
    from ._policy import ExportPolicy
    from ._span import Span
    from ._tracker import Tracker


#: ``TraceState.spans`` once emitted: empty, so the next span to start knows it
#: is late and calls ``reopen()`` (new list and count made only if one comes).
EMITTED: list[Span] = ()  # type: ignore[assignment]


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
    #: The end count at the last completion trigger (see ``Tracker._complete_pending``).
    ended_seen = -1

    def __init__(self, tracker: Tracker, trace_id: int, created_ns: int) -> None:
        self.trace_id = trace_id
        self.tracker = tracker
        self.spans: list[Span] = []
        self.ended: Iterator[int] = itertools.count(1)
        self.created_ns = created_ns

    def reopen(self) -> list[Span]:
        """A span starts after the trace was emitted: a fresh span list and end
        count for the follow-up record, tracked again for the age limit."""
        from ._clock import now_ns

        spans: list[Span] = []
        self.spans = spans
        self.ended = itertools.count(1)
        self.created_ns = now_ns()
        self.tracker._open_traces.add(self)
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
        return spans


class Trace:
    """A finished trace, as exporters receive it.

    Attributes:
        trace_id: 32 lowercase hex characters.
        service: The tracker's ``service`` name, or ``None``.
        spans: The finished spans, in start order.
        dropped_spans: Spans not kept because the trace hit ``max_spans_per_trace``.
        follow_up: True for a record of spans that ended after the trace was
            already emitted (same ``trace_id``).
        unfinished: Number of spans still open when the trace was emitted
            (trace-age limit or shutdown); they carry status ``unfinished``.

    Example:
        >>> record.to_dict()["trace_id"]  # doctest: +SKIP
        '4bf92f3577b34da6a3ce929d0e0e4736'
    """

    # No __slots__: fields that are usually at their default stay class-level.
    dropped_spans = 0
    follow_up = False
    unfinished = 0
    _dict: dict[str, Any] | None = None
    _json: bytes | None = None

    def __init__(
        self,
        trace_id: int | str,
        service: str | None,
        spans: list[Span],
        dropped_spans: int = 0,
        follow_up: bool = False,
        unfinished: int = 0,
        policy: ExportPolicy | None = None,
    ) -> None:
        # Kept as given (an int from the tracker) and formatted on first use,
        # in the exporter lane rather than when the trace completes.
        self._trace_id = trace_id
        self.service = service
        self.spans = spans
        self._policy = policy
        if dropped_spans:
            self.dropped_spans = dropped_spans
        if follow_up:
            self.follow_up = follow_up
        if unfinished:
            self.unfinished = unfinished

    @property
    def trace_id(self) -> str:
        """The trace id as 32 lowercase hex characters."""
        trace_id = self._trace_id
        if type(trace_id) is int:
            trace_id = self._trace_id = f"{trace_id:032x}"
        return trace_id  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        """The trace in the wire format of ``design.md`` (built once, then cached)."""
        if self._dict is None:
            self._dict = trace_to_dict(self, self._policy or DEFAULT_POLICY)
        return self._dict

    def to_json(self) -> bytes:
        """The trace as compact JSON bytes (encoded once, then cached)."""
        if self._json is None:
            if self._dict is not None:
                self._json = encode(self._dict)
            else:
                # The dict is not kept: most exporters want only the bytes, and
                # every object left alive makes the cyclic GC's passes longer.
                self._json = encode(trace_to_dict(self, self._policy or DEFAULT_POLICY))
        return self._json

    def __repr__(self) -> str:
        return f"<Trace {self.trace_id} spans={len(self.spans)}>"
