"""One current span for both APIs: OpenTelemetry's context shows flowtracker's span, and back.

flowtracker keeps the current span in its own ``ContextVar``; OpenTelemetry
keeps a ``Context`` (a dict holding, among others, the current span) in
another, behind its *runtime context*: every ``opentelemetry.context.attach``,
``get_current`` and ``detach``, whoever calls it (``trace.use_span``,
instrumentations, propagators), goes through the one object at
``opentelemetry.context._RUNTIME_CONTEXT``. :class:`BridgedRuntimeContext`
wraps that object:

* ``attach(context)``: makes the flowtracker span inside ``context``'s span
  current too (``flowtracker._core.activate``), or none when the context
  holds no flowtracker span (an extracted remote parent, an empty context);
  ``detach`` undoes both.
* ``get_current()``: when flowtracker's current span is not the one the
  OpenTelemetry context holds (a ``with ft.span(...)`` opened since), returns
  the context with a view of it (:class:`~flowtracker.otel._span.BridgeSpan`),
  so ``trace.get_current_span()`` carries its trace and span ids and
  propagators inject the right ``traceparent``.

Why wrap ``_RUNTIME_CONTEXT`` rather than select a runtime context by name
(``OTEL_PYTHON_CONTEXT``, entry-point group ``opentelemetry_context``)? The
name is read once, when ``opentelemetry.context`` is first imported, which
in an instrumented program happens long before ``install()`` runs; and a
runtime context loaded that way is imported from inside that import, before
``opentelemetry.trace`` can be. Wrapping the object that is there keeps a
custom runtime context the user picked, keeps contexts attached before
``install()``, and works whenever it is called. It is the one reliance on an
OpenTelemetry private name (with ``_RuntimeContext``, the documented base of
runtime contexts): :func:`bridge_context` checks the effect through public
functions only and raises if a new OpenTelemetry release moved it, and
``tests/test_otel_api.py::TestOpenTelemetryInternals`` pins both.

Example:
    >>> import flowtracker as ft
    >>> from opentelemetry import trace
    >>> bridge_context()
    >>> with ft.span("handler") as native:
    ...     trace.get_current_span().get_span_context().span_id == native.span_id
    True
"""

from __future__ import annotations

import threading
from contextvars import Token
from typing import cast

import opentelemetry.context as otel_context
from opentelemetry.context import Context
from opentelemetry.context.context import _RuntimeContext  # the runtime-context interface (private name)
from opentelemetry.trace import INVALID_SPAN, get_current_span, set_span_in_context

from .._core import Span, activate, current_span, deactivate
from .._core.patches import patch_attribute
from ._span import SPAN_KEY, BridgeSpan

__all__ = ("BridgeError", "BridgedRuntimeContext", "bridge_context")


class BridgeError(RuntimeError):
    """OpenTelemetry's context could not be joined to flowtracker's (an OpenTelemetry
    release changed how its runtime context is held)."""


class _Token:
    """What :meth:`BridgedRuntimeContext.attach` returns: both tokens, for ``detach``."""

    __slots__ = ("ft_token", "inner", "span")

    def __init__(self, inner: Token[Context], span: Span | None, ft_token: Token[Span | None]) -> None:
        self.inner = inner
        self.span = span
        self.ft_token = ft_token


class BridgedRuntimeContext(_RuntimeContext):
    """An OpenTelemetry runtime context that keeps flowtracker's current span in step.

    Args:
        inner: The runtime context it wraps (the one OpenTelemetry had).
    """

    def __init__(self, inner: _RuntimeContext) -> None:
        self.inner = inner

    def attach(self, context: Context) -> Token[Context]:
        """Attaches ``context``, and makes its flowtracker span (or none) flowtracker's current span."""
        inner = self.inner.attach(context)
        held = context.get(SPAN_KEY)
        span = held.ft if type(held) is BridgeSpan else None
        return cast("Token[Context]", _Token(inner, span, activate(span)))

    def get_current(self) -> Context:
        """The current context, holding flowtracker's current span (or none when there is none)."""
        context = self.inner.get_current()
        span = current_span()
        held = context.get(SPAN_KEY)
        if span is None:
            # flowtracker left every span (``activate(None)``, ``ft.bind`` of no
            # span): a flowtracker span the context still holds is not current.
            if type(held) is BridgeSpan:
                return set_span_in_context(INVALID_SPAN, context)
            return context
        if type(held) is BridgeSpan and held.ft is span:
            return context
        return set_span_in_context(BridgeSpan(span, owned=False), context)

    def detach(self, token: Token[Context]) -> None:
        """Restores both current spans (flowtracker's never raises; OpenTelemetry's may, as before)."""
        if isinstance(token, _Token):
            deactivate(token.span, token.ft_token)
            self.inner.detach(token.inner)
        else:  # attached before the bridge was installed
            self.inner.detach(token)


_lock = threading.Lock()


def bridge_context() -> None:
    """Joins OpenTelemetry's context to flowtracker's current span (idempotent, thread-safe).

    Raises:
        BridgeError: The join did not take: a new OpenTelemetry release no
            longer routes ``opentelemetry.context`` through ``_RUNTIME_CONTEXT``
            (what this call changed is undone).
    """
    with _lock:
        # Reliance on an OpenTelemetry private name: ``opentelemetry.context``'s
        # functions read the module global ``_RUNTIME_CONTEXT`` on every call
        # (covered by TestOpenTelemetryInternals, and checked right below).
        current = otel_context._RUNTIME_CONTEXT
        patch = None
        if not isinstance(current, BridgedRuntimeContext):
            patch = patch_attribute(
                otel_context,
                "_RUNTIME_CONTEXT",
                BridgedRuntimeContext(current),
                reason="once flowtracker.otel is used: one current span for OpenTelemetry and flowtracker",
            )
        if not _bridged():
            if patch is not None:
                patch.undo()  # a join that does not take changes nothing
            raise BridgeError(
                "flowtracker.otel could not join OpenTelemetry's context to flowtracker's: this "
                "opentelemetry-api no longer reads opentelemetry.context._RUNTIME_CONTEXT; "
                "please report it with your opentelemetry-api version"
            )


def _bridged() -> bool:
    """Checks both directions through public functions only, with a span that is never started."""
    probe = Span("flowtracker.otel.probe")
    token = otel_context.attach(set_span_in_context(BridgeSpan(probe, owned=False), Context()))
    try:
        seen_by_flowtracker = current_span() is probe
    finally:
        otel_context.detach(token)
    ft_token = activate(probe)
    try:
        held = get_current_span()
    finally:
        deactivate(probe, ft_token)
    return seen_by_flowtracker and isinstance(held, BridgeSpan) and held.ft is probe
