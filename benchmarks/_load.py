"""Runs an app from ``_servers`` in a pinned subprocess and loads it with wrk.

The server runs on one CPU and wrk on another (``taskset``), so the two never
compete for a core; on a 2-CPU machine that is CPU 0 for the server and 1 for
wrk. Each run: start the server, wait until it accepts connections, a short
warm-up, the measured run (``wrk --latency``), then SIGINT and wait.

Example:
    >>> from benchmarks._load import parse_wrk
    >>> parse_wrk("Requests/sec:  100.5\\n     99%    1.50ms\\n")["rps"]
    100.5
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WRK = shutil.which("wrk") or "/usr/bin/wrk"


@dataclasses.dataclass
class LoadResult:
    """One measured wrk run."""

    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int
    gc: dict[str, Any] | None = None
    #: The server process's CPU time (all threads) per request during the
    #: measured run, in µs (NaN where /proc is missing): its capacity, which a
    #: shared machine's noise moves far less than the request rate.
    cpu_us_per_request: float = float("nan")


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}[unit]


def parse_wrk(text: str) -> dict[str, Any]:
    """Requests/s, latency percentiles (ms), request and error counts from wrk's output."""
    out: dict[str, Any] = {"rps": float("nan"), "requests": 0, "errors": 0}
    match = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if match:
        out["rps"] = float(match.group(1))
    for percent in ("50", "90", "99"):
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.MULTILINE)
        out[f"p{percent}_ms"] = _ms(*match.groups()) if match else float("nan")
    match = re.search(r"(\d+) requests in", text)
    if match:
        out["requests"] = int(match.group(1))
    match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if match:
        out["errors"] += int(match.group(1))
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if match:
        out["errors"] += sum(int(group) for group in match.groups())
    return out


def cpus() -> tuple[str, str]:
    """(server CPU, wrk CPU) as taskset lists."""
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    if len(available) < 2:
        return str(available[0]), str(available[0])
    return str(available[0]), ",".join(str(cpu) for cpu in available[1:])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_ready(process: subprocess.Popen[bytes], port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"server exited with {process.returncode}: {stderr.strip()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start listening in time")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) the process ``pid`` used so far; NaN without /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def _serving(command: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    """Runs ``command`` (a server on ``port``) pinned to the server CPU until the block ends.

    Yields once it accepts connections; stopped with SIGINT (killed if it
    does not exit within 15 s).
    """
    if shutil.which("taskset"):
        command = ["taskset", "-c", cpus()[0], *command]
    env = {**os.environ, "FLOWTRACKER_EXPORTERS": "none", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_ready(process, port)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr is not None:
            process.stderr.close()


@contextmanager
def peer(module: str, *args: str) -> Iterator[int]:
    """``python -m <module> <args...> PORT`` in a subprocess pinned away from this one; yields PORT."""
    port = free_port()
    with _serving([sys.executable, "-m", module, *args, str(port)], port):
        yield port


def wrk(port: int, seconds: int, connections: int, cpu: str) -> dict[str, Any]:
    """Runs wrk (one thread) against ``http://127.0.0.1:port/``; its parsed output."""
    command = [WRK, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}/"]
    if shutil.which("taskset"):
        command = ["taskset", "-c", cpu, *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr.strip() or done.stdout.strip()}")
    return parse_wrk(done.stdout)


def run_server_load(
    kind: str,
    variant: str,
    *,
    seconds: int,
    warmup: int,
    connections: int,
    no_gc: bool = False,
    gc_stats: bool = False,
    profile: Path | None = None,
    extra: tuple[str, ...] = (),
) -> LoadResult:
    """Starts ``kind``/``variant`` pinned, warms it up, measures one wrk run, stops it."""
    wrk_cpu = cpus()[1]
    port = free_port()
    stats_file = Path(tempfile.mkstemp(prefix="ft-gc-", suffix=".json")[1]) if gc_stats else None
    command = [sys.executable, "-m", "benchmarks._servers", kind, variant, str(port)]
    if no_gc:
        command.append("--no-gc")
    if stats_file is not None:
        command += ["--gc-stats", str(stats_file)]
    if profile is not None:
        command += ["--profile", str(profile)]
    command += list(extra)
    with _serving(command, port) as process:
        if warmup:
            wrk(port, warmup, connections, wrk_cpu)
        used = cpu_seconds(process.pid)  # taskset execs the server: same pid
        parsed = wrk(port, seconds, connections, wrk_cpu)
        used = cpu_seconds(process.pid) - used
    gc_info = None
    if stats_file is not None:
        try:
            gc_info = json.loads(stats_file.read_text() or "null")
        finally:
            stats_file.unlink(missing_ok=True)
    return LoadResult(
        rps=parsed["rps"],
        p50_ms=parsed["p50_ms"],
        p90_ms=parsed["p90_ms"],
        p99_ms=parsed["p99_ms"],
        requests=parsed["requests"],
        errors=parsed["errors"],
        gc=gc_info,
        cpu_us_per_request=used * 1e6 / parsed["requests"] if parsed["requests"] else float("nan"),
    )
