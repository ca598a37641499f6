"""``WebhookExporter``: POSTs each batch of traces as one JSON array.

One ``aiohttp.ClientSession`` is created on first export (on the tracker's
loop) and reused for every batch, so connections are kept alive; ``aclose``
closes it.

Delivery: a batch is retried with exponential backoff and full jitter on
connection errors, timeouts, 5xx and 429 (a ``Retry-After`` header, seconds or
HTTP date, is honoured), never on other 4xx or 3xx. Each batch has a total time
budget (``max_time``); past it, or after ``max_retries`` retries, ``export``
raises and the tracker counts the batch as failed (and logs it, at most once a
minute: nothing is logged per retry). Every attempt of one batch carries the
same ``X-Flowtracker-Delivery`` id, so a receiver can drop the duplicate a
retry after a timeout may cause.

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

import asyncio
import email.utils
import gzip
import hashlib
import hmac
import os
import random
import ssl
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import aiohttp
import anyio

if TYPE_CHECKING:
    from .._wire.record import Trace

#: The signature header (value ``sha256=<hex>``).
SIGNATURE_HEADER = "X-Flowtracker-Signature"
#: One id per batch, the same on every retry of it.
DELIVERY_HEADER = "X-Flowtracker-Delivery"
#: Environment variable :meth:`WebhookExporter.from_url` reads the secret from.
SECRET_ENV_VAR = "FLOWTRACKER_WEBHOOK_SECRET"

# Bodies larger than this are gzipped in a worker thread, off the event loop.
_THREAD_COMPRESS_BYTES = 256 * 1024


class DeliveryError(Exception):
    """A batch could not be delivered (the tracker counts it as failed)."""


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


def retryable_webhook_status(status: int) -> bool:
    """5xx and 429 are worth another try; any other 4xx (or 3xx) is not."""
    return status >= 500 or status == 429


class HTTPSender:
    """POSTs bodies to one URL with retries; shared by the webhook and OTLP exporters.

    Args:
        url: Where to POST.
        headers: Sent with every request.
        timeout: Seconds one attempt may take.
        max_retries: Retries after the first attempt.
        max_time: Seconds for all attempts of one body together.
        backoff: First retry delay bound in seconds; doubles per retry (full jitter).
        max_backoff: Largest delay between attempts.
        tls: ``True`` verifies certificates; an ``ssl.SSLContext`` for your own CA
            or client certificates; ``False`` turns verification off (tests only).
        retryable: Which HTTP statuses to retry.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None,
        timeout: float,
        max_retries: int,
        max_time: float,
        backoff: float,
        max_backoff: float,
        tls: bool | ssl.SSLContext,
        retryable: Callable[[int], bool],
    ) -> None:
        self.url = url
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_time = max_time
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.tls = tls
        self.retryable = retryable
        self.attempts = 0  # every POST attempted, for tests and curiosity
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            from .._core.version import package_version

            headers = {"User-Agent": f"flowtracker/{package_version()}", **self.headers}
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.tls), headers=headers, raise_for_status=False
            )
            self._session = session
        return session

    async def post(self, body: bytes, headers: Mapping[str, str]) -> None:
        """POSTs ``body``, retrying as configured.

        Raises:
            DeliveryError: not delivered within the retries and time budget.
        """
        session = self._get_session()
        deadline = time.monotonic() + self.max_time
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeliveryError(f"POST {self.url}: no time left after {attempt - 1} attempts")
            retry_after: float | None = None
            self.attempts += 1
            try:
                async with session.post(
                    self.url,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=min(self.timeout, remaining)),
                ) as response:
                    status = response.status
                    text = (await response.read())[:200].decode("utf-8", "replace")
                    if 200 <= status < 300:
                        return
                    problem = f"answered {status} {text!r}"
                    if not self.retryable(status):
                        raise DeliveryError(f"POST {self.url} {problem} (not retried)")
                    retry_after = _retry_after(response.headers.get("Retry-After"))
            except aiohttp.ClientSSLError as error:  # a certificate will not fix itself
                raise DeliveryError(f"POST {self.url}: TLS failed: {error}") from error
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                problem = f"failed: {error!r}"
            if attempt > self.max_retries:
                raise DeliveryError(f"POST {self.url} {problem}; gave up after {attempt} attempts")
            cap = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
            delay = retry_after if retry_after is not None else random.uniform(0, cap)
            if time.monotonic() + delay >= deadline:
                raise DeliveryError(
                    f"POST {self.url} {problem}; next try in {delay:.1f}s would pass max_time"
                    f" ({self.max_time}s) after {attempt} attempts"
                )
            await asyncio.sleep(delay)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


async def gzip_body(body: bytes) -> bytes:
    """gzip, in a worker thread for large bodies so the loop keeps running."""
    if len(body) < _THREAD_COMPRESS_BYTES:
        return gzip.compress(body, compresslevel=6)
    return await anyio.to_thread.run_sync(gzip.compress, body, 6)


class WebhookExporter:
    """POSTs every batch of traces, as a JSON array, to ``url``.

    Args:
        url: An ``http://`` or ``https://`` URL.
        headers: Extra request headers (say, ``Authorization``).
        timeout: Seconds one attempt may take. Default 10.
        max_retries: Retries of one batch after the first attempt. Default 5.
        max_time: Seconds all attempts of one batch may take together; keep it
            below the tracker's ``export_timeout`` (30). Default 25.
        backoff: Upper bound of the first retry delay; doubles on each retry,
            the actual delay drawn uniformly below it (full jitter). Default 0.5.
        max_backoff: Largest delay between two attempts. Default 10.
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
        self._sender = HTTPSender(
            url,
            headers=headers,
            timeout=timeout,
            max_retries=max_retries,
            max_time=max_time,
            backoff=backoff,
            max_backoff=max_backoff,
            tls=tls,
            retryable=retryable_webhook_status,
        )

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
        body = b"[" + b",".join(trace.to_json() for trace in traces) + b"]"
        headers = {"Content-Type": "application/json", DELIVERY_HEADER: uuid.uuid4().hex}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        if self.compress:
            body = await gzip_body(body)
            headers["Content-Encoding"] = "gzip"
        await self._sender.post(body, headers)

    async def aclose(self) -> None:
        await self._sender.aclose()
