"""The core: spans, the trace under assembly, the current-span context, ids and clock.

It imports nothing of the pipeline, anyio, the exporters or the
integrations; it reports ended spans to a :class:`~flowtracker._core.sink.TraceSink`
(the pipeline's ``Tracker``). This package's namespace is the one internal
API for everything that makes spans on a user's behalf (the HTTP
middlewares, ``@traced``, log correlation, instrumentations):

* start a root from an incoming request's context: :func:`start_root_span`
  (``trace_id``, ``parent_id``, ``sampled``, ``random_flag``, ``tracestate``, ``kind``);
* start a child of the current span, or nothing outside a trace: :func:`start_child`;
* make a span current for a block: ``with span:``, or :func:`activate` /
  :func:`deactivate` where a ``with`` does not fit; :func:`suppressed` for
  work that must not trace itself;
* end a span with a status or an exception: :meth:`Span.end`,
  :meth:`Span.end_with_exception` (and :meth:`Span.finish`);
* set times explicitly (a bridge from another API): ``start_ns=`` of
  :func:`start_child` and :func:`start_root_span`, ``end_ns=`` of
  :meth:`Span.end`, ``at_ns=`` of :meth:`Span.record_event`;
* record an event (the one path, with the one limit check): :meth:`Span.record_event`;
* attach what is declared in :class:`SpanExtras` (event-loop time):
  :meth:`Span.ensure_extras`, each field by its one writer;
* read a span's trace context for propagation: :meth:`Span.span_context`;
* learn which span runs on a thread, and when a span is about to end (the
  event-loop monitor): :func:`set_switch_observer` (a :class:`SwitchObserver`);
  with none set, the span methods are the plain ones.

Example:
    >>> from flowtracker import _core
    >>> import flowtracker as ft
    >>> with ft.span("handler"):
    ...     call = _core.start_child("GET shipping", {"http.method": "GET"}, kind="client")
    ...     call.end(_core.STATUS_ERROR, RuntimeError("HTTP 503"))
    >>> call.status, call.kind
    ('error', 'client')
"""

from __future__ import annotations

from .extras import Event as Event
from .extras import SpanExtras as SpanExtras
from .sink import BOUND_SINK as BOUND_SINK
from .sink import Limits as Limits
from .sink import TraceSink as TraceSink
from .sink import set_default_sink_resolver as set_default_sink_resolver
from .span import STATUS_CANCELLED as STATUS_CANCELLED
from .span import STATUS_ERROR as STATUS_ERROR
from .span import STATUS_OK as STATUS_OK
from .span import STATUS_UNFINISHED as STATUS_UNFINISHED
from .span import Span as Span
from .span import SpanContext as SpanContext
from .span import SwitchObserver as SwitchObserver
from .span import activate as activate
from .span import current_span as current_span
from .span import deactivate as deactivate
from .span import set_switch_observer as set_switch_observer
from .span import start_child as start_child
from .span import start_root_span as start_root_span
from .span import suppressed as suppressed
from .trace import TraceRoot as TraceRoot

__all__ = (
    "BOUND_SINK",
    "STATUS_CANCELLED",
    "STATUS_ERROR",
    "STATUS_OK",
    "STATUS_UNFINISHED",
    "Event",
    "Limits",
    "Span",
    "SpanContext",
    "SpanExtras",
    "SwitchObserver",
    "TraceRoot",
    "TraceSink",
    "activate",
    "current_span",
    "deactivate",
    "set_default_sink_resolver",
    "set_switch_observer",
    "start_child",
    "start_root_span",
    "suppressed",
)
