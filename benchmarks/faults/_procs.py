"""A server (or script) under test: a process group of its own, started, signalled, reaped.

The process starts in a new session, so its workers share its process
group: the graceful stop goes to the main process only (as an orchestrator
sends it), and the clean-up kills the whole group by its id, so a hung
worker never outlives its scenario.

Example:
    >>> process = Process(["true"], env={}, log=Path("/dev/null"))
    >>> process.alive
    False
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .._load import ROOT

POLL = 0.02


class Process:
    """One command under test, its output in ``log``.

    Attributes:
        signalled_at: ``time.monotonic()`` when :meth:`stop` sent its signal.
        exit_seconds: Signal to exit, once it exited.
    """

    def __init__(self, command: Sequence[str], *, env: Mapping[str, str], log: Path) -> None:
        self.command = list(command)
        self.env = dict(env)
        self.log = log
        self.popen: subprocess.Popen[bytes] | None = None
        self.signalled_at: float | None = None
        self.exit_seconds: float | None = None

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> None:
        with self.log.open("ab") as output:
            self.popen = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self, signum: int) -> None:
        """Sends ``signum`` to the main process (once) and notes when."""
        if self.signalled_at is not None or not self.alive:
            return
        assert self.popen is not None
        self.signalled_at = time.monotonic()
        self.popen.send_signal(signum)

    async def wait(self, bound: float) -> int | None:
        """The exit code, or None when the process still runs ``bound`` seconds from now."""
        assert self.popen is not None
        deadline = time.monotonic() + bound
        while self.popen.poll() is None:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(POLL)
        return self.popen.returncode

    async def wait_exit(self, bound: float) -> float | None:
        """Seconds from the signal to the exit, or None when it did not exit within ``bound``."""
        if await self.wait(bound) is None:
            return None
        if self.exit_seconds is None and self.signalled_at is not None:
            self.exit_seconds = time.monotonic() - self.signalled_at
        return self.exit_seconds

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def group_members(self) -> list[str]:
        """Command lines of the processes of the group still running (workers left behind)."""
        if self.popen is None:
            return []
        found = []
        for status in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = status.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == self.popen.pid and fields[0] != "Z":  # its pgrp; not a zombie
                    found.append((status.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        return found

    async def leftovers(self, grace: float = 2.0) -> list[str]:
        """The group's processes still running ``grace`` seconds after the main one exited."""
        deadline = time.monotonic() + grace
        members = self.group_members()
        while members and time.monotonic() < deadline:  # other processes: no event to wait on
            await asyncio.sleep(POLL * 5)
            members = self.group_members()
        return members

    def kill(self) -> None:
        """Kills the whole process group (by its id) and reaps the main process."""
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)

    def log_text(self) -> str:
        """Everything the process printed so far ("" when nothing could be read)."""
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 6) -> str:
        """The last lines the process printed (for a row's notes)."""
        return " | ".join(line.strip() for line in self.log_text().strip().splitlines()[-lines:])
