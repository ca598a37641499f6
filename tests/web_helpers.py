"""Client-side helpers shared by the aiohttp and ASGI middleware tests."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

import flowtracker as ft


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
