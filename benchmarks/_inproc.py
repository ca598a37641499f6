"""An in-process HTTP/1.1 driver: the real server protocols, fed by a client in the same process.

The servers are the real ones, built from the apps of ``_servers``:

* aiohttp: the ``RequestHandler`` made by the app's handler factory
  (``web.AppRunner(app).server``, as ``web.run_app`` makes it), with the app's
  startup and cleanup signals;
* ASGI: the protocol class uvicorn itself picks (``uvicorn.Config``'s
  ``http="auto"``: httptools when installed, else h11), with uvicorn's lifespan
  and the same options as the ``request`` suite's server (``UVICORN_OPTIONS``).

The client keeps ``connections`` HTTP/1.1 keep-alive connections with one
request in flight on each (as wrk does) and parses the responses it gets
back (``Content-Length`` or chunked bodies). Two transports:

* ``memory``: an ``asyncio.Transport`` whose ``write`` hands the bytes to the
  client; each request reaches the server's ``data_received`` from a loop
  callback, as a socket read would. No system call: the clock sees the
  server, its tracer and a small fixed client cost, which is what lets a
  same-run comparison resolve a few percent.
* ``socketpair``: the same over ``socket.socketpair()``, with asyncio's own
  socket transports on both ends (``connect_accepted_socket`` /
  ``create_connection``).

:func:`run_rounds` serves every variant side by side on one fresh event
loop and alternates between them in blocks of requests (order rotated per
round): on a shared machine whose speed changes from one second to the next,
the variants of one round see the same machine. Each block is timed in
process CPU time and wall time, until its traces reached the exporter, with
each request's latency (wall).

Example:
    >>> from benchmarks._inproc import Responses
    >>> Responses().feed(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")
    [200]
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import cProfile
import dataclasses
import functools
import gc
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from email.utils import formatdate
from typing import Any

from ._harness import shuffled_rounds
from ._servers import Pipeline, build_aiohttp, build_asgi

__all__ = (
    "ALIASES", "KINDS", "REQUEST", "TRANSPORTS", "Block", "Responses", "Rounds", "app_of", "run_rounds",
)

#: What wrk sends (``GET /`` with a Host header), keep-alive by default in HTTP/1.1.
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
KINDS = ("aiohttp", "asgi")
TRANSPORTS = ("memory", "socketpair")

ProtocolFactory = Callable[[], asyncio.Protocol]


# -- the client's side -----------------------------------------------------------


class Responses:
    """Splits a byte stream into HTTP/1.1 responses; ``feed`` returns the statuses completed.

    Bodies are delimited by ``Content-Length`` or chunked transfer coding (what
    aiohttp and uvicorn send); a response with neither has no body here, since
    a keep-alive server never ends a body by closing.
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[int]:
        buffer = self._buffer + data if self._buffer else data
        statuses: list[int] = []
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end].lower()
            start = end + 4
            length = _content_length(head)
            if length is not None:
                stop = start + length if start + length <= len(buffer) else -1
            elif b"\r\ntransfer-encoding: chunked" in head:
                stop = _chunked_end(buffer, start)
            else:
                stop = start
            if stop < 0:  # the body is not all there yet
                break
            statuses.append(int(buffer[9:12]))
            buffer = buffer[stop:]
        self._buffer = buffer
        return statuses


def _content_length(head: bytes) -> int | None:
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        return None
    value_end = head.find(b"\r\n", at + 2)
    return int(head[at + 17 : value_end if value_end >= 0 else len(head)])


def _chunked_end(buffer: bytes, at: int) -> int:
    """Where a chunked body starting at ``at`` ends (-1: not complete yet)."""
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return -1
        size = int(buffer[at:line_end].split(b";", 1)[0], 16)
        at = line_end + 2
        if size == 0:  # then trailers (none here) and an empty line
            if buffer[at : at + 2] == b"\r\n":
                return at + 2
            end = buffer.find(b"\r\n\r\n", at)
            return -1 if end < 0 else end + 4
        at += size + 2
        if at > len(buffer):
            return -1


class _Load:
    """Closed-loop load: each connection sends its next request when its response arrived."""

    def __init__(self, total: int) -> None:
        self.remaining = total
        self.outstanding = 0
        self.latencies: list[int] = []
        self.statuses: dict[int, int] = {}
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if total == 0:
            self.done.set_result(None)

    def next_request(self, connection: _Connection) -> None:
        if self.remaining <= 0:
            return
        self.remaining -= 1
        self.outstanding += 1
        connection.sent_at = time.perf_counter_ns()
        connection.send()

    def received(self, connection: _Connection, data: bytes) -> None:
        for status in connection.responses.feed(data):
            self.latencies.append(time.perf_counter_ns() - connection.sent_at)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.outstanding -= 1
            self.next_request(connection)
        if not self.outstanding and not self.remaining and not self.done.done():
            self.done.set_result(None)


class _Connection:
    """One client connection: sends ``REQUEST``, hands what comes back to the current load."""

    def __init__(self) -> None:
        self.responses = Responses()
        self.sent_at = 0
        self.load: _Load | None = None

    def send(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        """The connection is gone (a server closes one idle past its keep-alive timeout)."""
        raise NotImplementedError

    def deliver(self, data: bytes) -> None:
        if self.load is not None:
            self.load.received(self, data)


# -- transports -------------------------------------------------------------------


class MemoryTransport(asyncio.Transport):
    """The server's end of an in-memory connection: writes go to the client's parser."""

    def __init__(self, protocol: asyncio.Protocol, client: _MemoryConnection, port: int) -> None:
        super().__init__(
            {
                "peername": ("127.0.0.1", port),
                "sockname": ("127.0.0.1", 8080),
                "socket": None,
                "sslcontext": None,
            }
        )
        self._loop = asyncio.get_running_loop()
        # A socket transport's reads run in the context of the connection's set-up,
        # never in the context of the request whose response the client just read
        # (that would make each request's root a child of the previous one).
        self._context = contextvars.copy_context()
        self._protocol = protocol
        self._client = client
        self._closing = False
        self._reading = True
        self._pending: list[bytes] = []

    # What the server calls.
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._closing:
            self._client.deliver(bytes(data))

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._loop.call_soon(self._protocol.connection_lost, None, context=self._context)

    def abort(self) -> None:
        self.close()

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_reading(self) -> bool:
        return self._reading

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        self._reading = True
        for data in self._pending:
            self._loop.call_soon(self._protocol.data_received, data, context=self._context)
        self._pending.clear()

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol  # type: ignore[assignment]

    # What the client calls.
    def receive(self, data: bytes) -> None:
        """Bytes from the client, delivered from a loop callback as a socket read would be."""
        if self._closing:
            return
        if self._reading:
            self._loop.call_soon(self._protocol.data_received, data, context=self._context)
        else:
            self._pending.append(data)


class _MemoryConnection(_Connection):
    def __init__(self, factory: ProtocolFactory, port: int) -> None:
        super().__init__()
        protocol = factory()
        self.transport = MemoryTransport(protocol, self, port)
        protocol.connection_made(self.transport)

    def send(self) -> None:
        self.transport.receive(REQUEST)

    def close(self) -> None:
        self.transport.close()

    @property
    def closed(self) -> bool:
        return self.transport.is_closing()


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, connection: _SocketConnection) -> None:
        self.connection = connection

    def data_received(self, data: bytes) -> None:
        self.connection.deliver(data)


class _SocketConnection(_Connection):
    transport: asyncio.Transport

    def send(self) -> None:
        self.transport.write(REQUEST)

    def close(self) -> None:
        self.transport.close()

    @property
    def closed(self) -> bool:
        return self.transport.is_closing()


async def _open(transport: str, factory: ProtocolFactory, index: int) -> _Connection:
    if transport == "memory":
        return _MemoryConnection(factory, 40000 + index)
    loop = asyncio.get_running_loop()
    server_socket, client_socket = socket.socketpair()
    await loop.connect_accepted_socket(factory, server_socket)
    connection = _SocketConnection()
    connection.transport, _ = await loop.create_connection(
        lambda: _ClientProtocol(connection), sock=client_socket
    )
    return connection


#: A block that takes longer than this has lost a response: an error, not a hang.
BLOCK_TIMEOUT = 600.0


async def _run_load(connections: list[_Connection], total: int) -> _Load:
    load = _Load(total)
    for connection in connections:
        connection.load = load
        load.next_request(connection)
    try:
        await asyncio.wait_for(load.done, BLOCK_TIMEOUT)
    except asyncio.TimeoutError:
        raise RuntimeError(
            f"{load.outstanding} of {total} requests got no response within {BLOCK_TIMEOUT:.0f} s"
        ) from None
    return load


def _close_all(connections: list[_Connection]) -> None:
    for connection in connections:
        connection.close()


# -- servers -----------------------------------------------------------------------


#: ``ft-signal`` is this app with a receiver of ``on_response_prepare`` that does
#: nothing: what the signal ``setup()`` writes its headers from costs by itself.
SIGNAL_BASE = "ft-noheader"


async def _prepare_nothing(request: Any, response: Any) -> None:
    return None


@contextlib.asynccontextmanager
async def aiohttp_server(variant: str) -> AsyncIterator[tuple[ProtocolFactory, Pipeline, str]]:
    """The app's handler factory (each call: a ``RequestHandler``), started and cleaned up."""
    from aiohttp import web

    app, pipeline = build_aiohttp(SIGNAL_BASE if variant == "ft-signal" else variant)
    if variant == "ft-signal":
        app.on_response_prepare.append(_prepare_nothing)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)  # as web.run_app(access_log=None)
    await runner.setup()  # on_startup: the tracker starts
    try:
        server = runner.server
        assert server is not None
        yield server, pipeline, "aiohttp.web_protocol.RequestHandler"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def asgi_server(variant: str) -> AsyncIterator[tuple[ProtocolFactory, Pipeline, str]]:
    """A factory of uvicorn's own protocol objects for the app, inside uvicorn's lifespan."""
    import uvicorn
    from uvicorn.server import ServerState

    from ._servers import UVICORN_OPTIONS

    app, pipeline = build_asgi(variant)
    config = uvicorn.Config(app, **UVICORN_OPTIONS)
    config.load()
    lifespan = config.lifespan_class(config)
    await lifespan.startup()
    if lifespan.should_exit:
        raise RuntimeError(f"the ASGI app {variant!r} failed its lifespan startup")
    state = ServerState()
    # What uvicorn's main loop sets every second: the Date and Server headers.
    date = [(b"date", formatdate(usegmt=True).encode())] if config.date_header else []
    state.default_headers = date + config.encoded_headers
    loop = asyncio.get_running_loop()
    protocol_class = config.http_protocol_class

    def factory() -> asyncio.Protocol:
        return protocol_class(  # type: ignore[call-arg]
            config=config, server_state=state, app_state=lifespan.state, _loop=loop
        )

    try:
        yield factory, pipeline, f"{protocol_class.__module__}.{protocol_class.__name__}"
    finally:
        await lifespan.shutdown()


# -- rounds ------------------------------------------------------------------------

#: Variants of this driver beyond the apps of ``_servers``: the name -> (the
#: app, loop monitor on during its blocks). ``control`` is a second instance
#: of ``ft-core`` (two identical variants must measure alike); ``ft-monitor``
#: is ``flowtracker`` with ``ft.monitor_event_loop()`` on while its blocks
#: run, since the monitor watches the whole loop the other variants share.
ALIASES = {"control": ("ft-core", False), "ft-monitor": ("flowtracker", True)}


def app_of(name: str) -> tuple[str, bool]:
    """The ``_servers`` variant that serves ``name`` and whether the loop monitor is on."""
    return ALIASES.get(name, (name, False))


@dataclasses.dataclass
class Block:
    """One timed block of requests of one variant.

    Attributes:
        requests: Requests answered.
        cpu_ns: Process CPU time (all threads) of the requests and the flush.
        wall_ns: Wall time of the same.
        latencies_ns: Each request's latency, send to last byte (wall).
        statuses: HTTP status -> count.
        delivered: Traces that reached the exporter.
        young_gc: Young-generation collections that ran.
    """

    requests: int
    cpu_ns: int
    wall_ns: int
    latencies_ns: list[int]
    statuses: dict[int, int]
    delivered: int
    young_gc: int


@dataclasses.dataclass
class Rounds:
    """Every block of every variant, in round order, and the server protocol that served them."""

    blocks: dict[str, list[Block]]
    protocol: str


@dataclasses.dataclass
class _Live:
    connections: list[_Connection]
    pipeline: Pipeline
    monitored: bool
    reopen: Callable[[int], Awaitable[_Connection]]
    profiler: cProfile.Profile | None = None  # on during the timed blocks only


async def _block(live: _Live, requests: int) -> Block:
    # While the other variants ran, the server may have closed connections idle
    # past its keep-alive timeout (uvicorn's is 5 s): a client reconnects, as wrk does.
    for index, connection in enumerate(live.connections):
        if connection.closed:
            live.connections[index] = await live.reopen(index)
    monitor = None
    if live.monitored:
        import flowtracker as ft

        handle_run = asyncio.Handle._run
        monitor = ft.monitor_event_loop(block_threshold=0.1)  # setup(monitor_loop=True)'s default
    pipeline = live.pipeline
    before = pipeline.delivered()
    collections = gc.get_stats()[0]["collections"]
    if live.profiler is not None:
        live.profiler.enable()
    cpu = time.process_time_ns()
    wall = time.perf_counter_ns()
    load = await _run_load(live.connections, requests)
    await pipeline.flush()
    wall = time.perf_counter_ns() - wall
    cpu = time.process_time_ns() - cpu
    if live.profiler is not None:
        live.profiler.disable()
    young = gc.get_stats()[0]["collections"] - collections
    if monitor is not None:
        monitor.stop()
        if asyncio.Handle._run is not handle_run:
            raise RuntimeError("the loop monitor left asyncio.Handle._run patched: later blocks pay for it")
    return Block(requests, cpu, wall, load.latencies, load.statuses, pipeline.delivered() - before, young)


async def _rounds(
    kind: str,
    names: Sequence[str],
    transport: str,
    block: int,
    rounds: int,
    warmup: int,
    connections: int,
    seed: int,
    profilers: Mapping[str, cProfile.Profile],
) -> Rounds:
    serve = aiohttp_server if kind == "aiohttp" else asgi_server
    protocol = ""
    async with contextlib.AsyncExitStack() as stack:
        live: dict[str, _Live] = {}
        for name in names:
            app, monitored = app_of(name)
            factory, pipeline, protocol = await stack.enter_async_context(serve(app))
            opened = [await _open(transport, factory, index) for index in range(connections)]
            # Closed before the server's cleanup (the stack unwinds last-in first-out),
            # and connection_lost runs before it.
            stack.push_async_callback(asyncio.sleep, 0)
            stack.callback(_close_all, opened)
            live[name] = _Live(opened, pipeline, monitored, functools.partial(_open, transport, factory))
        for name in names:
            await _block(live[name], warmup)
            live[name].profiler = profilers.get(name)
        gc.collect()
        blocks = await shuffled_rounds(names, rounds, seed, lambda name: _block(live[name], block))
    return Rounds(blocks, protocol)


def run_rounds(
    kind: str,
    names: Sequence[str],
    *,
    transport: str = "memory",
    block: int,
    rounds: int,
    warmup: int,
    connections: int,
    seed: int = 0,
    profilers: Mapping[str, cProfile.Profile] | None = None,
) -> Rounds:
    """Serves every variant in ``names`` side by side on one fresh event loop; times ``rounds`` rounds.

    Each variant's server (and tracer) is built and started once, in the
    order of ``names``, with its own ``connections``; each round runs one
    block of ``block`` requests per variant, in a shuffled order
    (``_harness.shuffled_rounds``). A block's clock stops once its traces
    reached the exporter (the variant's flush). ``profilers``: a cProfile
    profiler per variant, on during that variant's timed blocks only.
    """
    if kind not in KINDS or transport not in TRANSPORTS:
        raise ValueError(f"unknown kind {kind!r} or transport {transport!r}")
    return asyncio.run(
        _rounds(kind, names, transport, block, rounds, warmup, connections, seed, profilers or {})
    )
