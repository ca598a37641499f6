"""The load: N numbered requests with a fixed concurrency, and events at milestones.

Request ``n`` is ``GET /r/<n>``; the server tags its trace with ``req=n``, so
each 2xx answer can be matched to a trace. Milestones run an action once a
share of the requests has been answered (send the stop signal at 50%, take
the receiver down at 30%, ...). Every request has a timeout and the whole
load a deadline: a server that hangs costs the scenario its bound, never
the suite.

Hostile requests (``hostile_every=k``: every k-th one) go over a raw socket
with the header line ``User-Agent: curl/\\xff`` (one byte that is not UTF-8),
as a careless client sends it.

Example:
    >>> import asyncio
    >>> load = asyncio.run(send_load(free_port(), 3, concurrency=2, deadline=5.0, timeout=1.0))
    >>> load.sent, len(load.answered), sum(load.errors.values())
    (3, 0, 3)
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Awaitable, Callable

import aiohttp

from .._load import free_port

__all__ = ("Load", "free_port", "raw_get", "send_load", "wait_answering")

Action = Callable[[], Awaitable[None] | None]
HOSTILE_USER_AGENT = b"curl/\xff"


@dataclasses.dataclass
class Load:
    """What the client saw.

    Attributes:
        sent: Requests started.
        answered: Numbers of the requests answered 2xx.
        errors: Other outcomes by kind (``"503"``, ``"ClientConnectorError"``...).
        timed_out: The deadline passed with requests unanswered.
        seconds: How long the load ran.
    """

    sent: int = 0
    answered: set[int] = dataclasses.field(default_factory=set)
    errors: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    timed_out: bool = False
    seconds: float = 0.0


async def raw_get(port: int, path: str, user_agent: bytes, timeout: float) -> int:
    """``GET path`` over a raw socket with ``user_agent`` as given (any bytes); the status."""

    async def exchange() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: "
                + user_agent + b"\r\nConnection: close\r\n\r\n"
            )
            return await reader.readline()
        finally:
            writer.close()

    parts = (await asyncio.wait_for(exchange(), timeout)).split()
    if len(parts) < 2:
        raise ConnectionResetError("no status line")
    return int(parts[1])


async def send_load(
    port: int,
    total: int,
    *,
    concurrency: int = 32,
    deadline: float,
    timeout: float = 10.0,
    milestones: dict[float, Action] | None = None,
    hostile_every: int = 0,
) -> Load:
    """Sends requests ``0..total-1`` to ``127.0.0.1:port``; what came back.

    Args:
        port: The server's port.
        total: Requests to send.
        concurrency: Requests in flight at once.
        deadline: Seconds the whole load may take; past it the rest is abandoned.
        timeout: Seconds one request may take.
        milestones: Share of ``total`` answered (0.5) to an action run once then.
        hostile_every: Every k-th request carries a non-UTF-8 header byte (0: none).
    """
    load = Load()
    pending = dict(sorted((milestones or {}).items()))
    background: list[asyncio.Task[None]] = []
    numbers = iter(range(total))
    started = time.monotonic()

    def reached() -> None:
        for share in [share for share in pending if len(load.answered) >= share * total]:
            outcome = pending.pop(share)()
            if outcome is not None:
                background.append(asyncio.ensure_future(outcome))

    async def one(session: aiohttp.ClientSession, number: int) -> None:
        path = f"/r/{number}"
        try:
            if hostile_every and number % hostile_every == hostile_every - 1:
                status = await raw_get(port, path, HOSTILE_USER_AGENT, timeout)
            else:
                async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                    await response.read()
                    status = response.status
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError) as error:
            load.errors[type(error).__name__] += 1
            return
        if 200 <= status < 300:
            load.answered.add(number)
            reached()
        else:
            load.errors[str(status)] += 1

    async def worker(session: aiohttp.ClientSession) -> None:
        for number in numbers:
            load.sent += 1
            await one(session, number)

    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        workers = [asyncio.ensure_future(worker(session)) for _ in range(concurrency)]
        _, still = await asyncio.wait(workers, timeout=deadline)
        for task in still:
            task.cancel()
        await asyncio.gather(*still, return_exceptions=True)
        load.timed_out = bool(still)
    for task in background:
        await task
    load.seconds = time.monotonic() - started
    return load


async def wait_answering(port: int, path: str, bound: float) -> bool:
    """Polls ``GET path`` until it answers 200; False when ``bound`` seconds passed first."""
    deadline = time.monotonic() + bound
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                    if response.status == 200:
                        return True
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.05)
    return False
