"""A loopback TCP echo server, the ``sparse`` suite's peer: ``python -m benchmarks._echo PORT``.

It runs in a process of its own (pinned away from the benchmark by
``_load.peer``), so the benchmark's CPU clock counts only its own side of
each round trip.

Example:
    python -m benchmarks._echo 9000
"""

from __future__ import annotations

import asyncio
import contextlib
import sys


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
    writer.close()


async def serve(port: int) -> None:
    """Echoes every connection to 127.0.0.1:``port`` until cancelled."""
    server = await asyncio.start_server(_echo, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(int(sys.argv[1])))
