"""What a span carries beyond its name, ids, times and tags: ``SpanExtras``, declared once.

Most spans end ``ok`` with no kind, no error, no events and no monitor: their
``Span.extras`` stays ``None`` and costs nothing. A root carries its trace
(see ``flowtracker._core.trace``), and what a trace rarely has (a remote
parent, a ``tracestate``, dropped spans, a follow-up, the monitor's mode)
is here too, on the root's extras. The first write of any field
below makes the span's :class:`SpanExtras` (``Span.ensure_extras()``); every
field is read by name, typed, and has one writer, named next to it, so the
layers that attach things to spans (the core, the event-loop monitor) and the
one that reads them (the wire encoder) agree on one declaration, as anyio's
typed attributes do.

Example:
    >>> import flowtracker as ft
    >>> with ft.span("checkout") as span:
    ...     ft.add_event("cache miss", key="cart:7")
    >>> span.extras.status, span.extras.kind, [name for name, _, _ in span.extras.events]
    ('ok', 'internal', ['cache miss'])
    >>> ft.span("quiet").extras is None
    True
"""

from __future__ import annotations

from typing import Any

__all__ = (
    "STATUS_CANCELLED",
    "STATUS_ERROR",
    "STATUS_OK",
    "STATUS_UNFINISHED",
    "Event",
    "SpanExtras",
)

#: Span statuses, as written in the output.
STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUS_CANCELLED = "cancelled"
STATUS_UNFINISHED = "unfinished"

#: One span event: ``(name, monotonic_ns, attributes)``.
Event = tuple[str, int, dict[str, Any]]


class SpanExtras:
    """The optional part of one span; see the module docstring.

    No ``__slots__``, and no ``__init__``: every field is a class-level
    default, so making one is a bare object allocation and a span pays only
    for the fields written into it (a slotted class would have to write every
    field at creation, which costs twice as much as the common one-field case).
    """

    # -- written by the core (flowtracker._core.span) -----------------------

    #: ``ok``, ``error`` or ``cancelled`` (``unfinished`` only from an
    #: instrumentation that lost the end). Written by ``Span.end`` only.
    status: str = STATUS_OK
    #: The exception of an ``error`` span. Written by ``Span.end`` only.
    error: BaseException | None = None
    #: ``internal``, ``server`` (request roots), ``client`` (outgoing calls),
    #: ``producer`` or ``consumer``. Written by the ``Span.kind`` setter only.
    kind: str = "internal"
    #: The span's events, oldest first. Appended by ``Span.record_event`` only,
    #: which applies the tracker's ``max_events_per_span``.
    events: list[Event] | None = None
    #: Tags not kept because of ``max_tags_per_span``. Counted by ``Span.set_tag`` only.
    dropped_tags: int = 0

    # -- on a root only: what its trace rarely has (see _core/trace.py) -----

    #: The caller's span id when the trace continues a remote one
    #: (``traceparent``): the root's ``parent_id`` on the wire. Written by
    #: ``start_root_span`` only.
    remote_parent_id: int | None = None
    #: The incoming ``tracestate`` header, passed on to outgoing calls.
    #: Written by ``start_root_span`` only.
    tracestate: str | None = None
    #: The caller's W3C Level 2 ``random`` trace flag, passed on to outgoing
    #: calls. Written by ``start_root_span`` only.
    random_flag: bool = False
    #: True once the trace's spans were taken (emitted, or dropped and
    #: counted) and a late span started: every record after that is a
    #: follow-up (``follow_up`` on the wire). Written by ``trace.reopen`` only.
    follow_up: bool = False
    #: Spans not kept because of ``max_spans_per_trace`` since the trace's
    #: current record began (``dropped_spans`` on the wire). Counted by
    #: ``Span.__enter__``, and set back to 0 by ``trace.reopen`` for a follow-up.
    dropped_spans: int = 0

    # -- written by the event-loop monitor (flowtracker.loop_monitor) -------

    #: On a root: how an event-loop monitor watched the trace's loop,
    #: ``"full"`` (busy time and blocks) or ``"blocks"`` (blocks only);
    #: ``None``: no monitor (``loop_monitor`` on the wire, a trace field).
    #: Written by ``loop_monitor._observers.mark_watched`` only.
    loop_monitor: str | None = None

    #: The span's own time running on a watched event loop, in ns (``busy_ms``
    #: on the wire); ``None`` when no monitor watched it. Written by
    #: ``loop_monitor._callbacks.add_busy`` only.
    busy_ns: int | None = None
    #: Time the span waited while another span's code blocked the loop, in ns
    #: (``stalled_ms`` on the wire); ``None`` when not known. Written at the
    #: trace's completion by ``loop_monitor._stalled.stall`` only.
    stalled_ns: int | None = None
    #: ``event_loop.stalled`` events not kept because of the monitor's
    #: per-span bound on them (the kept ones are in :attr:`events`;
    #: ``stalled_dropped`` on the wire). Written by ``loop_monitor._stalled.stall`` only.
    stalled_dropped: int = 0
    #: True when the span ended on a thread that runs no watched loop while a
    #: monitor observed spans (a worker thread): the loop's blocks never stalled
    #: it. Written by ``loop_monitor._observers.mark_off_loop`` only.
    off_loop: bool = False
