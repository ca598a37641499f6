"""A real aiohttp server on 127.0.0.1 that records what exporters POST to it.

Used by the webhook and OTLP tests. Responses follow a script (a list of
statuses, ``(status, headers)`` pairs, or ``("hang", seconds)`` entries),
then 200. Bodies are kept raw (``auto_decompress=False``) so tests see the
bytes on the wire, gzip included; only answered-2xx requests count as
delivered.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

Step = int | tuple[int, dict[str, str]] | tuple[str, float]


@dataclass
class Recorded:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    raw: bytes
    status: int
    peer_port: int
    at: float

    @property
    def body(self) -> bytes:
        """The body, gunzipped when ``Content-Encoding: gzip``."""
        if self.headers.get("Content-Encoding") == "gzip":
            return gzip.decompress(self.raw)
        return self.raw

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    """Records requests on any path; ``script`` decides the next answers.

    With ``latency``, each answer comes that much later, after the request was
    recorded (a collector one network hop away, which keeps what it received
    even when the sender goes away before the answer).
    """

    script: list[Step] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    port: int = 0
    latency: float = 0.0

    @property
    def delivered(self) -> list[Recorded]:
        """Requests that were answered 2xx."""
        return [request for request in self.requests if 200 <= request.status < 300]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        step: Step = self.script.pop(0) if self.script else 200
        if isinstance(step, tuple) and step[0] == "hang":
            self._record(request, raw, 599)  # the client gives up first: not delivered
            await asyncio.sleep(float(step[1]))
            return web.Response(status=200)
        headers: dict[str, str] = {}
        if isinstance(step, tuple):
            status, headers = int(step[0]), dict(step[1])  # type: ignore[call-overload]
        else:
            status = step
        self._record(request, raw, status)
        if self.latency:
            await asyncio.sleep(self.latency)
        return web.Response(status=status, headers=headers, text="ok" if status < 300 else "nope")

    def _record(self, request: web.Request, raw: bytes, status: int) -> Recorded:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        recorded = Recorded(
            request.path,
            dict(request.headers),
            raw,
            status,
            peer[1] if peer else 0,
            asyncio.get_running_loop().time(),
        )
        self.requests.append(recorded)
        return recorded

    async def start(self, port: int = 0, ssl_context: ssl.SSLContext | None = None) -> str:
        """Starts listening; returns the base URL (``http://127.0.0.1:PORT``)."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, auto_decompress=False, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, ssl_context=ssl_context)
        await site.start()
        sockets = self._runner.addresses
        self.port = int(sockets[0][1])
        scheme = "https" if ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Receiver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
