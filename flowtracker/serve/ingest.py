"""From request bodies and files to stored spans: what OTLP/HTTP, OTLP/gRPC and ``FILE``s share.

Decoding runs on two worker threads, never on the event loop: a 32 MiB body
holds hundreds of thousands of spans, and the page and the live feed must
keep answering meanwhile. Every limit answers with its own error, which the
receivers turn into their protocol's status:

==================  =======================================  ====  ====================
error               when                                     HTTP  gRPC
==================  =======================================  ====  ====================
``BodyError``       the body does not decode (bad gzip too)  400   INVALID_ARGUMENT
``BodyTooLarge``    over ``max_body`` (after gzip, too)      413   RESOURCE_EXHAUSTED
``TooManySpans``    over ``max_spans`` in one request        413   RESOURCE_EXHAUSTED
``StoreBusy``       the writer is too far behind             503   UNAVAILABLE
==================  =======================================  ====  ====================

A span with malformed ids is left out and counted in OTLP's ``partial_success``;
the rest of its request is stored.

Example:
    >>> gunzip(b"plain", max_body=10)
    Traceback (most recent call last):
    ...
    flowtracker._wire.otlp_proto.BodyError: the gzip body does not decompress: ...
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import zlib
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from .._wire.otlp import span_records
from .._wire.otlp_proto import BodyError, parse_request
from .rows import POLICY, Row, bounded, rows_of
from .store import Store

__all__ = (
    "DEFAULT_MAX_BODY",
    "DEFAULT_MAX_SPANS",
    "Accepted",
    "BodyTooLarge",
    "Ingest",
    "TooManySpans",
    "gunzip",
)

#: Largest request body, before and after gzip: 32 MiB, as the OpenTelemetry Collector's default.
DEFAULT_MAX_BODY = 32 * 1024 * 1024
#: Most spans in one request (the SDKs send at most 512 by default, the Collector 8192).
DEFAULT_MAX_SPANS = 100_000


class BodyTooLarge(Exception):
    """A body over the limit."""


class TooManySpans(Exception):
    """A request with more spans than the limit."""


class Accepted(NamedTuple):
    """What one request brought: spans stored, spans rejected, and why the first was."""

    stored: int
    rejected: int
    error: str


class Ingest:
    """Decodes and stores OTLP requests and wire-format traces.

    Args:
        store: Where spans go.
        max_body: Largest body in bytes, compressed or not. Default 32 MiB.
        max_spans: Most spans per request. Default 100,000.
    """

    def __init__(
        self, store: Store, *, max_body: int = DEFAULT_MAX_BODY, max_spans: int = DEFAULT_MAX_SPANS
    ) -> None:
        self.store = store
        self.max_body = max_body
        self.max_spans = max_spans
        self._decoders = concurrent.futures.ThreadPoolExecutor(
            2, thread_name_prefix="flowtracker-serve-decode"
        )

    def close(self) -> None:
        self._decoders.shutdown(wait=True)

    async def otlp(self, body: bytes, content_type: str, *, gzipped: bool = False) -> Accepted:
        """Decodes and stores one OTLP request; returns once its spans are committed.

        Raises:
            BodyError, BodyTooLarge, TooManySpans, StoreBusy: see the module docstring.
        """
        loop = asyncio.get_running_loop()
        rows, rejected, error = await loop.run_in_executor(
            self._decoders, self._decode, body, content_type, gzipped
        )
        await self.store.write(rows)
        return Accepted(len(rows), rejected, error)

    def _decode(self, body: bytes, content_type: str, gzipped: bool) -> tuple[list[Row], int, str]:
        if gzipped:
            body = gunzip(body, self.max_body)
        message = parse_request(body, content_type)
        count = sum(len(scope.spans) for resource in message.resource_spans for scope in resource.scope_spans)
        if count > self.max_spans:
            raise TooManySpans(f"{count} spans in one request; at most {self.max_spans} are taken")
        decoded = span_records(message, POLICY)
        return bounded(decoded.records), decoded.rejected, decoded.error

    async def traces(self, traces: Iterable[Mapping[str, Any]]) -> Accepted:
        """Stores wire-format traces (``FILE``s given on the command line)."""
        loop = asyncio.get_running_loop()
        rows, bad = await loop.run_in_executor(self._decoders, rows_of, list(traces))
        for start in range(0, len(rows), 10_000):
            await self.store.write(rows[start : start + 10_000])
        return Accepted(len(rows), bad, "")


def gunzip(body: bytes, max_body: int) -> bytes:
    """The decompressed body, at most ``max_body`` bytes of it.

    Raises:
        BodyError: not gzip, or cut short.
        BodyTooLarge: it decompresses to more than ``max_body``.
    """
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(body, max_body)
        if decompressor.unconsumed_tail:
            raise BodyTooLarge(f"the body decompresses to more than {max_body} bytes")
        out += decompressor.flush()
    except zlib.error as error:
        raise BodyError(f"the gzip body does not decompress: {error}") from None
    if not decompressor.eof:
        raise BodyError("the gzip body does not decompress: it ends early")
    if len(out) > max_body:
        raise BodyTooLarge(f"the body decompresses to more than {max_body} bytes")
    return out
