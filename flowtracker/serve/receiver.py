"""OTLP in: ``POST /v1/traces`` (aiohttp) and ``TraceService/Export`` (gRPC).

Both hand the body to :class:`~flowtracker.serve.ingest.Ingest` and answer as
the OTLP specification says. Over HTTP: ``200`` with an
``ExportTraceServiceResponse`` (``partial_success`` when spans were left
out), ``400`` for a body that does not decode, ``413`` over the body or
span limit, ``415`` for another content type or content encoding, ``503``
with ``Retry-After`` while the store catches up; error bodies are a
``google.rpc.Status`` in the request's encoding. Over gRPC the same cases
are ``INVALID_ARGUMENT``, ``RESOURCE_EXHAUSTED`` and ``UNAVAILABLE``.

The gRPC side needs the ``grpc`` extra (grpcio, whose ``grpc.aio`` runs on
this event loop; ``docs/serve.md`` says why it was chosen).

Example:
    >>> content_type_of("application/json; charset=utf-8")
    'application/json'
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .._wire.otlp import EXPORT_METHOD
from .._wire.otlp_proto import JSON, PROTOBUF, BodyError, response_body, status_body
from .ingest import BodyTooLarge, Ingest, TooManySpans
from .store import StoreBusy

if TYPE_CHECKING:
    import grpc

__all__ = ("GRPCReceiver", "content_type_of", "post_traces")

_log = logging.getLogger("flowtracker.serve")

# google.rpc.Code values for the error bodies.
_INVALID_ARGUMENT, _RESOURCE_EXHAUSTED, _UNAVAILABLE = 3, 8, 14


def content_type_of(header: str) -> str:
    """The media type of a ``Content-Type`` header, lower-cased, without parameters."""
    return header.split(";", 1)[0].strip().lower()


def post_traces(ingest: Ingest) -> Any:
    """The aiohttp handler of ``POST /v1/traces``."""

    async def handler(request: web.Request) -> web.Response:
        content_type = content_type_of(request.headers.get("Content-Type", ""))
        if content_type not in (PROTOBUF, JSON):
            return _error(415, _INVALID_ARGUMENT, f"Content-Type {content_type or 'none'!r} is not "
                          f"OTLP: send {PROTOBUF} or {JSON}", JSON)  # fmt: skip
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", ""):
            return _error(415, _INVALID_ARGUMENT, f"Content-Encoding {encoding!r} is not supported (gzip is)",
                          content_type)  # fmt: skip
        body = await _read(request, ingest.max_body)
        if body is None:
            return _error(413, _RESOURCE_EXHAUSTED, f"the body is over {ingest.max_body} bytes", content_type)
        try:
            accepted = await ingest.otlp(body, content_type, gzipped=encoding == "gzip")
        except BodyError as error:
            return _error(400, _INVALID_ARGUMENT, str(error), content_type)
        except (BodyTooLarge, TooManySpans) as error:
            return _error(413, _RESOURCE_EXHAUSTED, str(error), content_type)
        except StoreBusy as error:
            response = _error(503, _UNAVAILABLE, f"busy storing: {error}; retry", content_type)
            response.headers["Retry-After"] = "1"
            return response
        return web.Response(
            body=response_body(accepted.rejected, accepted.error, content_type), content_type=content_type
        )

    return handler


async def _read(request: web.Request, limit: int) -> bytes | None:
    """The body, or ``None`` once it passes ``limit`` bytes (nothing more is buffered)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _error(status: int, code: int, message: str, content_type: str) -> web.Response:
    return web.Response(
        status=status, body=status_body(code, message, content_type), content_type=content_type
    )


def _check_free(host: str, port: int) -> None:
    """Raises ``OSError`` (``EADDRINUSE``) when something listens on ``host:port`` already."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is free
        probe.bind((host, port))


class GRPCReceiver:
    """OTLP/gRPC on ``grpc.aio``: ``TraceService/Export`` on its own port.

    Args:
        ingest: Where requests go.
        host: The address to listen on.
        port: The port (0: any free one; :attr:`port` tells which).
    """

    def __init__(self, ingest: Ingest, host: str, port: int) -> None:
        import grpc

        self.ingest = ingest
        self._grpc = grpc
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", ingest.max_body),
                ("grpc.so_reuseport", 0),  # a port in use must fail, not be shared
            ]
        )
        service, method = EXPORT_METHOD.lstrip("/").split("/")
        handler = grpc.method_handlers_generic_handler(
            service, {method: grpc.unary_unary_rpc_method_handler(self._export)}
        )
        self.server.add_generic_rpc_handlers((handler,))
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if port:
            _check_free(host, port)  # else gRPC's C core logs its own lines about it first
        try:
            self.port = self.server.add_insecure_port(address)
        except RuntimeError as error:  # grpcio: "Failed to bind to address"
            raise OSError(f"cannot listen on {address}: {error}") from None
        if not self.port:
            raise OSError(f"cannot listen on {address}")

    async def start(self) -> None:
        await self.server.start()

    async def stop(self, grace: float) -> None:
        """Stops taking calls; calls under way get ``grace`` seconds to finish."""
        await self.server.stop(grace)

    async def _export(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        codes = self._grpc.StatusCode
        try:
            accepted = await self.ingest.otlp(request, PROTOBUF)
        except BodyError as error:
            await context.abort(codes.INVALID_ARGUMENT, str(error))
        except (BodyTooLarge, TooManySpans) as error:
            await context.abort(codes.RESOURCE_EXHAUSTED, str(error))
        except StoreBusy as error:
            await context.abort(codes.UNAVAILABLE, f"busy storing: {error}; retry")
        return response_body(accepted.rejected, accepted.error, PROTOBUF)
