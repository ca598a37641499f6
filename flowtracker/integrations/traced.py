"""``@traced``: a span around every call of a function.

Works on sync and async functions, generators and async generators. For a
generator the span covers the whole iteration and ends when it is exhausted,
fails, or is closed early; the span is current only while the generator's own
code runs, never in the consumer between two items.

Example:
    >>> import flowtracker as ft
    >>> @ft.traced
    ... def load(uid):
    ...     return {"id": uid}
    >>> @ft.traced("db.query", db_system="postgres")
    ... async def query(sql):
    ...     return []
    >>> load(1)
    {'id': 1}
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any, ParamSpec, TypeVar, overload

from .._core import Span, activate, deactivate
from .._core.span import start_span

_P = ParamSpec("_P")
_R = TypeVar("_R")


@overload
def traced(fn: Callable[_P, _R], /) -> Callable[_P, _R]: ...


@overload
def traced(name: str | None = None, /, **tags: Any) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]: ...


def traced(name: Any = None, /, **tags: Any) -> Any:
    """Wraps a function so each call runs in a span.

    Use bare (``@traced``: the span is named after the function's qualified
    name) or called (``@traced("name", **tags)``).

    Example:
        >>> import flowtracker as ft
        >>> @ft.traced
        ... async def load_user(uid): ...
    """
    if callable(name):
        return _wrap(name, None, {})
    if name is not None and not isinstance(name, str):
        raise TypeError(f"@traced takes a span name (str), got {type(name).__name__}")

    def decorate(fn: Callable[_P, _R]) -> Callable[_P, _R]:
        wrapped: Callable[_P, _R] = _wrap(fn, name, tags)
        return wrapped

    return decorate


def _wrap(fn: Callable[..., Any], name: str | None, tags: dict[str, Any]) -> Any:
    # The qualified name, without the "<locals>." of nested functions.
    span_name = name or (getattr(fn, "__qualname__", None) or repr(fn)).replace("<locals>.", "")
    has_tags = bool(tags)

    def new_span() -> Span:
        return Span(span_name, **tags) if has_tags else Span(span_name)

    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        def agen_wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
            return _traced_agen(fn(*args, **kwargs), span_name, tags)

        return agen_wrapper
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            return (yield from _traced_gen(fn(*args, **kwargs), span_name, tags))

        return gen_wrapper
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            with new_span():
                return await fn(*args, **kwargs)

        return async_wrapper

    @functools.wraps(fn)
    def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
        with new_span():
            return fn(*args, **kwargs)

    return sync_wrapper


def _traced_gen(gen: Generator[Any, Any, Any], name: str, tags: dict[str, Any]) -> Generator[Any, Any, Any]:
    span = start_span(name, **tags)  # at the first item: the parent is whoever iterates
    sent: Any = None
    thrown: BaseException | None = None
    try:
        while True:
            token = activate(span)
            try:
                item = gen.send(sent) if thrown is None else gen.throw(thrown)
            except StopIteration as stop:
                return stop.value
            finally:
                deactivate(span, token)
            thrown = None
            try:
                sent = yield item
            except GeneratorExit:
                token = activate(span)
                try:
                    gen.close()
                finally:
                    deactivate(span, token)
                raise
            except BaseException as error:  # thrown in by the consumer: pass it on
                thrown = error
    except BaseException as error:
        span.end_with_exception(error)
        raise
    finally:
        span.finish()


async def _traced_agen(
    agen: AsyncGenerator[Any, Any], name: str, tags: dict[str, Any]
) -> AsyncGenerator[Any, Any]:
    span = start_span(name, **tags)  # at the first item: the parent is whoever iterates
    sent: Any = None
    thrown: BaseException | None = None
    try:
        while True:
            token = activate(span)
            try:
                item = await (agen.asend(sent) if thrown is None else agen.athrow(thrown))
            except StopAsyncIteration:
                return
            finally:
                deactivate(span, token)
            thrown = None
            try:
                sent = yield item
            except GeneratorExit:
                token = activate(span)
                try:
                    await agen.aclose()
                finally:
                    deactivate(span, token)
                raise
            except BaseException as error:
                thrown = error
    except BaseException as error:
        span.end_with_exception(error)
        raise
    finally:
        span.finish()
