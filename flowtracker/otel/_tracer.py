"""``TracerProvider`` and ``Tracer``: OpenTelemetry API spans made as flowtracker spans.

A span's parent is the OpenTelemetry context's span, as the API says: the
``context=`` given, else the current one, which the bridged runtime context
(:mod:`flowtracker.otel._context`) keeps equal to flowtracker's current span.

* a flowtracker span (one the bridge started, or a native one): the new
  span is its child (``flowtracker._core.start_child``);
* a valid span context that is not flowtracker's (``extract()`` of an
  incoming ``traceparent``): a new flowtracker trace continues it
  (``start_root_span`` with its trace id, span id as parent, sampled and
  random flags, and tracestate);
* none: a new flowtracker trace.

Example:
    >>> import flowtracker as ft
    >>> from flowtracker.otel import TracerProvider
    >>> tracer = TracerProvider().get_tracer("shop")
    >>> with ft.span("handler") as handler:
    ...     with tracer.start_as_current_span("charge", attributes={"amount": 3}) as charge:
    ...         with ft.span("ledger") as ledger:
    ...             pass
    >>> charge.ft.parent is handler, ledger.parent is charge.ft, charge.ft.tags
    (True, True, {'amount': 3})
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util import types

from .._core import Span, TraceSink, activate, current_span, deactivate, start_child, start_root_span
from ._context import bridge_context
from ._span import KINDS, LINKS_TAG, SPAN_KEY, BridgeSpan, format_links, monotonic_ns

__all__ = ("CurrentSpan", "Tracer", "TracerProvider")

_F = TypeVar("_F", bound=Callable[..., Any])


class TracerProvider(trace.TracerProvider):
    """An OpenTelemetry ``TracerProvider`` whose spans are flowtracker spans.

    Pass it to an instrumentor (``URLLibInstrumentor().instrument(tracer_provider=provider)``)
    or make it the global provider with :func:`flowtracker.otel.install`.
    Creating one joins OpenTelemetry's current context to flowtracker's
    (process-wide, once), so spans of both APIs nest whichever side started them.

    Args:
        tracker: The tracker new traces report to; default: the one
            ``flowtracker`` picks for any root (the bound or last started one).

    Example:
        >>> from flowtracker.otel import TracerProvider
        >>> provider = TracerProvider()
        >>> provider.get_tracer("my.library").start_span("work").end()
    """

    def __init__(self, tracker: TraceSink | None = None) -> None:
        bridge_context()
        self.tracker = tracker

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: types.Attributes = None,
    ) -> Tracer:
        """A tracer (the instrumentation scope is not recorded: flowtracker spans have none)."""
        return Tracer(self.tracker)


class Tracer(trace.Tracer):
    """Starts OpenTelemetry spans as flowtracker spans; made by :meth:`TracerProvider.get_tracer`."""

    def __init__(self, tracker: TraceSink | None = None) -> None:
        self.tracker = tracker

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> BridgeSpan:
        """Starts a flowtracker span (not made current); see the module for how its parent is found.

        Inside ``suppressed()`` (and under an unstarted span) no span starts:
        the current span's view comes back, non-recording, so making it current
        keeps suppression.
        """
        tags = dict(attributes) if attributes else None
        ft_kind = KINDS.get(kind, "internal")
        start_ns = None if start_time is None else monotonic_ns(start_time)
        current = current_span()
        parent = current if context is None else _flowtracker_span(context)
        if parent is not None:
            if parent is current:
                span = start_child(name, tags, kind=ft_kind, start_ns=start_ns)
            else:  # an explicit context names another flowtracker span: start under it
                token = activate(parent)
                try:
                    span = start_child(name, tags, kind=ft_kind, start_ns=start_ns)
                finally:
                    deactivate(parent, token)
            if span is None:
                return BridgeSpan(parent, owned=False)
        else:
            span = self._start_root(name, tags, ft_kind, context, start_ns)
        if links:
            linked = format_links(links)
            if linked:
                span.set_tag(LINKS_TAG, linked)
        return BridgeSpan(span, True, record_exception, set_status_on_exception)

    def _start_root(
        self, name: str, tags: dict[str, Any] | None, kind: str, context: Context | None, start_ns: int | None
    ) -> Span:
        held = (otel_context.get_current() if context is None else context).get(SPAN_KEY)
        remote = held.get_span_context() if isinstance(held, trace.Span) else None
        if remote is None or not remote.is_valid:
            return start_root_span(name, tags, tracker=self.tracker, kind=kind, start_ns=start_ns)
        tracestate = remote.trace_state.to_header() if remote.trace_state else ""
        return start_root_span(
            name,
            tags,
            tracker=self.tracker,
            trace_id=remote.trace_id,
            parent_id=remote.span_id,
            sampled=bool(remote.trace_flags & 0x01),
            random_flag=bool(remote.trace_flags & 0x02),
            tracestate=tracestate or None,
            kind=kind,
            start_ns=start_ns,
        )

    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> CurrentSpan:
        """Starts a span and makes it current for a ``with`` block, or for each call of a decorated function.

        Example:
            >>> from flowtracker.otel import TracerProvider
            >>> tracer = TracerProvider().get_tracer("shop")
            >>> @tracer.start_as_current_span("load")
            ... async def load(): ...
        """
        return CurrentSpan(
            self,
            (name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception),
            end_on_exit,
        )


def _flowtracker_span(context: Context) -> Span | None:
    held = context.get(SPAN_KEY)
    return held.ft if type(held) is BridgeSpan else None


class CurrentSpan:
    """What ``start_as_current_span`` returns: a context manager, and a decorator.

    A class rather than ``@contextmanager``: no generator per span, and one
    object that decorates sync and async functions alike (a fresh span per call).
    """

    __slots__ = ("_arguments", "_end_on_exit", "_span", "_token", "_tracer")

    def __init__(self, tracer: Tracer, arguments: tuple[Any, ...], end_on_exit: bool) -> None:
        self._tracer = tracer
        self._arguments = arguments
        self._end_on_exit = end_on_exit

    def __enter__(self) -> BridgeSpan:
        span = self._span = self._tracer.start_span(*self._arguments)
        # What ``trace.set_span_in_context(span)`` makes, without its two extra calls.
        self._token = otel_context.attach(Context({**otel_context.get_current(), SPAN_KEY: span}))
        return span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        otel_context.detach(self._token)
        self._span.exit(exc, self._end_on_exit)

    def __call__(self, function: _F) -> _F:
        fresh = functools.partial(CurrentSpan, self._tracer, self._arguments, self._end_on_exit)
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with fresh():
                    return await function(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            with fresh():
                return function(*args, **kwargs)

        return run  # type: ignore[return-value]
