"""Flush before a stop signal takes effect, for apps whose server runs no shutdown hook.

A server that never runs an app's startup hook (``uvicorn --lifespan off``,
an aiohttp app served without its signals) runs no shutdown hook either, and
some end the process in a way no ``atexit`` hook survives: uvicorn, after its
own graceful shutdown, restores the handler it found and raises the signal
again, so SIGTERM's default action kills the process with traces still
queued. So when the first request starts such an app
(:meth:`~flowtracker.integrations.lifecycle.AppLifecycle.start_from_request`),
it :func:`arm`\\ s SIGTERM and SIGINT: flowtracker's handler takes the place of
the current one, which it keeps (made through the registry of runtime
patches, :mod:`flowtracker._core.patches`, as ``signal.SIGTERM`` and
``signal.SIGINT``). When a signal arrives it

1. marks the armed apps as stopping, so each request that finishes from then
   on flushes before its task ends (a graceful server waits for those tasks);
2. flushes the armed apps' trackers (each bounded by its ``close_timeout``);
3. then passes the signal on: it calls the handler it took the place of (the
   server's graceful shutdown starts now) or, where that was the default
   action, restores it and raises the signal again.

A second signal while the first is held passes both on at once (a second
Ctrl-C still forces uvicorn out). Only the main thread can set handlers; an
ignored signal, or one handled outside Python, is left alone. A handler the
event loop dispatches itself (``loop.add_signal_handler``, as aiohttp's
``run_app`` sets) is run by the loop at once, so that server's shutdown starts
while the flush runs: it is a graceful one that exits normally, and the
trackers' own shutdown paths (cleanup hooks, ``atexit``) see to the rest.

Example:
    >>> from flowtracker.integrations.stop_signals import STOP_SIGNALS
    >>> [signum.name for signum in STOP_SIGNALS]
    ['SIGTERM', 'SIGINT']
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import signal
import threading
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

from .._core.patches import patch_hook

logger = logging.getLogger("flowtracker")

#: The signals servers stop on.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

Handler = Callable[[int, "FrameType | None"], Any]


class Stoppable(Protocol):
    """What :func:`arm` needs of an app (an ``AppLifecycle``)."""

    #: The loop the app runs on.
    loop: asyncio.AbstractEventLoop | None
    #: Set when a stop signal arrived.
    stopping: bool

    async def flush(self) -> None:
        """Flushes the app's tracker (bounded; never raises)."""


_armed: weakref.WeakSet[Any] = weakref.WeakSet()


def arm(app: Stoppable) -> bool:
    """Flushes ``app``'s tracker before SIGTERM or SIGINT takes effect (see the module docstring).

    Returns:
        False when no handler could be set (not the main thread; both signals
        ignored or handled outside Python): nothing will flush at a stop.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    armed = False
    for signum in STOP_SIGNALS:
        current = signal.getsignal(signum)
        if isinstance(current, _Relay):
            armed = True
        elif current is signal.SIG_DFL or callable(current):
            relay = _Relay(signum, current)
            patch_hook(
                f"signal.{signal.Signals(signum).name}",
                functools.partial(signal.signal, signum, relay),
                relay.restore,
                reason="flush the trackers of apps whose server runs no shutdown hook before a stop "
                "signal ends the process",
            )
            armed = True
    if armed:
        _armed.add(app)
    return armed


class _Relay:
    """flowtracker's handler for one signal: flush the armed apps, then pass the signal on."""

    def __init__(self, signum: int, previous: Handler | int) -> None:
        self.signum = signum
        self.previous = previous
        #: Signals received and not yet passed on (held while the flush runs).
        self.held = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.held:  # a second signal while the first waits: both go on now
            self.release()
            self.pass_on()
            return
        apps = [app for app in _armed if app.loop is not None and app.loop.is_running()]
        if not apps:
            self.pass_on()
            return
        self.held = 1
        remaining = len(apps)

        def flushed(_: concurrent.futures.Future[None]) -> None:
            nonlocal remaining
            remaining -= 1
            if not remaining:
                self.release()

        for app in apps:
            app.stopping = True
            flush = app.flush()
            try:
                # Signal-safe: what asyncio's own signal handling does (append, wake the loop).
                future = asyncio.run_coroutine_threadsafe(flush, app.loop)
            except RuntimeError:  # the loop closed meanwhile: nothing to flush there
                flush.close()
                remaining -= 1
                continue
            future.add_done_callback(flushed)
        if not remaining:
            self.release()

    def restore(self) -> None:
        """Puts back the handler this one took the place of, if this one is still in place."""
        signum, previous = self.signum, self.previous
        if signal.getsignal(signum) is self:
            signal.signal(signum, previous)

    def release(self) -> None:
        """Passes on the signals held."""
        held, self.held = self.held, 0
        for _ in range(held):
            self.pass_on()

    def pass_on(self) -> None:
        """What would have happened without flowtracker: the handler it replaced, or the default action."""
        previous = self.previous
        if callable(previous):
            previous(self.signum, None)
            return
        # The default action (the process ends), as if flowtracker had never been there.
        signal.signal(self.signum, signal.SIG_DFL)
        signal.raise_signal(self.signum)
