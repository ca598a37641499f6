"""Spans, the current-span ContextVar, and the module-level helpers.

This is the hot path. Every span costs one object (slotted), one
``ContextVar.set``/``reset`` pair, two clock reads and one random int; ids are
formatted, times converted and tags checked only at export, off the request
path. The kwargs dict that carries a span's tags is kept as is, not copied.

One ``ContextVar`` holds the current span. asyncio copies the context into
every task (``create_task``, ``gather``, ``TaskGroup``) and ``asyncio.to_thread``
/ ``anyio.to_thread.run_sync`` copy it into worker threads, so a child finds its
parent with no explicit passing; :func:`bind` covers ``run_in_executor`` and
raw threads, which do not copy it.

Example:
    >>> import flowtracker as ft
    >>> with ft.span("outer", user="u1") as outer:
    ...     with ft.span("inner") as inner:
    ...         ft.add_tag("rows", 3)
    ...     inner.parent_id == outer.span_id
    True
"""

from __future__ import annotations

import contextvars
import functools
import sys
from collections.abc import Callable
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from . import _clock
from ._trace import TraceState
from ._tracker import _context_tracker, resolve_tracker

if TYPE_CHECKING:
    from ._tracker import Tracker

__all__ = (
    "Span",
    "add_event",
    "add_tag",
    "bind",
    "current_span",
    "current_trace_id",
    "span",
    "start_span",
)

_T = TypeVar("_T")

_current: ContextVar[Span | None] = ContextVar("flowtracker.current_span", default=None)
_get_current = _current.get
_get_context_tracker = _context_tracker.get

# Hot-path copies of the clock and id source (a global lookup beats a module
# attribute lookup); refreshed when ``flowtracker.testing`` swaps them.
_now = _clock.now_ns
_bits = _clock.random_bits


def _refresh_sources() -> None:
    global _now, _bits
    _now = _clock.now_ns
    _bits = _clock.random_bits


_clock.on_change(_refresh_sources)

#: Span statuses, as written in the output.
STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUS_CANCELLED = "cancelled"
STATUS_UNFINISHED = "unfinished"


class Span:
    """One timed operation: a name, tags, events, a status and its place in a trace.

    Create spans with :func:`span` (``with``/``async with``) or
    :func:`start_span`; a ``Span`` is itself a context manager.

    Example:
        >>> import flowtracker as ft
        >>> s = ft.start_span("manual", step=1)
        >>> s.set_tag("rows", 3)
        >>> s.finish(); s.finish()  # idempotent
        >>> s.status
        'ok'
    """

    # Few slots, and few writes per span: every write costs on the hot path.
    # What most spans never have (a non-ok status, an error, a kind, events,
    # dropped tags) lives in ``_extra``, a dict made on first use.
    __slots__ = (
        "_extra",
        "_parent",
        "_recording",
        "_state",
        "_tags",
        "_token",
        "end_ns",
        "name",
        "span_id",
        "start_ns",
    )

    span_id: int
    start_ns: int
    _parent: Span | None
    _recording: bool
    _token: contextvars.Token[Span | None] | None

    def __init__(self, name: str, tags: dict[str, Any] | None = None) -> None:
        self.name = name
        self._tags: dict[Any, Any] = {} if tags is None else tags
        self._state: TraceState | None = None
        self.end_ns: int | None = None
        self._extra: dict[str, Any] | None = None

    # -- lifecycle ---------------------------------------------------------
    #
    # __enter__ and __exit__ carry the common path inline (a child starts, a
    # block ends without an exception): a Python call costs 40-80 ns here, a
    # noticeable share of a span. The rarer paths go through _end/_end_with.

    def __enter__(self) -> Span:
        if self._state is None:
            parent = _get_current()
            if parent is None:
                _start_root(self, None, None, None, None, None)
            else:
                state = self._state = parent._state
                assert state is not None
                self._parent = parent
                self.span_id = _bits(64) or 1
                if parent._recording:
                    spans = state.spans
                    if len(spans) < state.tracker.max_spans_per_trace:
                        if not spans:  # first span since the last emission: a late one
                            spans = state.reopen()
                        spans.append(self)
                        self._recording = True
                    else:
                        state.dropped_spans += 1
                        state.tracker._spans_dropped += 1
                        self._recording = False
                    self.start_ns = _now()
                else:  # unsampled: ids and context only, no clock
                    self._recording = False
                    self.start_ns = 0
        self._token = _current.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            _current.reset(self._token)  # type: ignore[arg-type]
        except (ValueError, RuntimeError, TypeError, AttributeError):
            # Exited in another context than entered (e.g. another task), or
            # twice: restore the parent only where this span is still current.
            if _current.get() is self:
                _current.set(self._parent)
        # Dropping the token now frees it (and its reference to the previous
        # span) while it is young: fewer objects survive into older GC generations.
        self._token = None
        if exc is not None:
            self._end_with(exc)
        elif self.end_ns is None and self._state is not None:
            # The body of _close(), inlined: this is every span's way out.
            if self._recording:
                self.end_ns = _now()
                state = self._state
                ended = next(state.ended)
                if ended == len(state.spans):
                    state.ended_seen = ended
                    state.tracker._maybe_complete(state)
            else:
                self.end_ns = self.start_ns  # not recorded: no clock read

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def _start(self) -> None:
        """Starts the span (child of the current one) without making it current."""
        self.__enter__()
        _current.reset(self._token)  # type: ignore[arg-type]
        self._token = None

    def _end(self, status: str, error: BaseException | None) -> None:
        if self.end_ns is not None or self._state is None:
            return
        if status is not STATUS_OK:
            extra = self._extras()
            extra["status"] = status
            if error is not None:
                extra["error"] = error
        self._close()

    def _close(self) -> None:
        """Ends the span; the trace may be complete if this was its last open span."""
        if not self._recording:
            self.end_ns = self.start_ns  # unsampled (no clock) or over a limit
            return
        self.end_ns = _now()
        state = self._state
        assert state is not None
        ended = next(state.ended)
        if ended == len(state.spans):
            state.ended_seen = ended
            state.tracker._maybe_complete(state)

    def _end_with(self, exc: BaseException) -> None:
        # asyncio is looked up, not imported: no asyncio, no CancelledError,
        # and sync programs need not pay for importing it.
        asyncio = sys.modules.get("asyncio")
        if asyncio is not None and isinstance(exc, asyncio.CancelledError):
            self._end(STATUS_CANCELLED, None)
        elif isinstance(exc, GeneratorExit):  # a generator closed early: not a failure
            self._end(STATUS_OK, None)
        else:
            self._end(STATUS_ERROR, exc)

    def finish(self) -> None:
        """Ends the span with status ``ok``; a second call does nothing."""
        self._end(STATUS_OK, None)

    def _extras(self) -> dict[str, Any]:
        extra = self._extra
        if extra is None:
            extra = self._extra = {}
        return extra

    # -- data --------------------------------------------------------------

    def set_tag(self, key: str, value: Any) -> None:
        """Sets a tag; ignored once the span has ended.

        Over the tracker's ``max_tags_per_span`` a new key is not kept and is
        counted in the span's ``dropped_tags``.
        """
        tags = self._tags
        state = self._state
        if state is None:  # not started yet: kept
            tags[key] = value
            return
        if self.end_ns is not None or not self._recording:
            return
        if len(tags) >= state.tracker.max_tags_per_span and key not in tags:
            extra = self._extras()
            extra["dropped_tags"] = extra.get("dropped_tags", 0) + 1
            state.tracker._tags_dropped += 1
            return
        tags[key] = value

    def add_event(self, name: str, **attributes: Any) -> None:
        """Records a timestamped event (``name`` plus attributes) on this span."""
        state = self._state
        if self.end_ns is not None or (state is not None and not self._recording):
            return
        events: list[tuple[str, int, dict[str, Any]]] = self._extras().setdefault("events", [])
        if state is not None and len(events) >= state.tracker.max_events_per_span:
            state.tracker._events_dropped += 1
            return
        events.append((name, _now(), attributes))

    @property
    def status(self) -> str:
        """``ok``, ``error`` or ``cancelled`` (``ok`` while the span is open)."""
        extra = self._extra
        return STATUS_OK if extra is None else extra.get("status", STATUS_OK)

    @property
    def error(self) -> BaseException | None:
        """The exception that ended the span with status ``error``, else ``None``."""
        extra = self._extra
        return None if extra is None else extra.get("error")

    @property
    def kind(self) -> str:
        """``internal`` (default), ``server`` for request roots, ``client`` for outgoing calls."""
        extra = self._extra
        return "internal" if extra is None else extra.get("kind", "internal")

    @kind.setter
    def kind(self, value: str) -> None:
        self._extras()["kind"] = value

    @property
    def parent_id(self) -> int | None:
        """The parent's span id (an int), the remote caller's for a continued root, or None."""
        parent: Span | None = getattr(self, "_parent", None)
        if parent is not None:
            return parent.span_id
        state = self._state
        return None if state is None else state.remote_parent_id

    @property
    def dropped_tags(self) -> int:
        """Tags not kept because of ``max_tags_per_span``."""
        extra = self._extra
        return 0 if extra is None else extra.get("dropped_tags", 0)

    @property
    def tags(self) -> dict[Any, Any]:
        """The span's tags (a live dict; use :meth:`set_tag` to change it)."""
        return self._tags

    @property
    def events(self) -> list[tuple[str, int, dict[str, Any]]]:
        """The span's events as ``(name, monotonic_ns, attributes)`` tuples."""
        extra = self._extra
        return [] if extra is None else extra.get("events", [])

    @property
    def trace_id(self) -> str | None:
        """The trace id as 32 lowercase hex characters (``None`` before start)."""
        state = self._state
        return None if state is None else f"{state.trace_id:032x}"

    @property
    def span_id_hex(self) -> str:
        """The span id as 16 lowercase hex characters."""
        return f"{self.span_id:016x}"

    @property
    def sampled(self) -> bool:
        """Whether this span is recorded and will be exported."""
        return self._state is not None and self._recording

    @property
    def duration_ms(self) -> float | None:
        """Milliseconds from start to end (``None`` while open; 0 for a span that
        is not recorded, which reads no clock)."""
        if self.end_ns is None:
            return None
        return (self.end_ns - self.start_ns) / 1e6

    def __repr__(self) -> str:
        return f"<Span {self.name!r} status={self.status}>"


def _start_root(
    root: Span,
    tracker: Tracker | None,
    trace_id: int | None,
    parent_id: int | None,
    sampled: bool | None,
    tracestate: str | None,
) -> None:
    """Starts ``root`` as the first span of a new trace (or a remote continuation)."""
    if tracker is None:
        tracker = _get_context_tracker()  # resolve_tracker()'s first case, inlined
        if tracker is None or tracker._closed:
            tracker = resolve_tracker()
    if trace_id is None:
        trace_id = _bits(128) or 1
    recording = tracker._sample_root(trace_id, sampled) if sampled is not None or tracker._sampling else True
    if recording:
        now = _now()
        state = root._state = TraceState(tracker, trace_id, now)
        tracker._open_traces.add(state)
        state.spans.append(root)
    else:
        # An unsampled trace keeps only what propagation needs (ids, flags):
        # no span list, no counter, no clock reads.
        now = 0
        state = root._state = TraceState.__new__(TraceState)
        state.trace_id = trace_id
        state.tracker = tracker
        state.sampled = False
    if parent_id is not None:
        state.remote_parent_id = parent_id
    if tracestate is not None:
        state.tracestate = tracestate
    root._parent = None
    root.span_id = _bits(64) or 1
    root._recording = recording
    root.start_ns = now


def span(name: str, /, **tags: Any) -> Span:
    """A span for ``with`` / ``async with``; every keyword argument is a tag.

    The span starts when the block is entered and becomes the current span
    inside it. On an exception it ends with status ``error`` (or ``cancelled``
    for task cancellation) and the exception propagates unchanged.

    Example:
        >>> import flowtracker as ft
        >>> async def handler():
        ...     async with ft.span("FetchFromDB", db_system="postgres") as s:
        ...         s.set_tag("rows", 3)
    """
    return Span(name, tags)


def start_span(name: str, /, **tags: Any) -> Span:
    """Starts a span now, as a child of the current span, without making it current.

    For code that cannot use ``with``: call :meth:`Span.finish` when done
    (idempotent), or enter the returned span with ``with`` to make it current.

    Example:
        >>> import flowtracker as ft
        >>> s = ft.start_span("manual")
        >>> s.finish()
    """
    new = Span(name, tags)
    new._start()
    return new


def start_root_span(
    name: str,
    tags: dict[str, Any] | None = None,
    *,
    tracker: Tracker | None = None,
    trace_id: int | None = None,
    parent_id: int | None = None,
    sampled: bool | None = None,
    tracestate: str | None = None,
    kind: str = "internal",
) -> Span:
    """Starts a new trace's root span, ignoring the current span; for integrations.

    ``trace_id``/``parent_id`` continue a remote trace (W3C ``traceparent``);
    ``sampled`` carries the caller's sampled flag; ``tracestate`` is kept for
    pass-through on outgoing calls.
    """
    root = Span(name, tags)
    if kind != "internal":
        root._extra = {"kind": kind}
    _start_root(root, tracker, trace_id, parent_id, sampled, tracestate)
    return root


def current_span() -> Span | None:
    """The current span, or ``None`` outside any span.

    Example:
        >>> import flowtracker as ft
        >>> ft.current_span() is None
        True
    """
    return _get_current()


def current_trace_id() -> str | None:
    """The current trace id as 32 lowercase hex characters, or ``None``."""
    current = _get_current()
    if current is None or current._state is None:
        return None
    return f"{current._state.trace_id:032x}"


def add_tag(key: str, value: Any) -> None:
    """Tags the current span; does nothing outside a span.

    Example:
        >>> import flowtracker as ft
        >>> ft.add_tag("ignored", True)  # no span: a silent no-op
    """
    current = _get_current()
    if current is not None:
        current.set_tag(key, value)


def add_event(name: str, /, **attributes: Any) -> None:
    """Adds a timestamped event to the current span; does nothing outside a span."""
    current = _get_current()
    if current is not None:
        current.add_event(name, **attributes)


def bind(fn: Callable[..., _T]) -> Callable[..., _T]:
    """Binds ``fn`` to the current span, for places that do not copy the context.

    ``loop.run_in_executor`` and ``threading.Thread`` start with an empty
    context; spans opened inside a bound function become children of the span
    that was current when ``bind`` was called.

    Example:
        >>> import flowtracker as ft, threading
        >>> with ft.span("parent"):
        ...     worker = threading.Thread(target=ft.bind(lambda: ft.span("child").__enter__().finish()))
        ...     worker.start(); worker.join()
    """
    parent = _get_current()
    tracker_binding = _tracker_binding()

    @functools.wraps(fn)
    def bound(*args: Any, **kwargs: Any) -> _T:
        def run() -> _T:
            _current.set(parent)
            if tracker_binding is not None:
                tracker_binding[0].set(tracker_binding[1])
            return fn(*args, **kwargs)

        return contextvars.copy_context().run(run)

    return bound


def _silent_span() -> None:
    """Makes the current context's span a non-recording one (exporter tasks)."""
    state = TraceState.__new__(TraceState)
    state.trace_id = 0
    state.spans = []
    state.sampled = False
    silent = Span("flowtracker.silent")
    silent._state = state
    silent._parent = None
    silent.span_id = 0
    silent._recording = False
    silent.start_ns = 0
    _current.set(silent)


def _tracker_binding() -> tuple[ContextVar[Any], Any] | None:
    bound = _context_tracker.get()
    return None if bound is None else (_context_tracker, bound)
