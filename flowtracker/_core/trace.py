"""The trace under assembly, carried by its root span: ``TraceRoot``.

There is no trace object apart from the spans. The span that starts a trace
(its root) carries it: the fields of :class:`TraceRoot`, a base of ``Span``,
are filled on a root only, and every other span of the trace points to its
root (``Span.root``). Starting a trace therefore makes one object (the root
span) and calls nothing to build state; an in-flight request keeps one
garbage-collected object fewer alive than a separate state object would.

Completion is decided without locks. Starting a span appends it to the root's
``spans`` and ending one takes the next number from the root's ``ended`` (an
``itertools.count``); both are single C calls, atomic under the GIL, so spans
may start and end in any thread. The span whose end number equals the number
of started spans *may* be the last one: it asks the sink to check, and the
sink (the pipeline's tracker) decides on its own thread (the only place a
trace is ever emitted), after the callbacks already scheduled on the loop
have run, so a fire-and-forget task that starts a child span right after its
parent ended still lands in the same trace.

A trace is emitted or dropped once: :func:`claim` takes its spans only if it
removes its root from the sink's ``open_traces`` (``set.remove``, one C
call), so of two claimants racing (a completion check on the loop, a drop in
another thread, the age sweep) only one gets them. A span that starts after
that (a late one) calls :func:`reopen`: a fresh span list for a follow-up
record, tracked again for the age limit.

Reference cycles: while a trace is open, the root's ``spans`` holds the spans
and each child holds the root; the root holds no reference to itself (its
``root`` is ``None``). On emission the span list moves into the finished
record and ``spans`` is replaced by an empty sentinel, so a finished trace is
an acyclic graph that reference counting frees at once, not the cyclic
garbage collector (whose pauses show up in request p99).

Example:
    >>> import flowtracker as ft
    >>> from flowtracker.testing import capture_traces
    >>> with capture_traces() as traces:
    ...     with ft.span("root") as root, ft.span("child") as child:
    ...         carried = child.root is root and root.root is None and root.spans == [root, child]
    >>> carried, traces[0]["spans"][1]["name"]
    (True, 'child')
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sink import TraceSink
    from .span import Span

__all__ = ("EMITTED", "SPENT", "TraceRoot", "all_ended", "claim", "reopen", "stop_open")


#: A root's ``spans`` once claimed: empty, so the next span to start knows it
#: is late and calls :func:`reopen` (a new list and count made only if one comes).
EMITTED: list[Span] = ()  # type: ignore[assignment]

#: A root's ``ended`` once claimed: one shared counter instead of the trace's
#: own, which is freed at emission. Its numbers never equal ``len(EMITTED)``
#: (0), so a span of a claimed trace that ends late (an unfinished one) never
#: triggers completion.
SPENT: Iterator[int] = itertools.count(1)


class TraceRoot:
    """The fields a span fills when it starts a trace. Internal: users see ``Span`` and ``Trace``.

    A base of ``Span``: every span has these slots, only a root writes them
    (a child reads its trace through ``Span.root``). What a trace rarely
    has (a remote parent, a ``tracestate``, dropped spans, a follow-up, the
    loop monitor's mode) is in the root's ``extras``
    (:class:`~flowtracker._core.extras.SpanExtras`), made only when written.

    Attributes:
        trace_id_int: The 128-bit trace id (0 for a silent span's trace).
        spans: The spans started since the trace (or its follow-up) began, in
            start order, the root first; :data:`EMITTED` once claimed; ``None``
            when the trace is not recorded (head sampling said no, or silent).
        sink: Where the trace is reported (recorded traces only).
        ended: The end count (recorded traces only; :data:`SPENT` once claimed).
        ended_seen: The end count at the last completion trigger (written then).
    """

    __slots__ = ("ended", "ended_seen", "sink", "spans", "trace_id_int")

    trace_id_int: int
    spans: list[Span] | None
    sink: TraceSink
    ended: Iterator[int]
    ended_seen: int


def reopen(root: Span, late: Span) -> None:
    """``late`` starts after the trace was claimed: a fresh span list (holding
    ``late``) and end count for a follow-up record, tracked again for the age limit.

    The record it leads to is marked ``follow_up``, and counts only the spans
    dropped since (``dropped_spans``). The trace is tracked last, once its
    list holds ``late``: a claimant never finds it empty.
    """
    extras = root.extras or root.ensure_extras()
    extras.follow_up = True
    extras.dropped_spans = 0
    root.spans = [late]
    root.ended = itertools.count(1)
    root.sink.open_traces.add(root)


def all_ended(spans: list[Span]) -> bool:
    """True when every span in ``spans`` has ended (newest first: they end last)."""
    for index in range(len(spans) - 1, -1, -1):
        if spans[index].end_ns is None:
            return False
    return bool(spans)


def claim(root: Span) -> list[Span] | None:
    """Takes the spans of the trace ``root`` carries, to emit or drop them;
    ``None`` when another claimant took them first (see the module docstring).

    A span that starts afterwards will :func:`reopen` the trace.
    """
    try:
        root.sink.open_traces.remove(root)
    except KeyError:
        return None
    spans = root.spans
    root.spans = EMITTED
    root.ended = SPENT
    return spans


def stop_open(spans: list[Span]) -> int:
    """The spans of a claimed trace still open stop recording (age limit, shutdown,
    fork); returns how many.

    So their late end is not counted a second time; spans started under them
    still record (``Span.__enter__`` asks the root, not the parent) and go
    out in follow-up records.
    """
    open_count = 0
    for span in spans:
        if span.end_ns is None:
            span.recording = False
            open_count += 1
    return open_count
