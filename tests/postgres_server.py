"""A real, throwaway PostgreSQL for the tests, started and stopped by the suite.

Debian's ``postgresql`` package (``./dev test`` installs it): a cluster made
with ``initdb`` in a temporary folder, started with ``pg_ctl`` on a free port
of 127.0.0.1 (no Unix socket), ``trust`` authentication for the ``postgres``
role, and durability switched off (``fsync``, ``synchronous_commit``) since the
data is thrown away. PostgreSQL refuses to run as root, so when the tests run as
root the cluster's folder is given to the ``postgres`` user and every server
command runs as that user. Ready means ``pg_ctl start -w`` returned, and the
test database (``flowtracker_test``) exists.

Tests use the session fixture :func:`postgres` (import it into the test module):

Example (it starts a cluster, so it is shown, not run as a doctest)::

    server = PostgresServer(); server.start()
    server.dsn  # 'postgresql://postgres@127.0.0.1:54321/flowtracker_test'
    server.close()
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

DATABASE = "flowtracker_test"
USER = "postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def binaries() -> Path:
    """The newest installed ``/usr/lib/postgresql/<version>/bin`` (Debian's layout)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (./dev test does it)")
    return Path(found[-1]).parent


class PostgresServer:
    """One PostgreSQL cluster on 127.0.0.1; ``start()``, then ``close()`` removes it all."""

    def __init__(self) -> None:
        self.port = free_port()
        self.bin = binaries()
        self.folder = Path(tempfile.mkdtemp(prefix="flowtracker-pg-"))
        self.data = self.folder / "data"
        self.logfile = self.folder / "postgres.log"
        self.running = False
        # Root may not run PostgreSQL: hand the folder to the postgres user, run as it.
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            account = pwd.getpwnam(USER)
            os.chown(self.folder, account.pw_uid, account.pw_gid)
            self._as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    @property
    def dsn(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [str(self.bin / tool), *args], cwd=self.folder, capture_output=True, text=True,
            timeout=60, check=False, **self._as,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr[-2000:]}\n{self.log()}")

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        options = (
            f"-h 127.0.0.1 -p {self.port} -k '' -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=50"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", options, "-w", "start")
        self.running = True
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, DATABASE)

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def close(self) -> None:
        if self.running:
            self.running = False
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


async def wait_for_backend(observer: Any, pid: int, condition: str) -> None:
    """Polls pg_stat_activity until backend ``pid`` meets ``condition`` (a SQL boolean), up to 30 s."""
    query = f"SELECT coalesce(({condition}), false) FROM pg_stat_activity WHERE pid = $1"
    for _ in range(3000):
        if await observer.fetchval(query, pid):
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"backend {pid} never met {condition}")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A running PostgreSQL for the whole session, removed at the end."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.close()
