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
import itertools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

from . import clock
from .extras import STATUS_CANCELLED, STATUS_ERROR, STATUS_OK, STATUS_UNFINISHED, SpanExtras
from .patches import Patch, patch_attribute
from .sink import BOUND_SINK, default_sink
from .trace import TraceRoot, reopen

if TYPE_CHECKING:
    from .sink import TraceSink

__all__ = (
    "CURRENT",
    "STATUS_CANCELLED",
    "STATUS_ERROR",
    "STATUS_OK",
    "STATUS_UNFINISHED",
    "Span",
    "SpanContext",
    "SwitchObserver",
    "activate",
    "add_event",
    "add_tag",
    "bind",
    "current_span",
    "current_trace_id",
    "deactivate",
    "set_switch_observer",
    "span",
    "start_child",
    "start_root_span",
    "start_span",
    "suppressed",
)

_T = TypeVar("_T")

#: The current span. Set and reset only through ``Span.__enter__``/``__exit__``,
#: :func:`activate`/:func:`deactivate` and :func:`suppressed`.
CURRENT: ContextVar[Span | None] = ContextVar("flowtracker.current_span", default=None)
_get_current = CURRENT.get
_set_current = CURRENT.set
_reset_current = CURRENT.reset
_bound_sink = BOUND_SINK.get
_count = itertools.count

# Hot-path copies of the clock and id source (a global lookup beats a module
# attribute lookup); refreshed when ``flowtracker.testing`` swaps them.
_now = clock.now_ns
_bits = clock.random_bits


def _refresh_sources() -> None:
    global _now, _bits
    _now = clock.now_ns
    _bits = clock.random_bits


clock.on_change(_refresh_sources)

#: Passed as ``exc_type`` by :meth:`Span.end`: end the span, leave the context alone.
_END_ONLY: Any = object()


class SpanContext(NamedTuple):
    """A span's identity for propagation (W3C ``traceparent``/``tracestate``).

    Example:
        >>> import flowtracker as ft
        >>> with ft.span("call") as s:
        ...     context = s.span_context()
        >>> context.span_id == s.span_id and context.sampled
        True
    """

    trace_id: int
    span_id: int
    sampled: bool
    #: The W3C Level 2 ``random`` flag the trace came in with.
    random: bool
    #: The incoming ``tracestate``, passed on to outgoing calls.
    tracestate: str | None


class Span(TraceRoot):
    """One timed operation: a name, tags, events, a status and its place in a trace.

    Create spans with :func:`span` (``with``/``async with``) or
    :func:`start_span`; a ``Span`` is itself a context manager.

    Attributes (read them; change a span through its methods):
        name: The span's name (the HTTP middlewares rename a root once routed).
        span_id: A 64-bit int (:attr:`span_id_hex` for the hex form); 0 before start.
        start_ns / end_ns: Monotonic clock readings (``end_ns`` is ``None`` while open).
        tags: The tags dict (:meth:`set_tag` applies the per-span limit).
        parent: The parent span in this process, or ``None``.
        root: The root span of this span's trace, which carries the trace
            (see :class:`~flowtracker._core.trace.TraceRoot`); ``None`` on a
            root itself (``span.root or span`` is the trace's root either way).
        recording: Whether the span is recorded (False when unsampled, over a limit,
            or emitted unfinished).
        extras: What most spans never have (a non-ok status, an error, a kind,
            events, dropped tags, event-loop time; on a root, what its trace
            rarely has), as a :class:`~flowtracker._core.extras.SpanExtras`, or ``None``.

    Example:
        >>> import flowtracker as ft
        >>> s = ft.start_span("manual", step=1)
        >>> s.set_tag("rows", 3)
        >>> s.finish(); s.finish()  # idempotent
        >>> s.status
        'ok'
    """

    # Few slots, and few writes per span: every write costs on the hot path.
    # A root also fills its base's slots (TraceRoot): the trace it carries.
    __slots__ = (
        "_token",
        "end_ns",
        "extras",
        "name",
        "parent",
        "recording",
        "root",
        "span_id",
        "start_ns",
        "tags",
    )

    start_ns: int
    parent: Span | None
    root: Span | None
    recording: bool
    _token: contextvars.Token[Span | None] | None

    def __init__(self, name: str, /, **tags: Any) -> None:
        # ``ft.span`` is this class: ``ft.span("db", rows=3)`` builds the span in
        # one call, and the keyword-arguments dict becomes its tags, not copied.
        self.name = name
        self.tags: dict[Any, Any] = tags
        self.span_id = 0  # 0 until started: every started span has another id
        self.end_ns: int | None = None
        self.extras: SpanExtras | None = None

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> Span:
        # Starting a child lives here only (start_span() and start_child() come
        # through here too): it is most spans' way in, and a call costs 40-80 ns.
        if not self.span_id:
            parent = _get_current()
            if parent is None:
                _start_root(self, None, None, None, None)
            else:
                root = self.root = parent.root or parent
                self.parent = parent
                self.span_id = _bits(64) or 1
                spans = root.spans
                # A parent that does not record in a recorded trace (emitted
                # unfinished by the age limit, inherited across fork(), over
                # the span limit) still has its children recorded: they go
                # out as a follow-up, or are counted by the limit below.
                if spans is not None:
                    # The clock first: a span in the list has its start (the age limit reads it).
                    self.start_ns = _now()
                    limits = root.sink.limits
                    if len(spans) < limits.max_spans_per_trace:
                        if spans:
                            spans.append(self)
                        else:  # the first span since the trace was claimed: a late one
                            reopen(root, self)
                        self.recording = True
                    else:
                        (root.extras or root.ensure_extras()).dropped_spans += 1
                        limits.spans_dropped += 1
                        self.recording = False
                else:  # unsampled: ids and context only, no clock
                    self.recording = False
                    self.start_ns = 0
        self._token = _set_current(self)
        return self

    def _start(self) -> None:
        """Starts the span (a child of the current one, else a root) without making it current."""
        self.__enter__()
        _reset_current(self._token)  # type: ignore[arg-type]
        self._token = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The one place a span ends: leaving its block, and end()/finish(),
        # which pass _END_ONLY to skip the context reset and, in ``tb``, the
        # explicit end time or None (a block left without an exception has no
        # traceback). Ending here rather than in a helper saves a call on every
        # span's way out.
        if exc_type is not _END_ONLY:
            try:
                _reset_current(self._token)  # type: ignore[arg-type]
            except (ValueError, RuntimeError, TypeError, AttributeError):
                _restore_parent(self)  # left in another context than entered, or twice
            # Dropping the token now frees it (and its reference to the previous
            # span) while it is young: fewer objects survive into older GC generations.
            self._token = None
            if exc is not None:
                self.end_with_exception(exc)
                return
        if self.end_ns is not None or not self.span_id:
            return
        if not self.recording:
            self.end_ns = self.start_ns  # unsampled (no clock) or over a limit
            return
        self.end_ns = _now() if tb is None else tb  # type: ignore[assignment]
        root = self.root or self
        # The trace may be complete if this was its last open span: the sink
        # decides (see flowtracker._core.trace).
        ended = next(root.ended)
        if ended == len(root.spans):  # type: ignore[arg-type]
            root.ended_seen = ended
            root.sink.span_ended(root)

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def end(
        self, status: str = STATUS_OK, error: BaseException | None = None, *, end_ns: int | None = None
    ) -> None:
        """Ends the span with ``status`` (and ``error`` for ``error``); a second call does nothing.

        For integrations that end spans on someone's behalf; code that ends
        its own span calls :meth:`finish` or leaves a ``with`` block.
        ``end_ns``: the end as a monotonic reading (the clock's ``now_ns``)
        instead of now, never before the start (the OpenTelemetry bridge's
        ``end(end_time)``).
        """
        if self.end_ns is not None or not self.span_id:
            return
        if status != STATUS_OK:
            extras = self.extras or self.ensure_extras()
            extras.status = status
            if error is not None:
                extras.error = error
        if end_ns is not None and end_ns < self.start_ns:
            end_ns = self.start_ns
        self.__exit__(_END_ONLY, None, end_ns)  # type: ignore[arg-type]

    def end_with_exception(self, exc: BaseException) -> None:
        """Ends the span for an exception: ``cancelled`` for task cancellation,
        ``ok`` for a generator closed early, ``error`` otherwise."""
        # asyncio is looked up, not imported: a sync program need not import it.
        asyncio = sys.modules.get("asyncio")
        if asyncio is not None and isinstance(exc, asyncio.CancelledError):
            self.end(STATUS_CANCELLED)
        elif isinstance(exc, GeneratorExit):
            self.end(STATUS_OK)
        else:
            self.end(STATUS_ERROR, exc)

    def finish(self) -> None:
        """Ends the span with status ``ok``; a second call does nothing."""
        # Straight to where spans end (ok needs nothing of end()): one call fewer.
        self.__exit__(_END_ONLY, None, None)

    def ensure_extras(self) -> SpanExtras:
        """The span's :class:`~flowtracker._core.extras.SpanExtras`, made on first use.

        For the layers that attach extras to spans (the event-loop monitor);
        what each field holds, and who writes it, is declared there.
        """
        extras = self.extras
        if extras is None:
            extras = self.extras = SpanExtras()
        return extras

    # -- data --------------------------------------------------------------

    def set_tag(self, key: str, value: Any) -> None:
        """Sets a tag; ignored once the span has ended.

        Over the tracker's ``max_tags_per_span`` a new key is not kept and is
        counted in the span's ``dropped_tags``.
        """
        tags = self.tags
        if not self.span_id:  # not started yet: kept
            tags[key] = value
            return
        if self.end_ns is not None or not self.recording:
            return
        if len(tags) >= (self.root or self).sink.limits.max_tags_per_span and key not in tags:
            (self.extras or self.ensure_extras()).dropped_tags += 1
            (self.root or self).sink.limits.tags_dropped += 1
            return
        tags[key] = value

    def add_event(self, name: str, **attributes: Any) -> None:
        """Records a timestamped event (``name`` plus attributes) on this span."""
        self.record_event(name, attributes)

    def record_event(
        self, name: str, attributes: dict[str, Any], at_ns: int | None = None, *, after_end: bool = False
    ) -> bool:
        """Records an event: the one way events reach a span, with the one limit check.

        Over the tracker's ``max_events_per_span`` the event is not kept and
        is counted (``events_dropped``). Events of an open span are kept; an
        ended or unrecorded span's are ignored.

        Args:
            name: The event's name.
            attributes: Its attributes (kept as given, not copied).
            at_ns: When it happened, as a monotonic reading (the clock's
                ``now_ns``); default now.
            after_end: Keep it although the span has ended, for what is learnt
                only as a span's callback or trace ends (the event-loop
                monitor's blocks), before the trace is handed on.

        Returns:
            Whether the event was kept.

        Example:
            >>> import flowtracker as ft
            >>> with ft.span("job") as job:
            ...     job.record_event("retry", {"attempt": 2}, at_ns=job.start_ns)
            True
            >>> job.record_event("late", {})
            False
        """
        started = self.span_id != 0
        if started and (not self.recording or (self.end_ns is not None and not after_end)):
            return False
        extras = self.extras or self.ensure_extras()
        events = extras.events
        if events is None:
            events = extras.events = []
        elif started:
            limits = (self.root or self).sink.limits
            if len(events) >= limits.max_events_per_span:
                limits.events_dropped += 1
                return False
        events.append((name, _now() if at_ns is None else at_ns, attributes))
        return True

    def span_context(self) -> SpanContext | None:
        """This span's identity for propagation; ``None`` before start and for a
        silent span (an exporter's own work), which propagates nothing."""
        if not self.span_id:
            return None
        root = self.root or self
        trace_id = root.trace_id_int
        if not trace_id:
            return None
        sampled = root.spans is not None
        extras = root.extras  # the root carries what the trace rarely has
        if extras is None:
            return SpanContext(trace_id, self.span_id, sampled, False, None)
        return SpanContext(trace_id, self.span_id, sampled, extras.random_flag, extras.tracestate)

    @property
    def status(self) -> str:
        """``ok``, ``error`` or ``cancelled`` (``ok`` while the span is open)."""
        extras = self.extras
        return STATUS_OK if extras is None else extras.status

    @property
    def error(self) -> BaseException | None:
        """The exception that ended the span with status ``error``, else ``None``."""
        extras = self.extras
        return None if extras is None else extras.error

    @property
    def kind(self) -> str:
        """``internal`` (default), ``server`` for request roots, ``client`` for outgoing calls."""
        extras = self.extras
        return "internal" if extras is None else extras.kind

    @kind.setter
    def kind(self, value: str) -> None:
        (self.extras or self.ensure_extras()).kind = value

    @property
    def parent_id(self) -> int | None:
        """The parent's span id (an int), the remote caller's for a continued root, or None."""
        parent: Span | None = getattr(self, "parent", None)
        if parent is not None:
            return parent.span_id
        extras = self.extras
        return None if extras is None else extras.remote_parent_id

    @property
    def dropped_tags(self) -> int:
        """Tags not kept because of ``max_tags_per_span``."""
        extras = self.extras
        return 0 if extras is None else extras.dropped_tags

    @property
    def events(self) -> list[tuple[str, int, dict[str, Any]]]:
        """The span's events as ``(name, monotonic_ns, attributes)`` tuples."""
        extras = self.extras
        events = None if extras is None else extras.events
        return [] if events is None else events

    @property
    def trace_id(self) -> str | None:
        """The trace id as 32 lowercase hex characters (``None`` before start)."""
        if not self.span_id:
            return None
        return f"{(self.root or self).trace_id_int:032x}"

    @property
    def span_id_hex(self) -> str:
        """The span id as 16 lowercase hex characters."""
        return f"{self.span_id:016x}"

    @property
    def sampled(self) -> bool:
        """Whether this span is recorded and will be exported."""
        return self.span_id != 0 and self.recording

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
    root: Span, sink: TraceSink | None, trace_id: int | None, sampled: bool | None, start_ns: int | None
) -> None:
    """Starts ``root`` as the first span of a new trace, which it carries (see TraceRoot).

    ``sink``, ``trace_id``, ``sampled`` and ``start_ns`` ``None``: resolved,
    random, the sink's decision and now (see :func:`start_root_span`).
    """
    if sink is None:  # the one bound to this context if open (see flowtracker._core.sink), else the default
        sink = _bound_sink()
        if sink is None or sink.closed:
            sink = default_sink()
    if trace_id is None:
        trace_id = _bits(128) or 1
    root.trace_id_int = trace_id
    root.root = None
    root.parent = None
    root.span_id = _bits(64) or 1
    if (sampled is None and not sink.sampling) or sink.sample(trace_id, sampled):
        root.start_ns = _now() if start_ns is None else start_ns
        root.sink = sink
        root.spans = [root]
        root.ended = _count(1)
        root.recording = True
        sink.open_traces.add(root)  # last: the age sweep (maybe in another thread) reads the above
    else:  # unsampled: ids for propagation only, no span list, no end count, no clock
        root.spans = None
        root.recording = False
        root.start_ns = 0


def _restore_parent(span: Span) -> None:
    """The current span was set in another context than it is reset in (a span
    left in another task, or twice): restore the parent only where ``span``
    is still current, and never raise."""
    if _get_current() is span:
        _set_current(getattr(span, "parent", None))


#: A span for ``with`` / ``async with``; every keyword argument is a tag.
#:
#: The span starts when the block is entered and becomes the current span
#: inside it. On an exception it ends with status ``error`` (or ``cancelled``
#: for task cancellation) and the exception propagates unchanged. It is the
#: :class:`Span` class itself, so creating one is one call.
#:
#: Example: ``async with ft.span("FetchFromDB", db_system="postgres") as s: s.set_tag("rows", 3)``
span = Span


def start_span(name: str, /, **tags: Any) -> Span:
    """Starts a span now, as a child of the current span, without making it current.

    For code that cannot use ``with``: call :meth:`Span.finish` when done
    (idempotent), or enter the returned span with ``with`` to make it current.

    Example:
        >>> import flowtracker as ft
        >>> s = ft.start_span("manual")
        >>> s.finish()
    """
    new = Span(name)
    if tags:
        new.tags = tags  # this call's own keyword dict: kept, not copied a second time
    new._start()
    return new


def start_child(
    name: str, tags: dict[str, Any] | None = None, *, kind: str = "internal", start_ns: int | None = None
) -> Span | None:
    """Starts a child of the current span, not made current; ``None`` outside a traced span.

    For instrumentations: a call made with no current span (or inside an
    exporter's own silent work) starts no trace. ``start_ns``: the start as a
    monotonic reading (the clock's ``now_ns``) instead of now (the
    OpenTelemetry bridge's ``start_time``).

    Example:
        >>> import flowtracker as ft
        >>> from flowtracker._core import start_child
        >>> start_child("SELECT users", kind="client") is None  # no current span
        True
    """
    parent = _get_current()
    if parent is None or not (parent.root or parent).trace_id_int:  # none, or silent
        return None
    child = Span(name)
    if tags:
        child.tags = tags  # the caller's fresh dict: kept, not copied
    if kind != "internal":
        child.kind = kind
    child._start()
    if start_ns is not None and child.recording:
        child.start_ns = start_ns  # before anyone else sees the span
    return child


def start_root_span(
    name: str,
    tags: dict[str, Any] | None = None,
    *,
    tracker: TraceSink | None = None,
    trace_id: int | None = None,
    parent_id: int | None = None,
    sampled: bool | None = None,
    tracestate: str | None = None,
    random_flag: bool = False,
    kind: str = "internal",
    start_ns: int | None = None,
) -> Span:
    """Starts a new trace's root span, ignoring the current span; for integrations.

    ``trace_id``/``parent_id`` continue a remote trace (W3C ``traceparent``);
    ``sampled`` carries the caller's sampled flag and ``random_flag`` its
    Level 2 random flag; ``tracestate`` is kept for pass-through on outgoing calls;
    ``start_ns`` is the start as a monotonic reading instead of now.
    The root is not made current: enter it with ``with``, or :func:`activate` it.

    Example:
        >>> from flowtracker._core import clock
        >>> root = start_root_span("GET /", kind="server", start_ns=clock.now_ns() - 5_000_000)
        >>> root.finish()
        >>> root.kind, root.duration_ms >= 5
        ('server', True)
    """
    root = Span(name)
    if tags:
        root.tags = tags  # the caller's fresh dict: kept, not copied
    if kind != "internal":
        root.kind = kind
    if parent_id is not None or tracestate is not None or random_flag:  # what the trace rarely has
        extras = root.extras or root.ensure_extras()
        extras.remote_parent_id = parent_id
        extras.tracestate = tracestate
        extras.random_flag = random_flag
    _start_root(root, tracker, trace_id, sampled, start_ns)
    return root


def activate(span: Span | None) -> contextvars.Token[Span | None]:
    """Makes ``span`` current (``None``: no span) until :func:`deactivate` with the token.

    For integrations that cannot use ``with`` (a middleware around a handler).

    Example:
        >>> import flowtracker as ft
        >>> root = ft.start_root_span("GET /")
        >>> token = activate(root)
        >>> ft.current_span() is root
        True
        >>> deactivate(root, token); root.finish()
    """
    token = _set_current(span)
    if _observer is not None:
        _observer.switched(span)
    return token


def deactivate(span: Span | None, token: contextvars.Token[Span | None]) -> None:
    """Undoes :func:`activate`; from another context, restores the parent where ``span``
    is still current (never raises)."""
    try:
        _reset_current(token)
    except (ValueError, RuntimeError):
        if span is not None:
            _restore_parent(span)
    if _observer is not None:
        _observer.switched(_get_current())


@contextmanager
def suppressed() -> Iterator[None]:
    """Spans opened inside the block record nothing and propagate nothing.

    For work that must not trace itself: exporters' own calls, excluded paths.

    Example:
        >>> import flowtracker as ft
        >>> with suppressed():
        ...     with ft.span("not recorded") as s:
        ...         pass
        >>> s.sampled
        False
    """
    token = _set_current(silent_span())
    try:
        yield
    finally:
        deactivate(None, token)


def silent_span() -> Span:
    """A non-recording span whose children record nothing (trace id 0)."""
    silent = Span("flowtracker.silent")
    silent.trace_id_int = 0
    silent.spans = None
    silent.root = None
    silent.parent = None
    silent.span_id = 1  # started (never propagated: its trace id is 0)
    silent.recording = False
    silent.start_ns = 0
    return silent


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
    if current is None:
        return None
    return current.trace_id


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
    that was current when ``bind`` was called (and report to the same tracker).

    Example:
        >>> import flowtracker as ft, threading
        >>> with ft.span("parent"):
        ...     worker = threading.Thread(target=ft.bind(lambda: ft.span("child").__enter__().finish()))
        ...     worker.start(); worker.join()
    """
    parent = _get_current()
    sink = BOUND_SINK.get()

    @functools.wraps(fn)
    def bound(*args: Any, **kwargs: Any) -> _T:
        def run() -> _T:
            _set_current(parent)
            if sink is not None:
                BOUND_SINK.set(sink)
            return fn(*args, **kwargs)

        return contextvars.copy_context().run(run)

    return bound


# -- switch observer: who runs on this thread now (the event-loop monitor) ----


class SwitchObserver(Protocol):
    """Told when a span is made current by hand, and before a span ends.

    Both calls happen on the thread where the change happens; the observer
    decides whether that thread interests it. Entering a span with ``with``
    is not reported: the observer learns a span's nesting when it ends (its
    ``start_ns`` and ``parent``), which keeps the way in at plain speed. See
    :func:`set_switch_observer`.
    """

    def switched(self, span: Span | None) -> None:
        """Code on this thread now runs for ``span`` (``None``: no span).

        Called after :func:`activate` and :func:`deactivate`.
        """
        ...

    def closing(self, span: Span) -> int | None:
        """``span`` is about to end (``end_ns`` still ``None``): the last moment
        to write into its ``extras`` before its trace may be assembled.

        Returns the clock reading the observer accounted the span's time up
        to, which becomes the span's end (unless an explicit end time was
        given), or ``None``: the span reads the clock itself.
        """
        ...


_observer: SwitchObserver | None = None
_plain_exit = Span.__exit__
_exit_patch: Patch | None = None


def set_switch_observer(observer: SwitchObserver | None) -> None:
    """Installs ``observer`` (``None``: removes it); for the event-loop monitor.

    While an observer is set, ``Span.__exit__`` (where every span ends,
    :meth:`Span.end` included) is swapped for a variant that tells it first,
    and :func:`activate` / :func:`deactivate` tell it too. ``Span.__enter__``
    is never swapped. With none set (the default), the span methods are the
    plain ones: the hot path pays nothing, not even a check.

    Example:
        >>> import flowtracker as ft
        >>> class Seen:
        ...     def __init__(self): self.names = []
        ...     def switched(self, span): self.names.append(span and span.name)
        ...     def closing(self, span): self.names.append("end " + span.name)
        >>> seen = Seen()
        >>> set_switch_observer(seen)
        >>> with ft.span("work"):
        ...     token = activate(None)
        ...     deactivate(None, token)
        >>> set_switch_observer(None)
        >>> seen.names
        [None, 'work', 'end work']
    """
    global _observer, _exit_patch
    _observer = observer
    if observer is None:
        if _exit_patch is not None:
            _exit_patch.undo()
            _exit_patch = None
        return
    closing = observer.closing

    def __exit__(
        self: Span,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # With an exception the span ends through end(), which comes back here
        # with exc None: telling the observer only then tells it once.
        if exc is None and self.end_ns is None and self.span_id:
            now = closing(self)
            if tb is None and now is not None:
                # The span ends at the very reading the observer split its time
                # at (``tb`` carries an end time when exc is None): a second
                # read, even a preempted microsecond later, would leave the
                # parent's busy time and the children's durations disagreeing.
                _plain_exit(self, exc_type, exc, now)  # type: ignore[arg-type]
                return
        _plain_exit(self, exc_type, exc, tb)

    __exit__.__doc__ = _plain_exit.__doc__
    # One step from one observer to the next (no moment with the plain exit).
    _exit_patch = patch_attribute(
        Span,
        "__exit__",
        __exit__,
        reason="while a switch observer (the event-loop monitor) is set: it is told before a span ends",
    )
