"""``OTLPExporter``: traces to any OTLP/HTTP receiver (Jaeger, Tempo, the Collector).

The heir of the Go library's OTel add-on. Each batch becomes one
``ExportTraceServiceRequest`` (the mapping is ``flowtracker._wire.otlp``) POSTed to
``/v1/traces``: protobuf by default (``application/x-protobuf``, what every
OTLP/HTTP receiver accepts; needs the ``otlp`` extra, ``opentelemetry-proto``)
or OTLP/JSON (``application/json``, no extra dependency). Optional gzip.

Retries follow the OTLP specification: 429, 502, 503 and 504 (and connection
errors and timeouts) are retried with exponential backoff and jitter,
``Retry-After`` honoured, within ``max_time`` per batch; any other status fails
the batch, which the tracker counts. Encoding runs in a worker thread, so a
large batch never stalls the event loop.

Example:
    >>> import flowtracker as ft
    >>> from flowtracker.exporters import OTLPExporter
    >>> jaeger = OTLPExporter("http://localhost:4318/v1/traces")
    >>> tempo = OTLPExporter.from_url("otlp+https://tempo.example:4318?compression=gzip")
    >>> tempo.endpoint
    'https://tempo.example:4318/v1/traces'
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import anyio
import orjson

from .._wire.otlp import otlp_request_dict
from .._wire.otlp_proto import proto, request_message
from ._config import otlp_url_options
from .webhook import HTTPSender, gzip_body

if TYPE_CHECKING:
    from .._wire.record import Trace

#: Where an OTLP/HTTP receiver listens for traces by default.
DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"
#: The OTLP/HTTP default port, used when a URL names none.
DEFAULT_PORT = 4318
TRACES_PATH = "/v1/traces"

# The OTLP exporter specification's retryable statuses.
_RETRYABLE = frozenset({429, 502, 503, 504})


class OTLPExporter:
    """Sends traces over OTLP/HTTP.

    Args:
        endpoint: The full traces URL. Default ``http://localhost:4318/v1/traces``.
        headers: Extra request headers (say, an API key).
        encoding: ``"protobuf"`` (default; needs ``opentelemetry-proto``) or ``"json"``.
        compression: ``"gzip"`` or ``None`` (default).
        service: ``service.name`` for every span; default: each trace's
            ``service`` (the tracker's), else ``unknown_service``.
        timeout: Seconds one attempt may take. Default 10.
        max_retries: Retries of one batch after the first attempt. Default 5.
        max_time: Seconds all attempts of one batch may take; keep it below the
            tracker's ``export_timeout`` (30). Default 25.
        backoff: Upper bound of the first retry delay, doubling per retry. Default 0.5.
        max_backoff: Largest delay between attempts. Default 10.
        tls: ``True`` verifies certificates (default), or an ``ssl.SSLContext``,
            or ``False`` (tests only).

    Example:
        >>> OTLPExporter(encoding="json", compression="gzip").content_type
        'application/json'
    """

    name = "otlp"

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        headers: Mapping[str, str] | None = None,
        encoding: Literal["protobuf", "json"] = "protobuf",
        compression: Literal["gzip"] | None = None,
        service: str | None = None,
        timeout: float = 10.0,
        max_retries: int = 5,
        max_time: float = 25.0,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        tls: bool | ssl.SSLContext = True,
    ) -> None:
        if encoding not in ("protobuf", "json"):
            raise ValueError(f"encoding must be 'protobuf' or 'json', got {encoding!r}")
        if compression not in (None, "gzip"):
            raise ValueError(f"compression must be 'gzip' or None, got {compression!r}")
        if encoding == "protobuf":
            _require_proto()  # fail at configuration, not at the first export
        self.endpoint = endpoint
        self.encoding = encoding
        self.compression = compression
        self.service = service
        self.content_type = "application/x-protobuf" if encoding == "protobuf" else "application/json"
        self._sender = HTTPSender(
            endpoint,
            headers=headers,
            timeout=timeout,
            max_retries=max_retries,
            max_time=max_time,
            backoff=backoff,
            max_backoff=max_backoff,
            tls=tls,
            retryable=_RETRYABLE.__contains__,
        )

    @classmethod
    def from_url(cls, url: str) -> OTLPExporter:
        """The exporter for an ``otlp://``, ``otlp+http://`` or ``otlp+https://`` URL.

        ``otlp://`` means plain HTTP. The port defaults to 4318 and the path to
        ``/v1/traces``. Query parameters: ``encoding`` (``protobuf``/``json``),
        ``compression`` (``gzip``/``none``), ``service``, ``timeout``. Headers
        come from ``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` or
        ``OTEL_EXPORTER_OTLP_HEADERS`` (``key=value,key2=value2``), as in the
        OpenTelemetry SDKs.

        Example:
            >>> OTLPExporter.from_url("otlp://collector?encoding=json").endpoint
            'http://collector:4318/v1/traces'
        """
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("otlp", "otlp+http", "otlp+https"):
            raise ValueError(f"not an OTLP URL: {url!r} (use otlp://, otlp+http:// or otlp+https://)")
        if not parts.hostname:
            raise ValueError(f"no host in OTLP URL {url!r}")
        http = "https" if scheme == "otlp+https" else "http"
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        netloc = f"{host}:{parts.port or DEFAULT_PORT}"
        if parts.username:
            netloc = f"{parts.username}:{parts.password or ''}@{netloc}"
        endpoint = urlunsplit(
            (http, netloc, parts.path if parts.path not in ("", "/") else TRACES_PATH, "", "")
        )
        options = otlp_url_options(parts.query)
        return cls(endpoint, **options)

    @property
    def attempts(self) -> int:
        """POST attempts so far, retries included."""
        return self._sender.attempts

    async def export(self, traces: Sequence[Trace]) -> None:
        dicts = [trace.to_dict() for trace in traces]
        body = await anyio.to_thread.run_sync(self.encode, dicts)
        headers = {"Content-Type": self.content_type}
        if self.compression == "gzip":
            body = await gzip_body(body)
            headers["Content-Encoding"] = "gzip"
        await self._sender.post(body, headers)

    def encode(self, traces: Sequence[Mapping[str, Any]]) -> bytes:
        """The request body for wire-format traces, in this exporter's encoding."""
        request = otlp_request_dict(traces, self.service)
        if self.encoding == "json":
            return orjson.dumps(request)
        return request_message(request).SerializeToString()  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        await self._sender.aclose()


def _require_proto() -> None:
    try:
        proto()
    except ImportError as error:
        raise ImportError(
            "OTLP protobuf encoding needs opentelemetry-proto: pip install 'flowtracker[otlp]',"
            " or use encoding='json'"
        ) from error
