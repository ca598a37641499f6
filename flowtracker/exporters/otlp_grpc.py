"""``OTLPGrpcExporter``: traces to any OTLP/gRPC receiver (``otlp+grpc://host:4317``).

The same request as :class:`~flowtracker.exporters.OTLPExporter` sends over
HTTP (one mapping, ``flowtracker._wire.otlp``), as a call of
``opentelemetry.proto.collector.trace.v1.TraceService/Export``. It shares
``flowtracker serve``'s gRPC dependency, the ``grpc`` extra (grpcio's
``grpc.aio``, which runs on the event loop; ``docs/serve.md`` says why).

Retries follow the OTLP specification's retryable codes (``UNAVAILABLE``,
``CANCELLED``, ``ABORTED``, ``OUT_OF_RANGE``, ``DATA_LOSS``) with exponential
backoff, done by gRPC itself from a service config, all attempts of a batch
within ``max_time``; any other code fails the batch, which the tracker counts.
Encoding runs in a worker thread.

Example:
    >>> exporter = OTLPGrpcExporter.from_url("otlp+grpc://collector:4317?compression=gzip")
    >>> exporter.target, exporter.compression
    ('collector:4317', 'gzip')
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import anyio

from .._wire.otlp import EXPORT_METHOD, otlp_request_dict
from .._wire.otlp_proto import proto, request_message
from ._config import otlp_url_options

if TYPE_CHECKING:
    from .._wire.record import Trace

#: The OTLP/gRPC default port, used when a URL names none.
DEFAULT_PORT = 4317
#: The status codes the OTLP specification calls retryable.
RETRYABLE_CODES = ("UNAVAILABLE", "CANCELLED", "ABORTED", "OUT_OF_RANGE", "DATA_LOSS")


class OTLPGrpcExporter:
    """Sends traces over OTLP/gRPC.

    Args:
        target: ``host:port`` of the receiver. Default ``localhost:4317``.
        tls: ``False`` (default) for plaintext, as ``otlp+grpc://``; ``True``
            for TLS with the system's roots, as ``otlp+grpcs://``.
        headers: Extra metadata sent with every call (say, an API key).
        compression: ``"gzip"`` or ``None`` (default).
        service: ``service.name`` for every span; default: each trace's
            ``service`` (the tracker's), else ``unknown_service``.
        max_time: Seconds all attempts of one batch may take; keep it below
            the tracker's ``export_timeout`` (30). Default 25.
        max_attempts: Attempts of one batch, the first included (gRPC allows
            at most 5). Default 5.
        backoff: The first retry delay in seconds; doubles per retry. Default 0.5.
        max_backoff: Largest delay between attempts. Default 10.

    Example:
        >>> OTLPGrpcExporter("localhost:4317", compression="gzip").compression
        'gzip'
    """

    name = "otlp-grpc"

    def __init__(
        self,
        target: str = f"localhost:{DEFAULT_PORT}",
        *,
        tls: bool = False,
        headers: Mapping[str, str] | None = None,
        compression: Literal["gzip"] | None = None,
        service: str | None = None,
        max_time: float = 25.0,
        max_attempts: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
    ) -> None:
        if compression not in (None, "gzip"):
            raise ValueError(f"compression must be 'gzip' or None, got {compression!r}")
        if not 1 <= max_attempts <= 5:
            raise ValueError(f"max_attempts must be from 1 to 5 (gRPC's limit), got {max_attempts}")
        try:
            import grpc
        except ImportError as error:
            raise ImportError("OTLP over gRPC needs grpcio: pip install 'flowtracker[grpc]'") from error
        proto()  # opentelemetry-proto: fail at configuration, not at the first export
        self._grpc = grpc
        self.target = target
        self.tls = tls
        self.compression = compression
        self.service = service
        self.max_time = max_time
        self.metadata = tuple((key.lower(), value) for key, value in (headers or {}).items())
        self._options = (
            ("grpc.enable_retries", 1),
            ("grpc.service_config", _service_config(max_attempts, backoff, max_backoff)),
        )
        self._channel: Any = None
        self._call: Any = None

    @classmethod
    def from_url(cls, url: str) -> OTLPGrpcExporter:
        """The exporter for an ``otlp+grpc://`` (plaintext) or ``otlp+grpcs://`` (TLS) URL.

        The port defaults to 4317. Query parameters: ``compression``
        (``gzip``/``none``), ``service``, ``timeout`` (``max_time``). Headers
        come from ``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` or ``OTEL_EXPORTER_OTLP_HEADERS``.

        Example:
            >>> OTLPGrpcExporter.from_url("otlp+grpcs://tempo.example").target
            'tempo.example:4317'
        """
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("otlp+grpc", "otlp+grpcs"):
            raise ValueError(f"not an OTLP/gRPC URL: {url!r} (use otlp+grpc:// or otlp+grpcs://)")
        if not parts.hostname:
            raise ValueError(f"no host in OTLP/gRPC URL {url!r}")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        options = otlp_url_options(parts.query)
        options["tls"] = scheme == "otlp+grpcs"
        if "timeout" in options:
            options["max_time"] = options.pop("timeout")  # one deadline covers every attempt
        return cls(f"{host}:{parts.port or DEFAULT_PORT}", **options)

    async def export(self, traces: Sequence[Trace]) -> None:
        dicts = [trace.to_dict() for trace in traces]
        body = await anyio.to_thread.run_sync(self.encode, dicts)
        grpc = self._grpc
        if self._call is None:  # the channel belongs to the loop it is made on: the lane's
            if self.tls:
                credentials = grpc.ssl_channel_credentials()
                self._channel = grpc.aio.secure_channel(self.target, credentials, options=self._options)
            else:
                self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
            self._call = self._channel.unary_unary(EXPORT_METHOD)
        compression = grpc.Compression.Gzip if self.compression == "gzip" else None
        try:
            await self._call(body, timeout=self.max_time, metadata=self.metadata, compression=compression)
        except grpc.aio.AioRpcError as error:
            raise RuntimeError(
                f"OTLP/gRPC export to {self.target} failed: {error.code().name} {error.details()!r}"
            ) from None

    def encode(self, traces: Sequence[Mapping[str, Any]]) -> bytes:
        """The serialized ``ExportTraceServiceRequest`` for wire-format traces."""
        return request_message(otlp_request_dict(traces, self.service)).SerializeToString()  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        channel, self._channel, self._call = self._channel, None, None
        if channel is not None:
            await channel.close()


def _service_config(max_attempts: int, backoff: float, max_backoff: float) -> str:
    """gRPC's retry policy for the Export method (gRPC retries, with its own backoff and jitter)."""
    service = EXPORT_METHOD.lstrip("/").split("/")[0]
    policy = {
        "maxAttempts": max_attempts,
        "initialBackoff": f"{backoff}s",
        "maxBackoff": f"{max_backoff}s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": list(RETRYABLE_CODES),
    }
    config: dict[str, Any] = {"methodConfig": [{"name": [{"service": service}]}]}
    if max_attempts > 1:
        config["methodConfig"][0]["retryPolicy"] = policy
    return json.dumps(config)
