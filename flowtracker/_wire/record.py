"""A finished trace, as exporters receive it: ``Trace``.

The pipeline builds one per completed trace (or follow-up) and hands it to
every exporter lane; encoding to the wire format happens on first use, in
the lane, never on the request path.

Example:
    >>> import flowtracker as ft
    >>> from flowtracker.testing import capture_traces
    >>> with capture_traces(service="orders") as traces:
    ...     with ft.span("checkout"):
    ...         pass
    >>> traces[0]["service"]  # what Trace.to_dict() gave the MemoryExporter
    'orders'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from .completion import COMPLETION_HOOKS, run_completion_hooks
from .encode import encode, trace_to_dict
from .policy import DEFAULT_POLICY

if TYPE_CHECKING:
    from .._core.span import Span
    from .policy import ExportPolicy

__all__ = ("Trace",)


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
        >>> record = Trace(0x4BF92F3577B34DA6A3CE929D0E0E4736, "orders", [])
        >>> record.to_dict()
        {'trace_id': '4bf92f3577b34da6a3ce929d0e0e4736', 'service': 'orders', 'spans': []}
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
        if COMPLETION_HOOKS:  # what is known only once the trace is finished (stalled time)
            run_completion_hooks(spans)

    @property
    def trace_id(self) -> str:
        """The trace id as 32 lowercase hex characters."""
        trace_id = self._trace_id
        if type(trace_id) is int:
            trace_id = self._trace_id = f"{trace_id:032x}"
        return trace_id  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        """The trace in the wire format (built once, then cached).

        Exactly what :meth:`to_json` encodes: every string in it is valid
        Unicode and every value encodable (the encoder makes them so as it
        builds the dict; see :mod:`flowtracker._wire.encode`), so any exporter
        can encode it.
        """
        data = self._dict
        if data is None:
            if self._json is not None:  # encoded before: the JSON is the truth, and cheap to read
                data = orjson.loads(self._json)
            else:
                data = trace_to_dict(self, self._policy or DEFAULT_POLICY)
            self._dict = data
        return data

    def to_json(self) -> bytes:
        """The trace as compact JSON bytes (encoded once, then cached)."""
        if self._json is None:
            # From the dict if to_dict() made one; else the dict is made for
            # this and not kept: most exporters want only the bytes, and every
            # object left alive makes the cyclic GC's passes longer.
            data = self._dict
            self._json = encode(trace_to_dict(self, self._policy or DEFAULT_POLICY) if data is None else data)
        return self._json

    def __repr__(self) -> str:
        return f"<Trace {self.trace_id} spans={len(self.spans)}>"
