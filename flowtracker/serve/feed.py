"""The live feed: new and updated traces as Server-Sent Events (``GET /api/live``).

Each commit of the store publishes the summaries of the traces it added or
changed (:func:`~flowtracker.serve.queries.summary_dict`, the shape of
``GET /api/traces``). Every open feed gets them as ``trace`` events, within
one commit of their arrival::

    retry: 1000

    event: trace
    data: {"trace_id": "4bf9…", "name": "GET /orders", "service": "orders", …}

A feed that falls behind (a tab in the background, say) never makes the
server buffer without end: updates of one trace replace each other while
they wait, and past :data:`MAX_WAITING` distinct traces the waiting ones are
dropped for one ``reset`` event (``data: {}``), after which the page reloads
the list from ``GET /api/traces``. A comment line (``: keep-alive``) every
15 seconds keeps proxies from closing an idle feed. At shutdown every feed
ends at once.

Example:
    >>> hub = Hub()
    >>> hub.subscribers
    0
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

__all__ = ("MAX_WAITING", "Hub", "Subscription")

#: Traces waiting for one slow feed before they are replaced by a ``reset`` event.
MAX_WAITING = 1000
KEEP_ALIVE_SECONDS = 15.0


class Subscription:
    """One open feed: what waits to be sent to it."""

    def __init__(self) -> None:
        self.waiting: dict[str, dict[str, Any]] = {}
        self.reset = False
        self.closed = False
        self.ready = asyncio.Event()

    def offer(self, summaries: list[dict[str, Any]]) -> None:
        if self.reset:
            return  # the page reloads the whole list anyway
        for summary in summaries:
            self.waiting[summary["trace_id"]] = summary
        if len(self.waiting) > MAX_WAITING:
            self.waiting.clear()
            self.reset = True
        self.ready.set()

    def close(self) -> None:
        self.closed = True
        self.ready.set()

    async def events(self) -> AsyncIterator[bytes]:
        """The feed's bytes, chunk by chunk, until :meth:`close`."""
        yield b"retry: 1000\n\n"
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.ready.wait(), KEEP_ALIVE_SECONDS)
            if self.closed:
                return
            if not self.ready.is_set():
                yield b": keep-alive\n\n"
                continue
            self.ready.clear()
            if self.reset:
                self.reset = False
                yield b"event: reset\ndata: {}\n\n"
                continue
            waiting, self.waiting = self.waiting, {}
            yield b"".join(
                b"event: trace\ndata: " + orjson.dumps(summary) + b"\n\n" for summary in waiting.values()
            )


class Hub:
    """Hands the store's commits to every open feed (on the event loop's thread)."""

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def subscribers(self) -> int:
        """Feeds open now."""
        return len(self._subscriptions)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the feeds run on (publishing comes from the store's writer thread)."""
        self._loop = loop

    def publish_threadsafe(self, summaries: list[dict[str, Any]]) -> None:
        """Publishes from any thread (the store's ``on_commit``)."""
        loop = self._loop
        if loop is not None and self._subscriptions:
            with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
                loop.call_soon_threadsafe(self.publish, summaries)

    def publish(self, summaries: list[dict[str, Any]]) -> None:
        for subscription in self._subscriptions:
            subscription.offer(summaries)

    def subscribe(self) -> Subscription:
        subscription = Subscription()
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def close(self) -> None:
        """Ends every open feed (shutdown)."""
        for subscription in list(self._subscriptions):
            subscription.close()
