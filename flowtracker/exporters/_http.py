"""What the HTTP exporters share: the retry settings, and the sender that follows them.

:class:`RetrySettings` says how one batch is retried: how often, within how
much time, how far apart, and on which HTTP answers. The webhook and OTLP
exporters build one from their keyword arguments (same names, same
defaults) and differ only in the statuses they retry; the Kafka exporter
draws its delays from one too. :class:`HTTPSender` POSTs a body to one URL
following such settings, over one kept-alive aiohttp session.

Example:
    >>> RetrySettings().retries(503), RetrySettings().retries(400)
    (True, False)
    >>> OTLP_RETRY_STATUSES == {429, 502, 503, 504}
    True
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import random
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

#: Statuses the webhook exporter retries: every 5xx, and 429 (Too Many Requests).
WEBHOOK_RETRY_STATUSES = frozenset({429, *range(500, 600)})
#: Statuses the OTLP exporter specification says to retry.
OTLP_RETRY_STATUSES = frozenset({429, 502, 503, 504})

# Bodies larger than this are gzipped in a worker thread, off the event loop.
_THREAD_COMPRESS_BYTES = 256 * 1024


@dataclass(frozen=True)
class RetrySettings:
    """How one batch is retried. The defaults are the webhook's and OTLP's.

    Connection errors and timeouts are always retried; TLS failures and
    statuses outside ``retry_statuses`` never are. A ``Retry-After`` header
    (seconds or an HTTP date) replaces the drawn delay.

    Attributes:
        max_retries: Retries after the first attempt; ``None``: as many as
            ``max_time`` allows. Default 5.
        max_time: Seconds all attempts of one batch may take together; keep
            it below the tracker's ``export_timeout`` (30). Default 25.
        backoff: Upper bound of the first retry's delay in seconds; it
            doubles on each retry, and the delay is drawn uniformly below it
            (full jitter). Default 0.5.
        max_backoff: Largest delay between two attempts. Default 10.
        retry_statuses: HTTP statuses worth another try. Default
            :data:`WEBHOOK_RETRY_STATUSES` (5xx and 429); the OTLP exporter
            uses :data:`OTLP_RETRY_STATUSES` (429, 502, 503, 504).

    Example:
        >>> settings = RetrySettings(backoff=0.1, max_backoff=1.0)
        >>> 0 <= settings.delay(1) <= 0.1 and 0 <= settings.delay(10) <= 1.0
        True
    """

    max_retries: int | None = 5
    max_time: float = 25.0
    backoff: float = 0.5
    max_backoff: float = 10.0
    retry_statuses: frozenset[int] = WEBHOOK_RETRY_STATUSES

    def __post_init__(self) -> None:
        if self.max_retries is not None and self.max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {self.max_retries}")
        if not self.max_time > 0:
            raise ValueError(f"max_time must be more than 0 seconds, got {self.max_time}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError(
                f"backoff and max_backoff must be 0 or more, got {self.backoff} and {self.max_backoff}"
            )

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        return random.uniform(0, min(self.max_backoff, self.backoff * 2 ** (retry - 1)))

    def retries(self, status: int) -> bool:
        """Whether an answer with ``status`` is worth another try."""
        return status in self.retry_statuses

    def gives_up_after(self, attempts: int) -> bool:
        """Whether ``attempts`` attempts used up ``max_retries``."""
        return self.max_retries is not None and attempts > self.max_retries


class DeliveryError(Exception):
    """A batch could not be delivered (the tracker counts it as failed)."""


class HTTPSender:
    """POSTs bodies to one URL, retrying as ``retry`` says; shared by the webhook and OTLP exporters.

    Args:
        url: Where to POST.
        headers: Sent with every request.
        timeout: Seconds one attempt may take.
        retry: How a body is retried.
        tls: ``True`` verifies certificates; an ``ssl.SSLContext`` for your own CA
            or client certificates; ``False`` turns verification off (tests only).
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None,
        timeout: float,
        retry: RetrySettings,
        tls: bool | ssl.SSLContext,
    ) -> None:
        self.url = url
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.retry = retry
        self.tls = tls
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
        retry = self.retry
        session = self._get_session()
        deadline = time.monotonic() + retry.max_time
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
                    if not retry.retries(status):
                        raise DeliveryError(f"POST {self.url} {problem} (not retried)")
                    retry_after = _retry_after(response.headers.get("Retry-After"))
            except aiohttp.ClientSSLError as error:  # a certificate will not fix itself
                raise DeliveryError(f"POST {self.url}: TLS failed: {error}") from error
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                problem = f"failed: {error!r}"
            if retry.gives_up_after(attempt):
                raise DeliveryError(f"POST {self.url} {problem}; gave up after {attempt} attempts")
            delay = retry_after if retry_after is not None else retry.delay(attempt)
            if time.monotonic() + delay >= deadline:
                raise DeliveryError(
                    f"POST {self.url} {problem}; next try in {delay:.1f}s would pass max_time"
                    f" ({retry.max_time}s) after {attempt} attempts"
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
    # The loop's default executor: at interpreter exit it is the tracker's
    # prestarted pool, when no new thread may start.
    return await asyncio.get_running_loop().run_in_executor(None, gzip.compress, body, 6)
