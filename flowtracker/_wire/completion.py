"""Hooks told of each finished trace as its record is built, before any exporter sees it.

A finished trace (complete, a follow-up, or emitted unfinished) becomes one
:class:`~flowtracker._wire.record.Trace`, on the thread that assembles traces,
once. What can only be known then is added then: the event-loop monitor's
stalled time, which needs the whole trace and the blocks its loop saw. With
no hook registered (the monitor never started), building a record costs one
truthiness check more.

A hook gets the record's spans and may write their extras; it must be quick
and must not raise (an exception is logged, and the record goes on).

Example:
    >>> import flowtracker as ft
    >>> from flowtracker.testing import capture_traces
    >>> seen = []
    >>> def count(spans): seen.append(len(spans))
    >>> add_completion_hook(count)
    >>> with capture_traces():
    ...     with ft.span("root"), ft.span("child"):
    ...         pass
    >>> remove_completion_hook(count)
    >>> seen
    [2]
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._core.span import Span

__all__ = ("COMPLETION_HOOKS", "add_completion_hook", "remove_completion_hook", "run_completion_hooks")

logger = logging.getLogger("flowtracker")

#: The registered hooks, oldest first (read by ``Trace`` as each record is built).
COMPLETION_HOOKS: list[Callable[[list[Span]], None]] = []


def add_completion_hook(hook: Callable[[list[Span]], None]) -> None:
    """Registers ``hook`` (once: a second call does nothing)."""
    if hook not in COMPLETION_HOOKS:
        COMPLETION_HOOKS.append(hook)


def remove_completion_hook(hook: Callable[[list[Span]], None]) -> None:
    """Unregisters ``hook`` (nothing if it was not registered)."""
    if hook in COMPLETION_HOOKS:
        COMPLETION_HOOKS.remove(hook)


def run_completion_hooks(spans: list[Span]) -> None:
    """Runs every hook on a finished trace's spans; a hook that raises is logged and skipped."""
    for hook in tuple(COMPLETION_HOOKS):
        try:
            hook(spans)
        except Exception:
            logger.exception("a trace completion hook raised; the trace is exported without it")
