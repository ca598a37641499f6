"""flowtracker as the OpenTelemetry API's tracer provider: ``install()``, ``TracerProvider``.

Every library instrumented for OpenTelemetry (the ``opentelemetry-instrumentation-*``
packages: urllib, grpc, botocore, aio-pika, ...) then records into flowtracker
traces: its spans become flowtracker spans in the current trace, flowtracker
spans opened inside them become their children, and inside a flowtracker
span ``opentelemetry.trace.get_current_span()`` carries that span's ids, so
OpenTelemetry propagators inject the right ``traceparent``. Needs only
``opentelemetry-api`` (the ``otel-api`` extra), never the SDK.

OpenTelemetry lets the global provider be set once per process. ``install()``
sets it, or returns the flowtracker provider already set; if another
provider (the SDK's, say) is already installed it raises
:class:`ProviderConflictError` and changes nothing. An explicit
:class:`TracerProvider` works regardless: pass it to an instrumentor's
``tracer_provider=``. See ``docs/otel.md`` for the mapping.

Example:
    >>> import flowtracker as ft
    >>> from flowtracker import otel
    >>> from opentelemetry import trace
    >>> provider = otel.install()
    >>> tracer = trace.get_tracer("shop")
    >>> with ft.span("handler"):
    ...     with tracer.start_as_current_span("charge") as charge:
    ...         charge.set_attribute("amount", 3)
"""

from __future__ import annotations

from opentelemetry import trace

from .._core import TraceSink
from ._context import BridgedRuntimeContext as BridgedRuntimeContext
from ._context import BridgeError as BridgeError
from ._span import BridgeSpan as BridgeSpan
from ._span import StatusError as StatusError
from ._tracer import Tracer as Tracer
from ._tracer import TracerProvider as TracerProvider

__all__ = (
    "BridgeError",
    "BridgeSpan",
    "BridgedRuntimeContext",
    "ProviderConflictError",
    "StatusError",
    "Tracer",
    "TracerProvider",
    "install",
)


class ProviderConflictError(RuntimeError):
    """Another OpenTelemetry tracer provider is already the global one.

    OpenTelemetry never replaces a global provider once set. Either install
    flowtracker's before anything else sets one, or pass a
    :class:`TracerProvider` explicitly (``tracer_provider=``).

    Attributes:
        installed: The provider that is installed.
    """

    def __init__(self, installed: trace.TracerProvider) -> None:
        self.installed = installed
        name = f"{type(installed).__module__}.{type(installed).__qualname__}"
        super().__init__(
            f"another OpenTelemetry tracer provider is already installed ({name}) and OpenTelemetry "
            "does not allow replacing it: call flowtracker.otel.install() before anything else sets "
            "one, or pass flowtracker.otel.TracerProvider() to each instrumentor's tracer_provider="
        )


def install(tracker: TraceSink | None = None) -> TracerProvider:
    """Makes flowtracker the global OpenTelemetry tracer provider, and returns it.

    Idempotent: when a flowtracker provider is already the global one, that
    one is returned (``tracker`` is then ignored).

    Args:
        tracker: The tracker new traces report to; default: the one flowtracker
            picks for any root (the bound or last started tracker).

    Raises:
        ProviderConflictError: Another provider is already the global one
            (nothing is changed; OpenTelemetry allows one per process).

    Example:
        >>> from flowtracker import otel
        >>> otel.install() is otel.install()
        True
    """
    installed = trace.get_tracer_provider()
    if isinstance(installed, TracerProvider):
        return installed
    # Unset, the API hands out its proxy, which forwards to whatever is set later.
    if not isinstance(installed, trace.ProxyTracerProvider):
        raise ProviderConflictError(installed)
    provider = TracerProvider(tracker)
    trace.set_tracer_provider(provider)
    installed = trace.get_tracer_provider()
    if installed is not provider:  # another thread set one in between
        if isinstance(installed, TracerProvider):
            return installed
        raise ProviderConflictError(installed)
    return provider
