"""``flowtracker serve``: the process. Loads FILEs, listens, prints where, stops cleanly.

Start-up prints the page URL, both OTLP endpoints, the two lines that point
an app at it and where the store is. A non-loopback ``--host`` adds a warning
on stderr. SIGINT and SIGTERM stop it: the ports close, open live feeds end,
requests under way finish (their spans committed; an answered request is a
stored one) and the store is closed, within a few seconds.

Example:
    >>> Options(files=[], port=0).page_url("127.0.0.1", 4318)
    'http://127.0.0.1:4318/'
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import IO, Any

__all__ = ("Options", "ServeError", "Server", "default_db_path", "grpc_available", "run")

#: Seconds requests under way get to finish at shutdown.
SHUTDOWN_GRACE = 3.0


class ServeError(Exception):
    """Ends ``serve`` with a one-line message; ``kind`` picks the exit code in the CLI.

    Kinds: ``"port"`` (in use: exit 2), ``"input"`` (a FILE cannot be read: 3),
    ``"store"`` (the store is refused: 4), ``"missing"`` (a dependency: 5).
    """

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Options:
    """The command line's options (``flowtracker serve --help``)."""

    files: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 4318
    grpc_port: int = 4317
    grpc: bool = True
    db: str | None = None
    max_traces: int = 10_000
    open_browser: bool = False

    def page_url(self, host: str, port: int) -> str:
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
        shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
        return f"http://{shown}:{port}/"


def default_db_path() -> str:
    """The store file when ``--db`` is not given, in the user's data directory.

    ``$XDG_DATA_HOME/flowtracker/serve.db`` (``~/.local/share/...``) on Linux,
    ``~/Library/Application Support/flowtracker/serve.db`` on macOS,
    ``%LOCALAPPDATA%\\flowtracker\\serve.db`` on Windows.
    """
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~\\AppData\\Local")
    elif sys.platform == "darwin":
        base = os.path.expanduser("~/Library/Application Support")
    else:
        base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(base, "flowtracker", "serve.db")


def grpc_available() -> bool:
    """Whether the ``grpc`` extra (grpcio) is installed."""
    try:
        import grpc  # noqa: F401
    except ImportError:
        return False
    return True


def run(options: Options, out: IO[str] | None = None) -> None:
    """Serves until SIGINT or SIGTERM.

    Raises:
        ServeError: a port in use, an unreadable FILE, a refused store, a missing dependency.
    """
    try:
        import aiohttp  # noqa: F401

        from .._wire.otlp_proto import proto

        proto()
    except ImportError as error:
        raise ServeError(
            f"serve needs aiohttp and opentelemetry-proto ({error}); pip install 'flowtracker[serve]'",
            "missing",
        ) from None
    asyncio.run(_serve_until_signal(options, out or sys.stdout))


async def _serve_until_signal(options: Options, out: IO[str]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with Server(options, out) as server:
            if options.open_browser:
                import webbrowser

                await loop.run_in_executor(None, webbrowser.open, server.page_url)
            await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    print(f"flowtracker serve: stopped; {server.store.trace_count} traces in the store", file=out, flush=True)


class Server:
    """A running ``flowtracker serve``, as an async context manager (the command, and tests).

    Entering opens the store, loads the FILEs, starts both listeners and
    prints the start-up lines; leaving stops the listeners (calls under way
    get :data:`SHUTDOWN_GRACE` seconds), ends the live feeds, writes what is
    queued and closes the store.

    Attributes:
        port: The HTTP port bound (``--port 0`` picks a free one).
        grpc_port: The gRPC port bound, or ``None`` when gRPC is off.
        page_url: Where the page is.

    Raises:
        ServeError: on entering, as :func:`run`.
    """

    def __init__(self, options: Options, out: IO[str] | None = None) -> None:
        from .feed import Hub
        from .store import Store

        self.options = options
        self.out = out or sys.stdout
        self.hub = Hub()
        self.store = Store(
            options.db or default_db_path(),
            max_traces=options.max_traces,
            on_commit=self.hub.publish_threadsafe,
        )
        self.port = options.port
        self.grpc_port: int | None = None
        self.page_url = ""
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Server:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _start(self) -> None:
        from aiohttp import web

        from .app import build_app, is_loopback
        from .ingest import Ingest
        from .schema import StoreRefused

        options, stack = self.options, self._stack
        try:
            self.store.open()
        except (StoreRefused, OSError) as error:
            raise ServeError(f"cannot use the store: {error}", "store") from None
        stack.callback(self.store.close)
        self.hub.bind(asyncio.get_running_loop())
        ingest = Ingest(self.store)
        stack.callback(ingest.close)
        stack.callback(self.hub.close)  # (callbacks run last to first: feeds end before the listeners stop)
        if options.files:
            await _load(options.files, ingest, self.out)
        app = build_app(ingest, self.store, self.hub, loopback_only=is_loopback(options.host))
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, auto_decompress=False, shutdown_timeout=SHUTDOWN_GRACE
        )
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        try:
            await web.TCPSite(runner, options.host, options.port).start()
        except OSError as error:
            raise _listen_error(options.host, options.port, error, "--port") from None
        self.port = _bound_port(runner, options.port)
        self.page_url = options.page_url(options.host, self.port)
        grpc_line = _grpc_line(options)
        if grpc_line is None:
            from .receiver import GRPCReceiver

            try:
                receiver = GRPCReceiver(ingest, options.host, options.grpc_port)
            except OSError as error:
                raise _listen_error(options.host, options.grpc_port, error, "--grpc-port") from None
            await receiver.start()
            stack.push_async_callback(receiver.stop, SHUTDOWN_GRACE)
            self.grpc_port = receiver.port
            grpc_line = _netloc(_shown_host(options.host), receiver.port)
        _announce(options, self.port, grpc_line, self.store, self.out)


async def _load(files: list[str], ingest: Any, out: IO[str]) -> None:
    from ..viz import InputError, read_traces

    loop = asyncio.get_running_loop()
    try:
        result = await loop.run_in_executor(None, read_traces, files)
    except InputError as error:
        raise ServeError(str(error), "input") from None
    accepted = await ingest.traces(result.traces)
    note = f"; {accepted.rejected} malformed spans left out" if accepted.rejected else ""
    skipped = result.skipped + result.invalid
    note += f"; {skipped} other lines skipped" if skipped else ""
    print(
        f"flowtracker serve: loaded {accepted.stored} spans of {len(result.traces)} trace records "
        f"from {len(files)} file{'s' if len(files) != 1 else ''}{note}",
        file=out,
        flush=True,
    )


def _grpc_line(options: Options) -> str | None:
    """What the OTLP/gRPC line says when gRPC is off; ``None`` when it is on."""
    if not options.grpc:
        return "off (--no-grpc)"
    if not grpc_available():
        return "off: gRPC needs grpcio, pip install 'flowtracker[grpc]'; OTLP/HTTP works without it"
    return None


def _announce(options: Options, port: int, grpc_line: str, store: Any, out: IO[str]) -> None:
    from .app import is_loopback

    http = f"http://{_netloc(_shown_host(options.host), port)}"
    where = (
        "temporary, deleted at exit (--db :memory:)"
        if store.path == ":memory:"
        else os.path.abspath(store.path)
    )
    lines = [
        f"flowtracker serve: watch traces live at {options.page_url(options.host, port)}",
        f"  OTLP/HTTP  {http}/v1/traces",
        f"  OTLP/gRPC  {grpc_line}",
        "  point an app at it with one of:",
        f"    FLOWTRACKER_EXPORTERS=otlp+http://{_netloc(_shown_host(options.host), port)}",
        f"    OTEL_EXPORTER_OTLP_ENDPOINT={http}",
        f"  store: {where} (newest {options.max_traces:,} traces kept; {store.trace_count:,} now)",
        "  Ctrl-C stops it",
    ]
    print("\n".join(lines), file=out, flush=True)
    if not is_loopback(options.host):
        print(
            f"flowtracker serve: warning: listening on {options.host}: anyone who can reach this port "
            "can read the traces and send fake ones",
            file=sys.stderr,
            flush=True,
        )


def _shown_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bound_port(runner: Any, asked: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return asked


def _listen_error(host: str, port: int, error: OSError, option: str) -> ServeError:
    if error.errno == errno.EADDRINUSE or "in use" in str(error).lower() or "bind" in str(error).lower():
        reason = "the port is in use (another flowtracker serve, or a collector?)"
    else:
        reason = error.strerror or str(error)
    return ServeError(f"cannot listen on {_netloc(host, port)}: {reason}; pick another with {option}", "port")
