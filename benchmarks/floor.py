"""The floor: the least a contextvars tracer can do per span, written by hand.

Every benchmark compares flowtracker against this tracer, measured in the same
run. It does exactly what issue 6 describes and nothing more:

* one slotted object per span;
* one ``ContextVar`` ``set``/``reset`` pair (the parent is the current span);
* two clock reads (``time.monotonic_ns`` at start and end);
* random ids (``random.getrandbits``: 128 bits for a trace, 64 per span);
* the finished trace (a list of spans) handed to a bounded anyio memory object
  stream with ``send_nowait`` (full: dropped and counted), drained by a
  consumer task that takes what is ready in batches (``receive_nowait``; it
  waits in ``receive()`` only when the stream is empty) and drops it.

Tags go into the keyword-arguments dict the span was created with (kept, not
copied); events into a list made on first use.
A span appends itself to its trace's list when it *ends* and then forgets the
list, so a finished trace is acyclic (``list -> spans``, never back) and
reference counting frees it at once. ``cyclic=True`` keeps the back-reference
(``span -> list -> span``) to show what the cyclic garbage collector costs.

What the floor leaves out (and flowtracker must do): late children of an
ended root are lost, no limits on spans/tags/events, no sampling, no threads,
no per-exporter isolation, no statistics, no error objects.

Example:
    >>> import asyncio
    >>> from benchmarks.floor import FloorTracer
    >>> async def main():
    ...     async with FloorTracer() as tracer:
    ...         async with tracer.span("root"):
    ...             async with tracer.span("child") as child:
    ...                 child.set_tag("rows", 3)
    ...         await tracer.drain(1)
    ...     return tracer.received
    >>> asyncio.run(main())
    1
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ("FloorSpan", "FloorTracer", "add_tag", "current_span", "floor_traced")

_T = TypeVar("_T")

_current: ContextVar[FloorSpan | None] = ContextVar("benchmarks.floor.current", default=None)
_get = _current.get
_set = _current.set
_reset = _current.reset
_now = time.monotonic_ns
_bits = random.getrandbits


class FloorSpan:
    """One span of the floor tracer (a context manager, sync and async)."""

    span_id: int
    trace_id: int
    parent_id: int | None

    __slots__ = (
        "_token",
        "_trace",
        "_tracer",
        "end_ns",
        "events",
        "name",
        "parent_id",
        "span_id",
        "start_ns",
        "status",
        "tags",
        "trace_id",
    )

    def __init__(self, tracer: FloorTracer, name: str, tags: dict[str, Any]) -> None:
        self._tracer = tracer
        self.name = name
        self.tags = tags
        self.events: list[tuple[str, int, dict[str, Any]]] | None = None

    def set_tag(self, key: str, value: Any) -> None:
        """Sets a tag."""
        self.tags[key] = value

    def add_event(self, name: str, **attributes: Any) -> None:
        """Records a timestamped event."""
        events = self.events
        if events is None:
            events = self.events = []
        events.append((name, _now(), attributes))

    def __enter__(self) -> FloorSpan:
        parent = _get()
        if parent is None:
            self.trace_id = _bits(128)
            self.parent_id = None
            self._trace: list[FloorSpan] | None = []
        else:
            self.trace_id = parent.trace_id
            self.parent_id = parent.span_id
            self._trace = parent._trace
        self.span_id = _bits(64)
        self._token: Token[FloorSpan | None] | None = _set(self)
        self.start_ns = _now()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.end_ns = _now()
        self.status = "ok" if exc is None else "error"
        token = self._token
        if token is not None:
            self._token = None
            _reset(token)
        trace = self._trace
        if trace is None:
            return
        trace.append(self)
        if not self._tracer.cyclic:
            self._trace = None
        if self.parent_id is None:
            self._tracer.offer(trace)

    async def __aenter__(self) -> FloorSpan:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class FloorTracer:
    """Owns the stream and the consumer task; ``async with`` runs it.

    Args:
        max_queue: Traces buffered before new ones are dropped. Default 8192.
        cyclic: Keep span -> trace references (reference cycles). Default False.
    """

    def __init__(self, max_queue: int = 8192, *, cyclic: bool = False) -> None:
        self.max_queue = max_queue
        self.cyclic = cyclic
        self.received = 0
        self.dropped = 0
        self._send: MemoryObjectSendStream[list[FloorSpan]] | None = None
        self._receive: MemoryObjectReceiveStream[list[FloorSpan]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._waiter: tuple[int, asyncio.Future[None]] | None = None

    def span(self, name: str, /, **tags: Any) -> FloorSpan:
        """A new span (enter it with ``with`` or ``async with``); keywords are tags."""
        return FloorSpan(self, name, tags)

    def offer(self, trace: list[FloorSpan]) -> None:
        """Hands a finished trace to the consumer without blocking."""
        try:
            self._send.send_nowait(trace)  # type: ignore[union-attr]
        except (anyio.WouldBlock, anyio.ClosedResourceError, AttributeError):
            self.dropped += 1

    async def start(self) -> None:
        """Creates the stream and starts the consumer on the running loop."""
        self._send, self._receive = anyio.create_memory_object_stream[list[FloorSpan]](self.max_queue)
        self._task = asyncio.get_running_loop().create_task(self._consume(self._receive))

    async def _consume(self, receive: MemoryObjectReceiveStream[list[FloorSpan]]) -> None:
        while True:
            # receive() always yields to the loop first: take what is ready
            # without it, and wait only when the stream is empty.
            try:
                receive.receive_nowait()
            except anyio.WouldBlock:
                try:
                    await receive.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    return
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                return
            count = 1
            while True:  # take what is ready without yielding (batches under load)
                try:
                    receive.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
                count += 1
            self.received += count
            waiter = self._waiter
            if waiter is not None and self.received >= waiter[0] and not waiter[1].done():
                waiter[1].set_result(None)

    async def drain(self, total: int) -> None:
        """Waits until the consumer has taken ``total`` traces (dropped ones count)."""
        if self.received + self.dropped >= total:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiter = (total - self.dropped, future)
        await future
        self._waiter = None

    async def flush(self) -> None:
        """Waits until the consumer has taken every trace offered so far."""
        # A trace offered while the consumer waited went straight to it, not to the
        # buffer: let the consumer (already scheduled) count it first.
        await asyncio.sleep(0)
        queued = self._receive.statistics().current_buffer_used if self._receive is not None else 0
        await self.drain(self.received + self.dropped + queued)

    async def aclose(self) -> None:
        """Closes the stream and stops the consumer."""
        if self._send is not None:
            self._send.close()
        if self._task is not None:
            await self._task
            self._task = None
        if self._receive is not None:
            self._receive.close()

    async def __aenter__(self) -> FloorTracer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def current_span() -> FloorSpan | None:
    """The floor's current span."""
    return _get()


def add_tag(key: str, value: Any) -> None:
    """Tags the floor's current span; nothing outside a span."""
    current = _get()
    if current is not None:
        current.tags[key] = value


def floor_traced(tracer: FloorTracer, name: str) -> Callable[[Callable[..., Awaitable[_T]]], Any]:
    """The floor's ``@traced`` for coroutine functions.

    Example:
        >>> tracer = FloorTracer()
        >>> @floor_traced(tracer, "load")
        ... async def load(): ...
    """

    def decorate(fn: Callable[..., Awaitable[_T]]) -> Callable[..., Awaitable[_T]]:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> _T:
            with FloorSpan(tracer, name, {}):
                return await fn(*args, **kwargs)

        return wrapper

    return decorate
