"""Which watched loop's observer hears of span switches and ends on which thread.

The core has one switch observer for the whole process
(``flowtracker._core.set_switch_observer``), installed only while some loop
is watched. Each watched loop has its own observer (a
:class:`~._callbacks.CallbackTimer` on an asyncio loop, a
:class:`~._stalls.StallWatch` on uvloop), which checks the thread itself:
with one loop watched (the common case) it is the core's observer directly;
with several, a dispatcher forwards each call to the observer of the
calling thread's loop, if any. A span that ends on a thread that runs no
watched loop is marked so (:func:`mark_off_loop`): the loop's blocks never
stalled it. A root that ends on a watched loop marks its trace as watched
(:func:`mark_watched`: the trace's ``loop_monitor`` field).

Example:
    >>> import flowtracker as ft
    >>> from flowtracker._core import set_switch_observer
    >>> class Seen:
    ...     loop, thread = object(), None
    ...     def __init__(self): self.ended = []
    ...     def switched(self, span): pass
    ...     def closing(self, span): self.ended.append(span.name)
    >>> seen = Seen()
    >>> observe(seen)
    >>> with ft.span("work"):
    ...     pass
    >>> unobserve(seen)
    >>> seen.ended
    ['work']
"""

from __future__ import annotations

import threading
from typing import Protocol

from .._core import Span, set_switch_observer

__all__ = ("LoopObserver", "mark_off_loop", "mark_watched", "observe", "observe_thread", "unobserve")


class LoopObserver(Protocol):
    """A watched loop's observer of span switches and ends (a ``SwitchObserver`` with a loop)."""

    #: The loop's thread id, once known.
    thread: int | None

    @property
    def loop(self) -> object:
        """The loop it watches (any hashable stand-in will do: it is only a key)."""
        ...

    def switched(self, span: Span | None) -> None: ...

    def closing(self, span: Span) -> int | None: ...


# loop -> its observer, and loop thread id -> its observer. Written under _lock,
# read lock-free by the dispatcher (dict reads are atomic under the GIL).
_by_loop: dict[object, LoopObserver] = {}
_by_thread: dict[int, LoopObserver] = {}
_lock = threading.Lock()
_get_ident = threading.get_ident


class _Dispatch:
    """The switch observer while several loops are watched: forwards to the thread's observer, if any."""

    __slots__ = ()

    def switched(self, span: Span | None) -> None:
        observer = _by_thread.get(_get_ident())
        if observer is not None:
            observer.switched(span)

    def closing(self, span: Span) -> int | None:
        observer = _by_thread.get(_get_ident())
        if observer is not None:
            return observer.closing(span)
        mark_off_loop(span)
        return None


def mark_off_loop(span: Span) -> None:
    """``span`` ends on a thread that runs no watched loop: no block of a watched loop stalls it.

    The one writer of ``SpanExtras.off_loop``. Spans in worker threads are
    few; a loop's own spans never come here.
    """
    if span.recording:
        (span.extras or span.ensure_extras()).off_loop = True


def mark_watched(root: Span, mode: str) -> None:
    """The trace ``root`` carries ran on a watched loop: ``mode`` is how it was watched.

    ``"full"`` (busy time and blocks) or ``"blocks"`` (blocks only): the
    trace's ``loop_monitor`` field. The one writer of ``SpanExtras.loop_monitor``,
    which a root carries for its trace.
    """
    (root.extras or root.ensure_extras()).loop_monitor = mode


def _install() -> None:
    """Installs the core's switch observer for the observers registered now (under ``_lock``)."""
    observers = list(_by_loop.values())
    if not observers:
        set_switch_observer(None)
    elif len(observers) == 1:
        set_switch_observer(observers[0])
    else:
        set_switch_observer(_Dispatch())


def observe(observer: LoopObserver) -> None:
    """Starts telling ``observer`` of span switches and ends (those on its loop's thread are its)."""
    with _lock:
        _by_loop[observer.loop] = observer
        if observer.thread is not None:
            _by_thread[observer.thread] = observer
        _install()


def observe_thread(observer: LoopObserver, thread: int) -> None:
    """``observer``'s loop runs on ``thread``: the dispatcher forwards that thread's calls to it."""
    with _lock:
        observer.thread = thread
        if _by_loop.get(observer.loop) is observer:
            _by_thread[thread] = observer


def unobserve(observer: LoopObserver) -> None:
    """Stops telling ``observer``; with none left, the core's span methods are the plain ones again."""
    with _lock:
        if _by_loop.get(observer.loop) is observer:
            del _by_loop[observer.loop]
        if observer.thread is not None and _by_thread.get(observer.thread) is observer:
            del _by_thread[observer.thread]
        _install()
