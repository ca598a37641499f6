"""A real Redis for the tests: Debian's ``redis-server`` on 127.0.0.1, started by the suite.

``redis-server`` takes no ``--port 0``, so a free port is found by binding a
socket to port 0 and closing it; if another process takes that port before
Redis binds it, Redis exits and the next free port is tried. Nothing is
written to disk (``--save ''``, ``--appendonly no``); the working folder is a
temporary one, removed at the end. Ready means Redis answered ``PING``.

Use the session-wide server through the ``redis_url`` fixture (import it into
the test module). ``./dev test`` installs the package (``ensure_debian
redis-server redis-server``).

Example (it starts a server, so it is shown, not run as a doctest)::

    with RedisServer() as server:
        server.url  # 'redis://127.0.0.1:41234/0'
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

__all__ = ("RedisServer", "redis_url")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process on a free port of 127.0.0.1, in a temporary folder."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="redis-"))
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0, attempts: int = 5) -> None:
        """Starts Redis and returns once it answers ``PING``."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is missing: apt-get install redis-server (./dev test does)")
        for _ in range(attempts):
            self.port = _free_port()
            log = (self.folder / "redis.log").open("ab")
            self.process = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.folder), "--daemonize", "no"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            log.close()
            if self._wait_ready(timeout):
                return
        raise RuntimeError(f"redis-server did not start: {self.log()[-2000:]}")

    def _wait_ready(self, timeout: float) -> bool:
        """True once Redis answers; False when it exited (the port was taken meanwhile)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"redis-server not ready on {self.port} after {timeout}s: {self.log()[-2000:]}")

    def log(self) -> str:
        path = self.folder / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stops Redis (SIGTERM, then SIGKILL) and reaps it."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The URL of a Redis started for the whole session (stopped at its end)."""
    with RedisServer() as server:
        yield server.url
