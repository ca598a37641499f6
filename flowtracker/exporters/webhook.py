"""``WebhookExporter``: POSTs each batch of traces as one JSON array.

One ``aiohttp.ClientSession`` is created on first export (on the tracker's
loop) and reused for every batch, so connections are kept alive; ``aclose``
closes it.

Delivery: a batch is retried with exponential backoff and full jitter on
connection errors, timeouts, 5xx and 429 (a ``Retry-After`` header, seconds or
HTTP date, is honoured), never on other 4xx or 3xx. Each batch has a total time
budget (``max_time``); past it, or after ``max_retries`` retries, ``export``
raises and the tracker counts the batch as failed (and logs it: the first
failure at once, then at most a summary a minute, and the recovery; nothing
per retry). The retry knobs are one
:class:`~flowtracker.exporters._http.RetrySettings`, shared with the OTLP
exporter. Every attempt of one batch carries the
same ``X-Flowtracker-Delivery`` id, so a receiver can drop the duplicate a
retry after a timeout may cause. The id is a digest of the JSON body, so a
batch sent again (its export was cut by the loop ending, and the lane sends it
once more before the process exits) carries the same id too.

Signature: with ``secret``, each request carries
``X-Flowtracker-Signature: sha256=<hex HMAC-SHA256 of the JSON body>``. The
HMAC covers the JSON body *before* gzip, so it verifies after the receiver's
framework has decompressed it. See ``docs/exporters.md`` for a receiver.

Example:
    >>> import flowtracker as ft
    >>> from flowtracker.exporters import WebhookExporter
    >>> hook = WebhookExporter("https://hooks.example/traces", secret="s3cret", compress=True)
    >>> tracker = ft.Tracker(exporters=[hook], service="orders")
"""

from __future__ import annotations

import hashlib
import hmac
import os
import ssl
from collections.abc import Mapping, Sequence

from .._wire.batch import BatchFailures
from .._wire.record import Trace
from ._http import DeliveryError as DeliveryError
from ._http import HTTPSender, RetrySettings, gzip_body

#: The signature header (value ``sha256=<hex>``).
SIGNATURE_HEADER = "X-Flowtracker-Signature"
#: One id per batch, the same on every retry of it.
DELIVERY_HEADER = "X-Flowtracker-Delivery"
#: Environment variable :meth:`WebhookExporter.from_url` reads the secret from.
SECRET_ENV_VAR = "FLOWTRACKER_WEBHOOK_SECRET"


def sign(secret: str | bytes, body: bytes) -> str:
    """The signature header value for ``body``: ``sha256=<hex HMAC-SHA256>``.

    Example:
        >>> sign("s3cret", b"[]")
        'sha256=920fbe8da6e51cf8315bd3ce5b63be1439ac418df0cd2abbf6e304e43b71eff9'
    """
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify(secret: str | bytes, body: bytes, header: str | None) -> bool:
    """True when ``header`` is the signature of ``body`` (constant-time compare).

    Example:
        >>> verify("s3cret", b"[]", sign("s3cret", b"[]"))
        True
    """
    return header is not None and hmac.compare_digest(sign(secret, body), header)


class WebhookExporter:
    """POSTs every batch of traces, as a JSON array, to ``url``.

    Args:
        url: An ``http://`` or ``https://`` URL.
        headers: Extra request headers (say, ``Authorization``).
        timeout: Seconds one attempt may take. Default 10.
        max_retries, max_time, backoff, max_backoff: How a batch is retried
            (5 retries within 25 s, delays drawn below 0.5 s doubling up to
            10 s); see :class:`~flowtracker.exporters._http.RetrySettings`.
            5xx and 429 are retried. The settings in force are ``.retry``.
        secret: Signs each body with HMAC-SHA256 (see the module docstring).
        compress: gzip the body (``Content-Encoding: gzip``). Default False.
        tls: Certificate verification: ``True`` (default), an
            ``ssl.SSLContext``, or ``False`` (no verification; tests only).

    Example:
        >>> from flowtracker.exporters import WebhookExporter
        >>> WebhookExporter("https://hooks.example/x", headers={"Authorization": "Bearer t"}).url
        'https://hooks.example/x'
    """

    name = "webhook"

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        max_retries: int = 5,
        max_time: float = 25.0,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        secret: str | bytes | None = None,
        compress: bool = False,
        tls: bool | ssl.SSLContext = True,
    ) -> None:
        self.url = url
        self.secret = secret
        self.compress = compress
        self.retry = RetrySettings(max_retries, max_time, backoff, max_backoff)
        self._sender = HTTPSender(url, headers=headers, timeout=timeout, retry=self.retry, tls=tls)

    @classmethod
    def from_url(cls, url: str) -> WebhookExporter:
        """The exporter for ``url``; the secret, if any, from ``FLOWTRACKER_WEBHOOK_SECRET``.

        Example:
            >>> WebhookExporter.from_url("https://hooks.example/x").url
            'https://hooks.example/x'
        """
        return cls(url, secret=os.environ.get(SECRET_ENV_VAR) or None)

    @property
    def attempts(self) -> int:
        """POST attempts so far, retries included."""
        return self._sender.attempts

    async def export(self, traces: Sequence[Trace]) -> None:
        failures = BatchFailures(len(traces))
        items = failures.each(traces, Trace.to_json)
        if items:
            body = b"[" + b",".join(items) + b"]"
            # The body's digest, not a random id: the same batch sent again is recognised.
            delivery = hashlib.blake2b(body, digest_size=16).hexdigest()
            headers = {"Content-Type": "application/json", DELIVERY_HEADER: delivery}
            if self.secret is not None:
                headers[SIGNATURE_HEADER] = sign(self.secret, body)
            if self.compress:
                body = await gzip_body(body)
                headers["Content-Encoding"] = "gzip"
            await self._sender.post(body, headers)
        failures.raise_if_any()

    async def aclose(self) -> None:
        await self._sender.aclose()
