"""``BridgeSpan``: an OpenTelemetry ``Span`` that is a view of one flowtracker span.

Everything an OpenTelemetry caller does to the span lands on the flowtracker
span underneath: attributes become tags, events become events, the span kind
was given at start, ``set_status(ERROR)`` or ``record_exception`` make the
status ``error`` with the error recorded. Nothing is kept twice: the only
state of its own is the pending status, applied when the span ends.

A *view* (``owned=False``) wraps a span someone else started (a flowtracker
``with ft.span(...)``, a middleware's root): it reads and tags that span, so
``trace.get_current_span().set_attribute(...)`` works inside flowtracker
spans, but it never ends it; the span's owner does.

Example:
    >>> import flowtracker as ft
    >>> from flowtracker.otel._span import BridgeSpan
    >>> with ft.span("handler") as native:
    ...     view = BridgeSpan(native, owned=False)
    ...     view.set_attribute("user", "u1")
    ...     view.end()  # a view never ends the span it shows
    ...     native.end_ns is None
    True
    >>> native.tags["user"]
    'u1'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    INVALID_SPAN_CONTEXT,
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util import types

from .._core import STATUS_ERROR, Span, clock

__all__ = ("KINDS", "LINKS_TAG", "SPAN_KEY", "BridgeSpan", "StatusError", "format_links", "monotonic_ns")

#: The key under which OpenTelemetry's ``Context`` holds the current span, read
#: once through the public API (a context holding only a span has only that
#: key), so the hot path does a plain ``dict.get`` instead of two calls.
SPAN_KEY: str = next(iter(trace.set_span_in_context(trace.INVALID_SPAN, Context())))

#: OpenTelemetry span kinds as flowtracker writes them (``kind`` in the output).
KINDS: dict[SpanKind, str] = {
    SpanKind.INTERNAL: "internal",
    SpanKind.SERVER: "server",
    SpanKind.CLIENT: "client",
    SpanKind.PRODUCER: "producer",
    SpanKind.CONSUMER: "consumer",
}

#: The tag that holds a span's links, as ``<trace id>-<span id>`` strings
#: (flowtracker's output has no link field; the ids keep the reference).
LINKS_TAG = "links"

_UNSET, _OK, _ERROR = 0, 1, 2
_RANDOM_FLAG = 0x02  # W3C Level 2 ``random`` (TraceFlags.RANDOM_TRACE_ID, not in older APIs)


class StatusError(Exception):
    """The error recorded for ``set_status(ERROR, description)`` with no exception.

    flowtracker's ``error`` status carries an exception (its type and message
    are written out); an OpenTelemetry caller that sets the status without
    recording one gets this, with the status description as its message.

    Example:
        >>> str(StatusError("HTTP 503"))
        'HTTP 503'
    """


StatusError.__module__ = "flowtracker.otel"  # its public home: the output names the type by it


def monotonic_ns(wall_ns: int) -> int:
    """An explicit OpenTelemetry time (wall-clock ns since the epoch) on flowtracker's monotonic clock.

    Read at call time: ``flowtracker.testing`` swaps the anchor.

    Example:
        >>> from flowtracker._core import clock
        >>> monotonic_ns(clock.wall_anchor_ns + 5)
        5
    """
    return wall_ns - clock.wall_anchor_ns


def format_links(links: Sequence[Link] | Any) -> list[str]:
    """The valid links' span contexts as ``<32 hex>-<16 hex>`` strings; invalid ones are skipped.

    Example:
        >>> from opentelemetry.trace import Link, SpanContext
        >>> format_links([Link(SpanContext(1, 2, is_remote=True))])
        ['00000000000000000000000000000001-0000000000000002']
    """
    out = []
    for link in links:
        context = getattr(link, "context", None)
        if isinstance(context, SpanContext) and context.is_valid:
            out.append(f"{context.trace_id:032x}-{context.span_id:016x}")
    return out


class BridgeSpan(trace.Span):
    """An OpenTelemetry span backed by a flowtracker :class:`~flowtracker._core.Span`.

    Args:
        span: The flowtracker span.
        owned: True when the bridge started it (``end()`` ends it); False for a
            view of a span someone else owns (``end()`` does nothing).
        record_exception: Leaving ``with span:`` on an exception records it.
        set_status_on_exception: Leaving ``with span:`` on an exception sets status ``error``.
    """

    # Only ``ft`` is written for every span: the rest are class defaults,
    # written only when a span differs (a view, an error, a propagated context).
    __slots__ = ("ft",)
    owned = True
    flags = (True, True)
    _status = _UNSET
    _description: str | None = None
    _exception: BaseException | None = None
    _context: SpanContext | None = None

    def __init__(
        self,
        span: Span,
        owned: bool = True,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> None:
        self.ft = span
        if not owned:
            self.owned = False
        if not (record_exception and set_status_on_exception):
            self.flags = (record_exception, set_status_on_exception)

    # -- identity ------------------------------------------------------------

    def get_span_context(self) -> SpanContext:
        """The flowtracker span's ids, sampled and random flags and tracestate (made once, on demand)."""
        context = self._context
        if context is None:
            ft_context = self.ft.span_context()
            if ft_context is None:  # not started, or silent (suppressed()): propagates nothing
                return INVALID_SPAN_CONTEXT
            flags = (1 if ft_context.sampled else 0) | (_RANDOM_FLAG if ft_context.random else 0)
            state = TraceState.from_header([ft_context.tracestate]) if ft_context.tracestate else None
            context = self._context = SpanContext(
                ft_context.trace_id,
                ft_context.span_id,
                is_remote=False,
                trace_flags=TraceFlags(flags),
                trace_state=state,
            )
        return context

    def is_recording(self) -> bool:
        """True while the flowtracker span is open and recorded."""
        span = self.ft
        return span.end_ns is None and span.sampled

    # -- data ------------------------------------------------------------------

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        """Sets a tag on the flowtracker span (its per-span limit applies)."""
        self.ft.set_tag(key, value)

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        """Sets each attribute as a tag."""
        set_tag = self.ft.set_tag
        for key, value in attributes.items():
            set_tag(key, value)

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        """Adds a flowtracker event; an explicit ``timestamp`` (wall-clock ns) is kept."""
        # A copy: OpenTelemetry's attributes may be an immutable or shared mapping.
        # Keys that are not strings are written as text by the wire encoder.
        at_ns = None if timestamp is None else monotonic_ns(timestamp)
        self.ft.record_event(name, dict(attributes) if attributes else {}, at_ns)

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        """Adds the linked span's ids to the ``links`` tag (link attributes are not kept)."""
        added = format_links([Link(context)])
        if added:
            span = self.ft
            span.set_tag(LINKS_TAG, [*span.tags.get(LINKS_TAG, ()), *added])

    def update_name(self, name: str) -> None:
        """Renames the flowtracker span while it is open."""
        span = self.ft
        if span.end_ns is None:
            span.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """``ERROR`` makes the span end with status ``error``; ``OK`` is final; ``UNSET`` does nothing."""
        if isinstance(status, Status):
            code, description = status.status_code, status.description
        else:
            code = status
        if self._status == _OK or not self.is_recording():
            return
        if code is StatusCode.OK:
            self._status = _OK
        elif code is StatusCode.ERROR:
            self._status = _ERROR
            self._description = description

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """Records ``exception`` as the span's error (the first one recorded wins).

        The span ends with status ``error`` unless ``set_status(OK)`` said
        otherwise; ``attributes``, if any, go to an ``exception`` event.
        """
        if not self.is_recording():
            return
        if self._exception is None:
            self._exception = exception
        if attributes:
            self.add_event("exception", attributes, timestamp)

    # -- ending ----------------------------------------------------------------

    def end(self, end_time: int | None = None) -> None:
        """Ends the flowtracker span (a view: does nothing); ``end_time`` is wall-clock ns."""
        span = self.ft
        if not self.owned or span.end_ns is not None:
            return
        end_ns = None if end_time is None else monotonic_ns(end_time)
        status = self._status
        if status == _OK or (status == _UNSET and self._exception is None):
            span.end(end_ns=end_ns)
        else:
            error = self._exception
            if error is None:
                error = StatusError(self._description or "")
            span.end(STATUS_ERROR, error, end_ns=end_ns)

    def exit(self, exc: BaseException | None, end: bool = True) -> None:
        """Leaves a ``with`` block, as OpenTelemetry's ``use_span`` does (and ends the span if ``end``).

        An ``Exception`` is recorded and sets status ``error`` (as the span's
        ``record_exception`` / ``set_status_on_exception`` flags allow);
        task cancellation ends it ``cancelled``, as flowtracker's own spans do.
        """
        if exc is None:
            if end:
                self.end()
            return
        if isinstance(exc, Exception):
            if self.is_recording():
                record, set_status = self.flags
                if record:
                    self.record_exception(exc)
                if set_status:
                    self.set_status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}")
            if end:
                self.end()
        elif end and self.owned:
            self.ft.end_with_exception(exc)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.exit(exc_val)

    def __repr__(self) -> str:
        return f"<BridgeSpan {self.ft.name!r} owned={self.owned}>"
