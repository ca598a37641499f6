"""The fault scenarios: real servers and processes on loopback, each one row of the table.

Server scenarios (:class:`ServerCase`) start a server on a free port with
an app from :mod:`._apps`, wait until it answers, send numbered requests
(:mod:`._client`), stop it with a signal (during the load or after it), and
count what arrived against what was answered and what the tracker counted.
Script scenarios run :mod:`._scripts`. Every wait has a bound: a server
that does not start, answer or exit in time is killed (its whole process
group) and its row says ``HUNG``.

Example:
    >>> [scenario.name for scenario in SCENARIOS][:2]
    ['mw-uvicorn', 'mw-gunicorn-uvicorn']
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from .._load import ROOT, free_port
from ._client import Action, send_load, wait_answering
from ._count import Counted, Written, read_json_lines, read_side_files
from ._procs import Process
from ._row import Row, combine, judge, skipped
from ._targets import FileTarget, KafkaTarget, ReceiverTarget, Target

APPS = "benchmarks.faults._apps"
#: How long the exporter's peer stays down in the outage scenarios.
OUTAGE_SECONDS = 2.0
#: gunicorn's ``--graceful-timeout``: after it the master SIGKILLs the workers
#: still running. Its default (30 s) is longer than the exit bound: with
#: uvicorn's worker, gunicorn's SIGINT (SIGQUIT to the workers) never stops
#: them (Kludex/uvicorn-worker#2), so the kill is what ends them.
GRACEFUL_TIMEOUT = 5
#: Boots of the --preload scenarios. Whether a fork lands while the tracker
#: thread started by the import-time span holds the import lock (importing
#: anyio's backend: the worker then hangs for good in that import) is a race,
#: won in 1 to 3 of 5 boots on this machine.
PRELOAD_BOOTS = 4


@dataclasses.dataclass(frozen=True)
class Settings:
    """How big and how patient a run is (``--quick`` makes it smaller)."""

    quick: bool = False

    def count(self, full: int) -> int:
        """Requests (traces) for a scenario whose full run sends ``full``."""
        return max(200, full // 5) if self.quick else full

    @property
    def boot_bound(self) -> float:
        return 10.0 if self.quick else 12.0

    @property
    def load_bound(self) -> float:
        return 20.0 if self.quick else 40.0

    @property
    def exit_bound(self) -> float:
        return 8.0 if self.quick else 12.0


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A named, bounded way to cause one fault."""

    name: str
    group: str
    about: str
    run: Callable[[Settings], Awaitable[Row]]
    #: In the default run and in its group's; else only when named.
    default: bool = True
    #: Boots of the server in one run (each within the bounds).
    boots: int = 1


# -- server scenarios ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ServerCase:
    """A server, an app configuration, a load and a way to stop it.

    Attributes:
        server: ``uvicorn``, ``gunicorn-uvicorn`` (uvicorn's gunicorn worker),
            ``gunicorn-aiohttp`` (``aiohttp.GunicornWebWorker``) or ``aiohttp``
            (``web.run_app``).
        mode: ``zero`` (the middleware alone, ``FLOWTRACKER_EXPORTERS``),
            ``tracker`` (an explicit ``Tracker``) or ``bare`` (aiohttp only: that
            tracker given to the bare ``middleware(tracker)``, no startup hook).
        requests: Requests of a full run.
        stop: The stop signal.
        under_load: Send it when half the requests were answered (else after all).
        workers: Worker processes (1: the server's own single process).
        preload: ``gunicorn --preload``, with a span at import time in the app module.
        lifespan_off: ``uvicorn --lifespan off``.
        sink: ``file`` (JSON Lines), ``webhook`` or ``otlp`` (to a receiver), ``kafka``.
        outage: The sink's peer goes down at 30% of the load and back 2 s later.
        hostile_every: Every k-th request carries a non-UTF-8 ``User-Agent`` byte.
        full_disk: The file is on a small tmpfs, full at the start, freed at 50%.
        latency: Seconds the receiver takes to answer each POST (``webhook``, ``otlp``).
        boots: Separate boots, the requests shared out (a race shows in some boots only).
    """

    server: str
    mode: str
    requests: int = 3000
    stop: signal.Signals = signal.SIGTERM
    under_load: bool = False
    workers: int = 1
    preload: bool = False
    lifespan_off: bool = False
    sink: str = "file"
    outage: bool = False
    hostile_every: int = 0
    full_disk: bool = False
    latency: float = 0.0
    boots: int = 1

    def command(self, port: int) -> list[str]:
        python = sys.executable
        if self.server == "uvicorn":
            command = [python, "-m", "uvicorn", f"{APPS}:asgi_app", "--host", "127.0.0.1",
                       "--port", str(port), "--log-level", "warning", "--no-access-log"]  # fmt: skip
            if self.workers > 1:
                command += ["--workers", str(self.workers)]
            if self.lifespan_off:
                command += ["--lifespan", "off"]
            return command
        if self.server == "aiohttp":
            return [python, "-m", APPS, str(port)]
        app, worker = {
            "gunicorn-uvicorn": ("asgi_app", "uvicorn_worker.UvicornWorker"),
            "gunicorn-aiohttp": ("aiohttp_app", "aiohttp.GunicornWebWorker"),
        }[self.server]
        command = [python, "-m", "gunicorn", f"{APPS}:{app}", "-k", worker, "-w", str(self.workers),
                   "-b", f"127.0.0.1:{port}", "--log-level", "warning",
                   "--graceful-timeout", str(GRACEFUL_TIMEOUT)]  # fmt: skip
        return [*command, "--preload"] if self.preload else command

    @property
    def stats_source(self) -> str:
        """Which tracker the app's side file reports (see ``_report``).

        With no tracker given, both middlewares report to the default
        tracker, with or without a startup hook.
        """
        return "default" if self.mode == "zero" else "own"


def _environment(case: ServerCase, exporter: str, stats: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FAULTS_MODE": case.mode,
        "FAULTS_EXPORTER": exporter,
        "FAULTS_STATS_DIR": str(stats),
        "FAULTS_STATS_SOURCE": case.stats_source,
        # Zero configuration reads the environment; an explicit tracker must not
        # fall back to it (a trace it missed would still arrive and hide the loss).
        "FLOWTRACKER_EXPORTERS": exporter if case.mode == "zero" else "none",
    }
    if case.preload:
        env["FAULTS_IMPORT_SPAN"] = "1"
    if case.hostile_every:
        env["FAULTS_RECORD_HEADERS"] = "User-Agent"
    return env


@contextlib.contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path | None]:
    """A real tmpfs of ``size`` mounted at ``folder`` (None where mounting is not allowed)."""
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, check=False
    )
    try:
        yield folder if mounted.returncode == 0 else None
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


def fill(folder: Path, slack: int) -> Path:
    """Fills the file system of ``folder`` but ``slack`` bytes; the filler file."""
    filler = folder / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb") as out:
        try:
            while True:
                out.write(chunk)
                out.flush()
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - slack))
    return filler


async def run_server_case(name: str, case: ServerCase, settings: Settings) -> Row:
    """Runs ``case`` (``case.boots`` times, once with ``--quick``; the requests shared out); its row."""
    boots = 1 if settings.quick else case.boots
    rows = []
    for _ in range(boots):
        rows.append(await run_server_once(name, case, settings, settings.count(case.requests) // boots))
    return combine(name, rows)


async def run_server_once(name: str, case: ServerCase, settings: Settings, requests: int) -> Row:
    """Boots ``case``'s server once and sends it ``requests``; its row."""
    work = Path(tempfile.mkdtemp(prefix=f"faults-{name}-"))
    stats = work / "stats"
    stats.mkdir()
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        folder = work
        if case.full_disk:
            disk = stack.enter_context(small_disk(work / "disk", "4m"))
            if disk is None:
                return skipped(name, "cannot mount a tmpfs here (needs root)")
            folder = disk
        target: Target
        if case.sink == "file":
            target = FileTarget(folder / "traces.jsonl")
        elif case.sink == "kafka":
            target = KafkaTarget()
            stack.callback(target.close)
        else:
            target = ReceiverTarget(case.sink, case.latency)
        port = free_port()
        env = _environment(case, target.url, stats)
        process = Process(case.command(port), env=env, log=work / "server.log")
        try:
            await target.up()
            return await _drive(name, case, settings, process, port, target, stats, requests)
        finally:
            process.kill()
            await target.down()
    raise AssertionError("unreachable")


async def _drive(
    name: str,
    case: ServerCase,
    settings: Settings,
    process: Process,
    port: int,
    target: Target,
    stats: Path,
    total: int,
) -> Row:
    """Boot, load (with the case's events), stop, count."""
    process.start()
    if not await wait_answering(port, "/ready", settings.boot_bound):
        code = process.returncode
        log = process.log_tail()
        if code is None:
            row = Row(name, verdict=f"HUNG: not answering after {settings.boot_bound:.0f} s")
        elif "No module named" in log:  # gunicorn or a worker class not installed
            row = skipped(name, log.rsplit("No module named", 1)[1].strip(" '|")[:40] + " not installed")
        else:
            row = Row(name, verdict=f"FAIL: exited ({code}) at boot")
        row.notes.append(log)
        return row
    milestones: dict[float, Action] = {}
    if case.under_load:
        milestones[0.5] = lambda: process.stop(case.stop)
    if case.outage:

        async def outage() -> None:
            await target.down()
            await asyncio.sleep(OUTAGE_SECONDS)
            await target.up()

        milestones[0.3] = outage
    if case.full_disk and isinstance(target, FileTarget):
        filler = fill(target.path.parent, slack=16 * 1024)
        milestones[0.5] = filler.unlink
    load = await send_load(
        port, total, deadline=settings.load_bound, milestones=milestones, hostile_every=case.hostile_every
    )
    await target.up()  # an outage may outlast a short load
    process.stop(case.stop)
    shutdown = await process.wait_exit(settings.exit_bound)
    problems = []
    notes = [f"client errors: {dict(load.errors)}"] if load.errors else []
    hung = None
    if load.timed_out:
        hung = f"{total - len(load.answered)} requests unanswered after {settings.load_bound:.0f} s"
    elif shutdown is None:
        hung = f"no exit {settings.exit_bound:.0f} s after {case.stop.name}"
    if hung is not None:
        notes.append(f"{len(process.group_members())} processes of the server still running, killed")
    elif left := await process.leftovers():
        problems.append(f"{len(left)} processes left running after the main one exited")
        notes.append(f"left running: {[command.split(' -')[0] for command in left]}")
    if process.returncode == -case.stop:
        notes.append(f"died by {case.stop.name} (the server re-raised it): no exit hook ran")
    elif process.returncode not in (0, None) or (hung is not None and process.log_tail()):
        notes.append(f"exit code {process.returncode}; log: {process.log_tail() or '(empty)'}")
    killed = process.log_text().count("was sent SIGKILL")
    if killed:
        notes.append(f"gunicorn SIGKILLed {killed} worker(s) still up {GRACEFUL_TIMEOUT} s after the stop")
    if case.hostile_every:
        notes.append(f"{load.sent // case.hostile_every} requests carried the byte \\xff")
    process.kill()  # a hung server must not write while its output is counted
    return judge(
        name,
        sent=load.sent,
        answered=load.answered,
        written=await target.read(len(load.answered)),
        counted=read_side_files(stats),
        shutdown_s=shutdown,
        all_answered=not case.under_load,
        must_deliver=not case.full_disk,
        hung=hung,
        problems=problems,
        notes=notes,
    )


# -- script scenarios ------------------------------------------------------------


async def run_script(name: str, kind: str, full: int, settings: Settings) -> Row:
    """Runs ``_scripts <kind> N``, its traces to a JSON Lines file; its row (the same N with ``--quick``).

    ``long-lived``: the numbered things are the children of one root, so they
    are counted span by span across the follow-up records, and the root must
    arrive once, unfinished, with every follow-up counted in ``traces_follow_up``.
    """
    long_lived = kind == "long-lived"
    work = Path(tempfile.mkdtemp(prefix=f"faults-{name}-"))
    try:
        traces = work / "traces.jsonl"
        stats = work / "stats"
        stats.mkdir()
        count = full  # a second at most either way, and the thread case needs more than max_queue
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "FAULTS_EXPORTER": f"file://{traces}",
            "FAULTS_STATS_DIR": str(stats),
            "FLOWTRACKER_EXPORTERS": f"file://{traces}" if kind == "sync" else "none",
        }
        command = [sys.executable, "-m", "benchmarks.faults._scripts", kind, str(count)]
        process = Process(command, env=env, log=work / "script.log")
        process.start()
        try:
            code = await process.wait(settings.load_bound + settings.exit_bound)
        finally:
            process.kill()
        counted = read_side_files(stats)
        written = read_json_lines(traces, by_span=long_lived)
        notes = [f"peak RSS {counted.peak_rss_mb:.0f} MB"]
        problems = [] if code in (0, None) else [f"exit code {code}"]
        if code != 0:
            notes.append(f"exit code {code}; log: {process.log_tail()}")
        if long_lived:
            problems += _long_lived_problems(written, counted)
            found = f"{written.unfinished} record(s) with spans unfinished, {written.follow_ups} follow-ups"
            notes.append(found)
        return judge(
            name,
            sent=count,
            answered=set(range(count)),
            written=written,
            counted=counted,
            shutdown_s=None,
            must_deliver=long_lived,
            one_record_each=not long_lived,
            hung=None if code is not None else f"still running after {settings.load_bound:.0f} s",
            problems=problems,
            notes=notes,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _long_lived_problems(written: Written, counted: Counted) -> list[str]:
    """What the long-lived root's records must show: the root once, unfinished; follow-ups counted."""
    found = []
    if written.records - written.follow_ups != 1:
        found.append(f"{written.records - written.follow_ups} records not marked follow-up (1 expected)")
    if not written.unfinished:
        found.append("no record exported the root unfinished")
    if counted.final and counted.follow_ups != written.follow_ups:
        found.append(f"stats: traces_follow_up {counted.follow_ups}, follow-ups arrived {written.follow_ups}")
    return found


# -- the list --------------------------------------------------------------------


def _server(name: str, group: str, about: str, case: ServerCase, *, default: bool = True) -> Scenario:
    async def run(settings: Settings) -> Row:
        return await run_server_case(name, case, settings)

    return Scenario(name, group, about, run, default, case.boots)


def _script(name: str, about: str, kind: str, full: int, group: str = "threads") -> Scenario:
    async def run(settings: Settings) -> Row:
        return await run_script(name, kind, full, settings)

    return Scenario(name, group, about, run)


#: The signal scenarios export to a webhook receiver that answers after this
#: long, as a collector across a network does: traces still queued when a
#: process dies show as lost, where a local file would often be quick enough
#: to hide it.
SIGNAL_LATENCY = 0.05


def _signal_case(server: str, mode: str, stop: signal.Signals, **options: Any) -> ServerCase:
    """A signal scenario's case: ``stop`` at half of 2,000 requests, traces to a slow webhook."""
    return ServerCase(server, mode, requests=2000, stop=stop, under_load=True, sink="webhook",
                      latency=SIGNAL_LATENCY, **options)  # fmt: skip


def _signal_scenarios() -> list[Scenario]:
    found = []
    stops = {"term": signal.SIGTERM, "int": signal.SIGINT}
    under = "at half of 2,000 requests; webhook, 50 ms"
    for server in ("uvicorn", "aiohttp"):
        for short, stop in stops.items():
            for mode in ("zero", "tracker"):
                about = f"{server} ({mode}): {stop.name} {under}"
                found.append(_server(f"sig-{server}-{short}-{mode}", "signals", about,
                                     _signal_case(server, mode, stop)))  # fmt: skip
    for short, stop in stops.items():
        about = f"web.run_app, bare middleware(tracker), no startup hook: {stop.name} {under}"
        case = _signal_case("aiohttp", "bare", stop)
        found.append(_server(f"sig-aiohttp-{short}-bare", "signals", about, case))
    # gunicorn passes SIGTERM on to its workers as SIGTERM, SIGINT (its quick
    # shutdown) as SIGQUIT; each worker class handles those in its own way.
    for server, mode, worker in (("gunicorn-uvicorn", "zero", "UvicornWorker"),
                                 ("gunicorn-aiohttp", "tracker", "GunicornWebWorker")):  # fmt: skip
        for short, stop in stops.items():
            about = f"gunicorn -k {worker} -w 2 ({mode}): {stop.name} to the master {under}"
            found.append(_server(f"sig-{server}-{short}", "signals", about,
                                 _signal_case(server, mode, stop, workers=2)))  # fmt: skip
    # The first rows of the suite, named before SIGINT was added: SIGTERM.
    for prefix, stop in (("lifespan-off", signal.SIGTERM), ("lifespan-off-int", signal.SIGINT)):
        for mode in ("zero", "tracker"):
            about = f"uvicorn --lifespan off ({mode}): {stop.name} {under}"
            found.append(_server(f"{prefix}-{mode}", "signals", about,
                                 _signal_case("uvicorn", mode, stop, lifespan_off=True)))  # fmt: skip
    return found


SCENARIOS: tuple[Scenario, ...] = (
    _server("mw-uvicorn", "multi-worker", "uvicorn --workers 2 (tracker), 3,000 requests, SIGTERM",
            ServerCase("uvicorn", "tracker", workers=2)),
    _server("mw-gunicorn-uvicorn", "multi-worker", "gunicorn -k UvicornWorker -w 2 (zero), SIGTERM",
            ServerCase("gunicorn-uvicorn", "zero", workers=2)),
    _server("mw-gunicorn-uvicorn-preload", "multi-worker",
            "the same with --preload and a span at import time; 4 boots of 750 requests",
            ServerCase("gunicorn-uvicorn", "zero", workers=2, preload=True, boots=PRELOAD_BOOTS)),
    _server("mw-gunicorn-aiohttp", "multi-worker", "gunicorn -k aiohttp.GunicornWebWorker -w 2 (tracker)",
            ServerCase("gunicorn-aiohttp", "tracker", workers=2)),
    _server("mw-gunicorn-aiohttp-preload", "multi-worker",
            "the same (zero: the bare middleware) with --preload and a span at import time; 4 boots",
            ServerCase("gunicorn-aiohttp", "zero", workers=2, preload=True, boots=PRELOAD_BOOTS)),
    *_signal_scenarios(),
    _server("outage-webhook", "outage", "aiohttp -> webhook receiver down at 30% for 2 s",
            ServerCase("aiohttp", "tracker", sink="webhook", outage=True)),
    _server("outage-otlp", "outage", "uvicorn -> OTLP/HTTP (JSON) receiver down at 30% for 2 s",
            ServerCase("uvicorn", "tracker", sink="otlp", outage=True)),
    # Only when named: noida-db itself now and then loses records it acknowledged
    # across a restart (40 of 6,000 in one of three runs of a bare aiokafka
    # producer), so a loss in this row does not measure flowtracker.
    _server("outage-kafka", "outage",
            "aiohttp -> Kafka (noida-db) broker stopped at 30% for 2 s (only when named: the broker"
            " itself may lose acknowledged records across a restart)",
            ServerCase("aiohttp", "tracker", sink="kafka", outage=True), default=False),
    _server("hostile-header", "hostile", "aiohttp, record_headers=User-Agent; 1 in 50 sends byte \\xff",
            ServerCase("aiohttp", "tracker", requests=2000, hostile_every=50)),
    _server("full-disk", "disk", "aiohttp -> JSONL on a 4 MB tmpfs, full at start, freed at 50%",
            ServerCase("aiohttp", "tracker", requests=2000, full_disk=True)),
    _script("threads-pool16", "10,000 traces ended in a 16-thread pool while the loop is busy",
            "threads", 10_000),
    _script("sync-script", "20,000 traces in a plain loop (zero config), then exit", "sync", 20_000),
    _script("long-lived-root",
            "a root open over 1.2 s (5 x max_trace_age, 0.25 s here); 600 children, 1 per 2 ms",
            "long-lived", 600, group="long-lived"),
)  # fmt: skip


def select(names: list[str]) -> list[Scenario]:
    """Scenarios by name, or by group (``signals``: its default ones); the default run for none.

    Raises:
        ValueError: an unknown name, with the known ones.
    """
    if not names:
        return [s for s in SCENARIOS if s.default]
    chosen = [s for s in SCENARIOS if s.name in names or (s.group in names and s.default)]
    known = {s.name for s in SCENARIOS} | {s.group for s in SCENARIOS}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"unknown scenario {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return chosen


async def run_bounded(scenario: Scenario, settings: Settings) -> Row:
    """Runs one scenario within its overall bound; a scenario that overruns is cut and HUNG."""
    bound = (settings.boot_bound + settings.load_bound + 2 * settings.exit_bound + 10) * scenario.boots
    try:
        return await asyncio.wait_for(scenario.run(settings), bound)
    except asyncio.TimeoutError:
        return Row(scenario.name, verdict=f"HUNG: scenario cut at {bound:.0f} s")
