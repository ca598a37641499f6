"""One app's tracker and loop monitor, from startup to shutdown: what aiohttp and ASGI share.

Both middlewares hand their app's lifetime to an :class:`AppLifecycle`:

* **startup** (aiohttp's ``on_startup`` through :func:`flowtracker.aiohttp.setup`,
  ASGI ``lifespan.startup``): starts the loop monitor when ``monitor_loop``
  asks for it, and the tracker on the app's loop. A tracker that already
  runs is left as it is. With none given (zero configuration) requests go to
  the tracker in effect, by default the process-wide default tracker, which
  runs on a thread of its own so a stalled stdout never stalls the app; it is
  started here, so a mistake in ``FLOWTRACKER_EXPORTERS`` is named at startup.
* **shutdown** (aiohttp's ``on_cleanup``, ASGI ``lifespan.shutdown``): stops
  the monitor, then flushes the tracker, closing it if startup started it.
  It waits at most the tracker's ``close_timeout`` (default 10 s) for the
  export to drain, and as long again for the exporters to close. It is
  shielded: a cancellation that arrives meanwhile (Ctrl-C under
  ``asyncio.run``) waits for it and is raised after. Errors are logged,
  never raised: tracing never fails an app's shutdown, nor its startup.
* **a server that runs neither** (``uvicorn --lifespan off``, a bare
  ``middleware(tracker)``, an aiohttp app served without its signals): the
  first request runs startup (:meth:`AppLifecycle.start_from_request`) and
  arms SIGTERM and SIGINT (:mod:`~flowtracker.integrations.stop_signals`): on
  either, the tracker is flushed before the server's own shutdown begins,
  and requests that finish during it flush before they end. Where no handler
  can be set (the server runs off the main thread) a warning says so once.

Example:
    >>> import asyncio, flowtracker as ft
    >>> memory = ft.MemoryExporter()
    >>> app = AppLifecycle(ft.Tracker(exporters=[memory]))
    >>> async def serve():
    ...     await app.startup()
    ...     with ft.start_root_span("GET /", {}, tracker=app.tracker):
    ...         pass
    ...     await app.shutdown()
    >>> asyncio.run(serve())
    >>> len(memory.traces), app.tracker.running
    (1, False)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from .._pipeline.tracker import Tracker, resolve_tracker
from ..loop_monitor import LoopMonitor, monitor_event_loop
from .stop_signals import arm

logger = logging.getLogger("flowtracker")

T = TypeVar("T")


class AppLifecycle:
    """Runs one app's tracker (and loop monitor) for the app's lifetime; see the module docstring.

    Args:
        tracker: The app's tracker; ``None``: the tracker in effect (by default
            the process-wide default tracker).
        monitor_threshold: Watch the app's loop with this block threshold in
            seconds (:func:`flowtracker.monitor_event_loop`); ``None``: don't.
    """

    __slots__ = (
        "__weakref__",
        "_owned",
        "loop",
        "monitor",
        "monitor_threshold",
        "started",
        "stopping",
        "tracker",
    )

    def __init__(self, tracker: Tracker | None = None, monitor_threshold: float | None = None) -> None:
        #: Where the app's requests report (``None``: the tracker in effect).
        self.tracker = tracker
        self.monitor_threshold = monitor_threshold
        #: True once startup ran (from the hook, or from the first request).
        self.started = False
        #: True once a stop signal arrived: requests flush before they end.
        self.stopping = False
        #: The loop startup ran on.
        self.loop: asyncio.AbstractEventLoop | None = None
        #: The loop monitor, from startup to shutdown (when asked for).
        self.monitor: LoopMonitor | None = None
        self._owned = False  # startup started the tracker: shutdown closes it

    async def startup(self) -> None:
        """Starts the monitor and the tracker on the running loop; errors are logged."""
        self.started = True
        self.loop = asyncio.get_running_loop()
        if self.monitor_threshold is not None and self.monitor is None:
            try:
                self.monitor = monitor_event_loop(self.monitor_threshold)
            except Exception:
                logger.exception("flowtracker could not start the loop monitor")
        tracker = self.tracker
        try:
            if tracker is None:
                # Starts the default tracker now: a bad FLOWTRACKER_EXPORTERS is named at startup.
                resolve_tracker()
            elif not tracker.running:
                await tracker.start()
                self._owned = True
        except Exception:  # tracing must never stop the app from starting
            logger.exception("flowtracker could not start the tracker; requests are not exported")

    async def start_from_request(self) -> None:
        """Startup for a server that ran no startup hook: called by the first request.

        Arms SIGTERM and SIGINT so that the tracker is flushed before they take
        effect; says once, as a warning, when that is impossible.
        """
        if self.started:
            return
        await self.startup()
        if not arm(self):
            logger.warning(
                "flowtracker: this app's server ran no startup hook and serves off the main thread, "
                "so flowtracker cannot flush its traces when the server stops. Run the app's "
                "startup/shutdown hooks (ASGI lifespan; aiohttp setup(app) under an AppRunner) "
                "or flush the tracker yourself (await tracker.aclose())."
            )
        elif self._owned or self.monitor is not None:
            logger.info(
                "flowtracker: the server ran no startup hook; the first request started %s, "
                "flushed when SIGTERM or SIGINT stops the server",
                "the tracker" if self._owned else "the loop monitor",
            )

    async def flush(self) -> None:
        """Exports what the tracker holds (bounded by its ``close_timeout``); errors are logged."""
        tracker = self.tracker if self.tracker is not None else resolve_tracker()
        try:
            await shielded(tracker.flush(tracker.close_timeout))
        except Exception:
            logger.exception("flowtracker could not flush its tracker")

    async def shutdown(self) -> None:
        """Stops the monitor; flushes the tracker, closing it if startup started it; errors are logged."""
        monitor, self.monitor = self.monitor, None
        if monitor is not None:
            try:
                monitor.stop()
            except Exception:
                logger.exception("flowtracker could not stop the loop monitor")
        if not self._owned:
            await self.flush()
            return
        self._owned = False
        tracker = self.tracker
        assert tracker is not None
        try:
            await shielded(tracker.aclose(tracker.close_timeout))
        except Exception:
            logger.exception("flowtracker could not close its tracker at shutdown")


async def shielded(work: Awaitable[T]) -> T:
    """Awaits ``work`` to its end, even when the awaiting task is cancelled meanwhile.

    The work runs in a task of its own (a cleanup often runs in a task being
    cancelled, whose cancellation ``aclose()`` would otherwise take for its
    own); a cancellation that arrives while it runs is raised once it is done.
    ``work`` must be bounded (flush and close are, by ``close_timeout``).
    """
    task = asyncio.ensure_future(work)
    interrupted = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():  # the work itself was cancelled (the loop is being torn down)
                break
            interrupted = True
    if interrupted:
        raise asyncio.CancelledError
    return task.result()
