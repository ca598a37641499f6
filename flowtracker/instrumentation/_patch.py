"""The one way an instrumentation changes its library, and takes the change back exactly.

Every instrumentation (httpx, asyncpg, redis, SQLAlchemy) is made of pieces
from here:

* :func:`sync_wrapper` / :func:`async_wrapper` turn two small functions,
  ``start(self, args, kwargs) -> Span | None`` and ``end(span, result)``, into
  a method wrapper that holds the rules every instrumented call follows: with
  no current span the original runs untouched (no trace is started); a
  failure in ``start`` or ``end`` is counted and logged once
  (:mod:`._safety`) and the call goes on; the original is called exactly once
  and its result or exception reaches the caller unchanged, an exception
  ending the span first (``cancelled`` for task cancellation). With
  ``current=True`` the span is current during the call, so the calls the
  method makes itself become its children.
* :class:`Patches` sets the wrappers on the library's classes
  (:meth:`Patches.wrap`), or adds the instrumentation's listeners through
  the library's own hooks (:meth:`Patches.hook`, SQLAlchemy's events), and
  takes every change back (:meth:`Patches.restore`), all through
  flowtracker's patch registry (:mod:`flowtracker._core.patches`), each with
  the instrumentation's reason.

Example:
    >>> import flowtracker as ft
    >>> from flowtracker._core import start_child
    >>> class Client:
    ...     def get(self, key):
    ...         return key
    >>> own = Client.__dict__["get"]
    >>> start = lambda self, args, kwargs: start_child(f"GET {args[0]}", kind="client")
    >>> patches = Patches("docs", "a client span per get")
    >>> patches.wrap(Client, "get", sync_wrapper("docs", start))
    >>> with ft.span("job"):
    ...     Client().get("user:1")
    'user:1'
    >>> patches.restore()
    >>> Client.__dict__["get"] is own
    True
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from .._core import Span, activate, current_span, deactivate
from .._core.patches import Patch, patch_attribute, patch_hook
from ._safety import report_failure

__all__ = ("Patches", "async_wrapper", "finish", "sync_wrapper")

#: ``start(self, args, kwargs)``: the span of a call (called only under a current span).
Start = Callable[[Any, tuple[Any, ...], dict[str, Any]], "Span | None"]
#: ``end(span, result)``: ends the span of a call that returned ``result``.
End = Callable[[Span, Any], None]
Method = Callable[..., Any]


def finish(span: Span, result: Any) -> None:
    """The default ``end``: the call returned, so the span is ``ok``."""
    span.finish()


def _start(
    library: str, start: Start, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Span | None:
    try:
        return start(instance, args, kwargs)
    except Exception as exc:
        report_failure(library, exc)
        return None


def _end(library: str, end: End, span: Span, result: Any) -> None:
    try:
        end(span, result)
    except Exception as exc:
        report_failure(library, exc)


def _fail(library: str, span: Span, error: BaseException) -> None:
    try:
        span.end_with_exception(error)
    except Exception as exc:
        report_failure(library, exc)


def sync_wrapper(library: str, start: Start, end: End = finish) -> Callable[[Method], Method]:
    """A maker of wrappers for a plain method (see the module docstring)."""

    def make(original: Method) -> Method:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            if current_span() is None:  # not traced: nothing is built
                return original(self, *args, **kwargs)
            span = _start(library, start, self, args, kwargs)
            if span is None:
                return original(self, *args, **kwargs)
            try:
                result = original(self, *args, **kwargs)
            except BaseException as error:
                _fail(library, span, error)
                raise
            _end(library, end, span, result)
            return result

        return wrapper

    return make


def async_wrapper(
    library: str, start: Start, end: End = finish, *, current: bool = False
) -> Callable[[Method], Method]:
    """A maker of wrappers for an ``async def`` method (see the module docstring).

    ``current``: the span is current during the call, for a method that makes
    instrumented calls of its own (asyncpg's ``copy_to_table`` quotes its
    options with a ``fetchval``): those become its children.
    """

    def make(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            if current_span() is None:
                return await original(self, *args, **kwargs)
            span = _start(library, start, self, args, kwargs)
            if span is None:
                return await original(self, *args, **kwargs)
            token = activate(span) if current else None
            try:
                result = await original(self, *args, **kwargs)
            except BaseException as error:  # CancelledError too: the span ends `cancelled`
                _fail(library, span, error)
                raise
            finally:
                if token is not None:
                    deactivate(span, token)
            _end(library, end, span, result)
            return result

        return wrapper

    return make


class Patches:
    """The methods one instrumentation replaced, with the originals to restore.

    Not thread-safe by itself: :func:`flowtracker.instrument` calls
    ``install``/``uninstall`` under its lock.

    Args:
        library: The instrumented library (``"httpx"``).
        reason: What its patches do, for the patch registry (``"a client span per request"``).
    """

    __slots__ = ("_applied", "library", "reason")

    def __init__(self, library: str, reason: str) -> None:
        self.library = library
        self.reason = reason
        self._applied: list[Patch] = []

    @property
    def active(self) -> bool:
        """Whether any wrapper is in place."""
        return bool(self._applied)

    def wrap(self, owner: type, name: str, make: Callable[[Any], Any]) -> None:
        """Replaces ``owner.name`` (defined on ``owner`` itself) by ``make(original)``.

        The wrapper gets the original's name, docstring and ``__wrapped__``.

        Raises:
            KeyError: ``owner`` defines no ``name`` of its own (a library
                release moved it); nothing is changed.
        """
        # The class's own attribute, never an inherited one: restoring must
        # put back exactly what was there.
        original = owner.__dict__[name]
        wrapper = functools.update_wrapper(make(original), original)
        self._applied.append(patch_attribute(owner, name, wrapper, reason=self._reason()))

    def hook(self, target: str, install: Callable[[], object], remove: Callable[[], object]) -> None:
        """Makes a change through the library's own API (``install()``, now); ``remove()`` takes it back.

        ``target`` names it (``sqlalchemy.engine.Engine.before_cursor_execute``).
        """
        self._applied.append(patch_hook(target, install, remove, reason=self._reason()))

    def _reason(self) -> str:
        return f"ft.instrument({self.library!r}): {self.reason}"

    def restore(self) -> None:
        """Puts every original back, last wrapped first; a second call does nothing.

        A method another tool wrapped after flowtracker keeps that wrapper
        (the registry logs it): putting the original back would remove it too.
        """
        while self._applied:
            self._applied.pop().undo()
