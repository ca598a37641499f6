"""The loop's tasks and their spans, read from any thread (the watchdog's, while the loop is held).

``asyncio.current_task(loop)`` and ``asyncio.all_tasks(loop)`` read asyncio's
tables of running and live tasks, which any thread may read. A task's
context is a mapping that can be read without entering it (the loop thread
has it entered while the task runs): ``Task.get_context()`` on Python 3.12+;
before, it is the first ``Context`` the task's garbage-collector traversal
reports (asyncio's C task visits it first), as those versions expose it no
other way. The span current in a task is that context's value of the
core's current-span variable.

Example:
    >>> import asyncio, flowtracker as ft
    >>> async def main():
    ...     async with ft.span("job") as job:
    ...         task, span = running_span(asyncio.get_running_loop())
    ...         return span is job, id(job) in loop_traces(asyncio.get_running_loop())
    >>> asyncio.run(main())
    (True, True)
"""

from __future__ import annotations

import asyncio
import contextvars
import gc

from .._core import Span
from .._core.span import CURRENT

__all__ = ("loop_traces", "running_span")


def running_span(loop: asyncio.AbstractEventLoop) -> tuple[asyncio.Task[object] | None, Span | None]:
    """The task ``loop`` is running now (``None``: none, or a bare callback), and its current span."""
    task = asyncio.current_task(loop)
    if task is None:
        return None, None
    context = _context_of(task)
    span = None if context is None else context.get(CURRENT)
    return task, (span if span is not None and span.recording else None)


def loop_traces(loop: asyncio.AbstractEventLoop) -> frozenset[int]:
    """The traces with a task on ``loop`` now: ``id()`` of the root of each task's current span's trace.

    Taken while the loop is held, these are the traces the block may stall
    (a trace of another loop, or of a worker thread, has no task here).
    """
    found: set[int] = set()
    try:
        tasks = asyncio.all_tasks(loop)
    except RuntimeError:  # the task set kept changing under us (it retries first)
        return frozenset()
    for task in tasks:
        context = _context_of(task)
        span = None if context is None else context.get(CURRENT)
        if span is not None and span.recording:
            found.add(id(span.root or span))
    return frozenset(found)


def _context_of(task: asyncio.Task[object]) -> contextvars.Context | None:
    get_context = getattr(task, "get_context", None)
    if get_context is not None:
        context: contextvars.Context = get_context()
        return context
    for referent in gc.get_referents(task):
        if type(referent) is contextvars.Context:
            return referent
    return None
