"""An HTTP receiver that the suite takes down and brings back: the exporter outage.

It runs on the suite's own event loop, on one port for its whole life, and
keeps the body of every POST it answered (200). ``down()`` closes the
listening socket and every connection, so the exporter meets refused
connections until ``up()``. With ``latency``, each answer comes that much
later, as from a collector across a network: a sender that dies early
leaves traces it had not sent yet.

Example:
    >>> receiver = Receiver()
    >>> receiver.bodies
    []
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from .._load import free_port


class Receiver:
    """Records POST bodies on any path (webhook and OTLP/JSON alike).

    Args:
        latency: Seconds each answer takes (a collector one network hop away).
    """

    def __init__(self, latency: float = 0.0) -> None:
        self.port = free_port()
        self.latency = latency
        self.bodies: list[bytes] = []
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())  # arrived, even if the sender dies before the answer
        if self.latency:
            await asyncio.sleep(self.latency)
        return web.Response(text="ok")

    async def up(self) -> None:
        """Starts listening on ``port`` (again)."""
        if self._runner is not None:
            return
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True).start()
        self._runner = runner

    async def down(self) -> None:
        """Stops listening and drops every connection."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
