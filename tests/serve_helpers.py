"""Helpers for the ``flowtracker serve`` tests: a server on free ports, OTLP bodies, spans.

The server runs in-process (``Server`` on the test's loop) or as the real
command in a subprocess (``ServeProcess``), always on ports the OS picked.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from flowtracker._wire.otlp import otlp_request_dict
from flowtracker._wire.otlp_proto import request_message
from flowtracker.serve.command import Options, Server

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
ROOT = Path(__file__).resolve().parent.parent


@asynccontextmanager
async def running_server(db: str, **options: Any) -> AsyncIterator[Server]:
    """A ``flowtracker serve`` on this loop, HTTP and gRPC on free ports."""
    settings = Options(port=0, grpc_port=0, db=db, **options)
    async with Server(settings, out=io.StringIO()) as server:
        yield server


def wire_span(span_id: str, name: str, parent: str | None = None, *, start_us: int = 0, ms: float = 1.0,
              **extra: Any) -> dict[str, Any]:  # fmt: skip
    """A wire-format span starting ``start_us`` microseconds into 2026-11-20T10:00:00Z."""
    from flowtracker._core.clock import format_rfc3339

    start = 1_795_168_800_000_000_000 + start_us * 1000
    span: dict[str, Any] = {"span_id": span_id, "name": name}
    if parent is not None:
        span["parent_id"] = parent
    span.update(
        start_time=format_rfc3339(start),
        end_time=format_rfc3339(start + round(ms * 1e6)),
        duration_ms=ms,
        status="ok",
    )
    span.update(extra)
    return span


def protobuf_body(traces: list[dict[str, Any]]) -> bytes:
    """An OTLP protobuf body for wire-format traces (flowtracker's own mapping)."""
    return request_message(otlp_request_dict(traces)).SerializeToString()  # type: ignore[no-any-return]


async def post(port: int, body: bytes, content_type: str = PROTOBUF, **headers: str) -> tuple[int, bytes]:
    """POSTs to ``/v1/traces``; the status and the body of the answer."""
    data: Any = io.BytesIO(body) if len(body) > 1 << 20 else body  # aiohttp warns about big raw bytes
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{port}/v1/traces", data=data, headers={"Content-Type": content_type, **headers}
        ) as response,
    ):
        return response.status, await response.read()


async def get_json(port: int, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.json()


class ServeProcess:
    """``flowtracker serve`` as a real process; its start-up lines read."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.lines: list[str] = []
        self.stderr = ""
        self.process: subprocess.Popen[str] | None = None

    def start(self, wait_for: str = "Ctrl-C stops it", timeout: float = 60.0) -> ServeProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flowtracker", "serve", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=ROOT,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            if wait_for in line:
                return self
        self.stop(signal.SIGKILL)
        raise AssertionError(f"serve did not start: {self.lines} {self.stderr}")

    def value(self, label: str) -> str:
        """The text after ``label`` on the start-up line that has it."""
        for line in self.lines:
            if label in line:
                return line.split(label, 1)[1].strip()
        raise KeyError(label)

    @property
    def port(self) -> int:
        return int(self.value("OTLP/HTTP").rsplit(":", 1)[1].split("/", 1)[0])

    def stop(self, signum: int = signal.SIGINT, timeout: float = 30.0) -> tuple[int, float]:
        """Sends ``signum``; the exit code and the seconds it took to exit (stdout and stderr read)."""
        assert self.process is not None
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signum)
        out, self.stderr = self.process.communicate(timeout=timeout)
        self.lines += out.splitlines()
        return self.process.returncode, time.monotonic() - started


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)
