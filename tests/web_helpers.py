"""Client-side helpers shared by the aiohttp and ASGI middleware tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import uvicorn
from aiohttp import web

import flowtracker as ft


@contextlib.asynccontextmanager
async def serve(app: web.Application, **runner_options: Any) -> AsyncIterator[str]:
    """Runs ``app`` on 127.0.0.1 (a free port) and yields its base URL."""
    runner = web.AppRunner(app, **runner_options)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def uvicorn_serve(app: Any, lifespan: str = "on") -> AsyncIterator[str]:
    """Serves ``app`` with uvicorn on 127.0.0.1 (a free port); yields the base URL; shuts down gracefully."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan=lifespan, ws="websockets-sansio", log_level="critical"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise AssertionError("uvicorn stopped during startup")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def fetch(url: str, method: str = "GET", **options: Any) -> tuple[int, dict[str, str], bytes]:
    """One request with a fresh client: status, headers, body."""
    async with aiohttp.ClientSession() as client, client.request(method, url, **options) as response:
        return response.status, dict(response.headers), await response.read()


async def collected(tracker: ft.Tracker, memory: ft.MemoryExporter, count: int) -> list[dict[str, Any]]:
    """Waits (bounded) until ``count`` traces were exported: roots end after the client read the reply."""
    for _ in range(200):
        await tracker.flush()
        if len(memory.traces) >= count:
            break
        await asyncio.sleep(0.01)
    return memory.traces


async def leave_mid_stream(url: str, path: str, first_chunk: bytes) -> None:
    """A raw client that reads the first chunk of a streamed response, then hangs up."""
    port = int(url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await reader.readuntil(first_chunk)
    writer.close()
    await writer.wait_closed()
