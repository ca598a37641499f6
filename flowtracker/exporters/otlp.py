"""``OTLPExporter``: traces to any OTLP/HTTP receiver (Jaeger, Tempo, the Collector).

The heir of the Go library's OTel add-on. Each batch becomes one
``ExportTraceServiceRequest`` (the mapping is ``flowtracker._wire.otlp``) POSTed to
``/v1/traces``: protobuf by default (``application/x-protobuf``, what every
OTLP/HTTP receiver accepts; needs the ``otlp`` extra, ``opentelemetry-proto``)
or OTLP/JSON (``application/json``, no extra dependency). Optional gzip.

Retries follow the OTLP specification: 429, 502, 503 and 504 (and connection
errors and timeouts) are retried with exponential backoff and jitter,
``Retry-After`` honoured, within ``max_time`` per batch
(:class:`~flowtracker.exporters._http.RetrySettings`); any other status fails
the batch, which the tracker counts. Encoding runs in a worker thread, so a
large batch never stalls the event loop, one trace at a time: a trace that
cannot be converted is left out and counted, and the rest of its batch goes.

Example:
    >>> import flowtracker as ft
    >>> from flowtracker.exporters import OTLPExporter
    >>> jaeger = OTLPExporter("http://localhost:4318/v1/traces")
    >>> tempo = OTLPExporter.from_url("otlp+https://tempo.example:4318?compression=gzip")
    >>> tempo.endpoint
    'https://tempo.example:4318/v1/traces'
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import orjson

from .._wire.batch import BatchFailures
from .._wire.otlp import otlp_request, otlp_request_dict, otlp_trace_spans
from .._wire.otlp_proto import proto, request_message, span_message
from .._wire.record import Trace
from ._config import otlp_url_options
from ._http import OTLP_RETRY_STATUSES, HTTPSender, RetrySettings, gzip_body

#: Where an OTLP/HTTP receiver listens for traces by default.
DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"
#: The OTLP/HTTP default port, used when a URL names none.
DEFAULT_PORT = 4318
TRACES_PATH = "/v1/traces"


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
        max_retries, max_time, backoff, max_backoff: How a batch is retried
            (5 retries within 25 s, delays drawn below 0.5 s doubling up to
            10 s); see :class:`~flowtracker.exporters._http.RetrySettings`.
            429, 502, 503 and 504 are retried. The settings in force are ``.retry``.
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
        self.retry = RetrySettings(max_retries, max_time, backoff, max_backoff, OTLP_RETRY_STATUSES)
        self._sender = HTTPSender(endpoint, headers=headers, timeout=timeout, retry=self.retry, tls=tls)

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
        failures = BatchFailures(len(traces))
        dicts = failures.each(traces, Trace.to_dict)
        if dicts:
            # The loop's default executor: at interpreter exit it is the
            # tracker's prestarted pool, when no new thread may start.
            loop = asyncio.get_running_loop()
            body = await loop.run_in_executor(None, self._body, dicts, failures)
            if body is not None:
                headers = {"Content-Type": self.content_type}
                if self.compression == "gzip":
                    body = await gzip_body(body)
                    headers["Content-Encoding"] = "gzip"
                await self._sender.post(body, headers)
        failures.raise_if_any()

    def encode(self, traces: Sequence[Mapping[str, Any]]) -> bytes:
        """The request body for wire-format traces, in this exporter's encoding."""
        request = otlp_request_dict(traces, self.service)
        if self.encoding == "json":
            return orjson.dumps(request)
        return request_message(request).SerializeToString()  # type: ignore[no-any-return]

    def _body(self, traces: Sequence[Mapping[str, Any]], failures: BatchFailures) -> bytes | None:
        """The request body; ``None`` when no trace could be converted (each is counted in ``failures``)."""
        try:
            return self.encode(traces)  # the common case: the whole batch in one go
        except Exception:  # a trace cannot be converted: go trace by trace to find it
            pass
        convert: Callable[[Mapping[str, Any]], tuple[str, list[Any]]]
        if self.encoding == "json":
            convert = functools.partial(otlp_trace_spans, service=self.service)
        else:
            convert = self._protobuf_spans
        by_service: dict[str, list[Any]] = {}
        for service, spans in failures.each(traces, convert):
            by_service.setdefault(service, []).extend(spans)
        if not by_service:
            return None
        request = otlp_request(by_service)
        if self.encoding == "json":
            return orjson.dumps(request)
        return request_message(request, converted=True).SerializeToString()  # type: ignore[no-any-return]

    def _protobuf_spans(self, trace: Mapping[str, Any]) -> tuple[str, list[Any]]:
        service, spans = otlp_trace_spans(trace, self.service)
        return service, [span_message(item) for item in spans]

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

